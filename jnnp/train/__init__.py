"""Training of HDNNPs: batching, normalisation, losses, optimisers (optax, Kalman), loop.

Typical use::

    from jnnp.train import TrainSettings, fit, make_split
    split = make_split(data, validation=0.1, test=0.1, seed=0)
    train, val, test = split.apply(data)
    best, history = fit(potential, train, val, TrainSettings(epochs=200), "runs/x", split=split.to_dict())
"""

from jnnp.train.batch import (Batch, Batcher, BatchSizer, build_graphs, collate, make_batch_energy_fn,
                              make_batch_properties_fn)
from jnnp.train.checkpoint import (load_checkpoint, load_potential, save_checkpoint, save_model,
                                   spec_from_dict, spec_to_dict)
from jnnp.train.kalman import KalmanState, kalman_filter, kalman_update, make_kalman_train_step
from jnnp.train.loop import History, TrainSettings, evaluate, fit
from jnnp.train.loss import LossConfig, combine_terms, loss_terms, make_loss_fn
from jnnp.train.metrics import ErrorAccumulator, plot_learning_curve, plot_parity
from jnnp.train.normalize import descriptor_statistics, energy_scale, normalize_potential
from jnnp.train.optim import make_optimizer, make_schedule
from jnnp.train.reference import composition_matrix, fit_reference_energies
from jnnp.train.splits import Split, make_split, per_system_split, random_split, split_from_files
from jnnp.train.step import (TrainState, init_train_state, make_eval_step, make_train_step, predict,
                             trainable_params)

__all__ = ["Batch", "Batcher", "BatchSizer", "build_graphs", "collate", "make_batch_energy_fn",
           "make_batch_properties_fn", "load_checkpoint", "load_potential", "save_checkpoint", "save_model",
           "spec_from_dict", "spec_to_dict", "KalmanState", "kalman_filter", "kalman_update",
           "make_kalman_train_step", "History", "TrainSettings", "evaluate", "fit", "LossConfig",
           "combine_terms", "loss_terms", "make_loss_fn", "ErrorAccumulator", "plot_learning_curve",
           "plot_parity", "composition_matrix", "descriptor_statistics", "energy_scale", "fit_reference_energies",
           "normalize_potential", "make_optimizer", "make_schedule", "Split", "make_split",
           "per_system_split", "random_split", "split_from_files", "TrainState", "init_train_state",
           "make_eval_step", "make_train_step", "predict", "trainable_params"]
