"""Train and evaluation steps: pure functions of (state, batch), jitted once per batch shape.

Only the *trainable* part of the potential's parameters is optimised: the element networks and
the descriptor fields made trainable in the spec (``params["networks"]``,
``params["descriptor"]``). Scaling statistics and the energy scale/shifts are data-derived
constants (`jnnp.train.normalize`).

Non-finite guard: when the loss or the gradient norm of a batch is NaN/inf the step returns the
state unchanged and ``metrics["finite"] = False``; the training loop stops on it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jnnp.train.batch import make_batch_properties_fn
from jnnp.train.loss import LossConfig, combine_terms, loss_terms, make_loss_fn
from jnnp.train.optim import ema_params

__all__ = ["TrainState", "trainable_params", "merge_trainable", "init_train_state", "make_train_step",
           "evaluation_params", "make_eval_step", "cached_eval_step", "cached_properties_fn", "predict",
           "tree_all_finite", "select_finite"]


@struct.dataclass
class TrainState:
    """``step`` () int32 number of updates done, ``params`` the full potential parameters,
    ``opt_state`` the optimiser state of `trainable_params` (``params``)."""

    step: Any
    params: dict
    opt_state: Any


def trainable_params(params: dict) -> dict:
    """The optimised subtree ``{"networks": ..., "descriptor": ...}`` of potential parameters."""
    return {"networks": params["networks"], "descriptor": params["descriptor"]}


def merge_trainable(params: dict, trainable: dict) -> dict:
    """``params`` with its trainable subtree replaced."""
    out = dict(params)
    out.update(trainable)
    return out


def init_train_state(params: dict, optimizer) -> TrainState:
    """A fresh `TrainState` (step 0) with ``optimizer.init`` on the trainable parameters."""
    params = jax.tree.map(jnp.asarray, params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(trainable_params(params)))


def evaluation_params(state: TrainState) -> dict:
    """The parameters to validate and keep: with an optimiser that averages the weights
    (`jnnp.train.optim.params_ema`) the averaged trainable subtree, else ``state.params``."""
    ema = ema_params(state.opt_state)
    return state.params if ema is None else merge_trainable(state.params, ema)


def tree_all_finite(tree):
    """() bool: every floating-point leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def select_finite(ok, new, old):
    """``new`` where ``ok`` else ``old`` (leafwise, jittable)."""
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _metrics(loss, terms, ok, grad_norm=None):
    out = {"loss": loss, "finite": ok, **terms}
    if grad_norm is not None:
        out["grad_norm"] = grad_norm
    return out


def make_train_step(spec, optimizer, loss_cfg: LossConfig = LossConfig(), *, jit: bool = True,
                    properties_fn=None, linesearch: bool = False):
    """``train_step(state, batch) -> (state, metrics)`` for a gradient optimiser (optax).

    The loss (`jnnp.train.loss`) is passed to ``optimizer.update`` as ``value=`` (used by
    reduce-on-plateau). ``metrics``: ``loss``, ``finite``, ``grad_norm``, ``energy_mse``,
    ``force_mse``, ... (the loss *before* the update). Jitted by default (one compilation per
    batch shape). ``properties_fn``: see `jnnp.train.loss.make_loss_fn`. ``linesearch``: the
    optimiser evaluates trial steps (`jnnp.train.optim.make_lbfgs`): ``update`` also gets
    ``grad=`` and ``value_fn=`` (the loss of this batch as a function of the trainable parameters).
    """
    loss_fn = make_loss_fn(spec, loss_cfg, properties_fn=properties_fn)
    extra = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def train_step(state: TrainState, batch):
        trainable = trainable_params(state.params)

        def f(tr):
            return loss_fn(merge_trainable(state.params, tr), batch)

        (loss, (terms, _)), grads = jax.value_and_grad(f, has_aux=True)(trainable)
        if linesearch:
            updates, opt_state = optimizer.update(grads, state.opt_state, trainable, value=loss, grad=grads,
                                                  value_fn=lambda tr: f(tr)[0])
        elif extra:
            updates, opt_state = optimizer.update(grads, state.opt_state, trainable, value=loss)
        else:
            updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        new = TrainState(step=state.step + 1,
                         params=merge_trainable(state.params, optax.apply_updates(trainable, updates)),
                         opt_state=opt_state)
        gnorm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(gnorm) & tree_all_finite(new.params)
        return select_finite(ok, new, state), _metrics(loss, terms, ok, gnorm)

    return jax.jit(train_step) if jit else train_step


def make_eval_step(spec, loss_cfg: LossConfig = LossConfig(), *, forces: bool = True,
                   stress: bool | None = None, jit: bool = True):
    """``eval_step(params, batch) -> (metrics, predictions)`` without any update.

    Forces are always predicted (for metrics) unless ``forces=False``; stress when the loss
    uses it (or ``stress=True``).
    """
    stress = loss_cfg.uses_stress if stress is None else stress
    props = make_batch_properties_fn(spec, forces=forces, stress=stress)

    def eval_step(params, batch):
        pred = props(params, batch)
        terms = loss_terms(pred, batch)
        loss = combine_terms(terms, loss_cfg)
        return _metrics(loss, terms, jnp.isfinite(loss)), pred

    return jax.jit(eval_step) if jit else eval_step


@functools.lru_cache(maxsize=16)
def cached_eval_step(spec, loss_cfg: LossConfig = LossConfig(), forces: bool = True, stress: bool = False):
    """`make_eval_step` (jitted) memoised per (spec, loss_cfg, forces, stress), so repeated
    evaluations and `fit` calls reuse compiled programs."""
    return make_eval_step(spec, loss_cfg, forces=forces, stress=stress)


@functools.lru_cache(maxsize=16)
def cached_properties_fn(spec, forces: bool = True, stress: bool = False):
    """Jitted `make_batch_properties_fn` memoised per (spec, forces, stress)."""
    return jax.jit(make_batch_properties_fn(spec, forces=forces, stress=stress))


def predict(potential, structures, *, batch_size: int = 16, stress: bool = False, batcher=None) -> list[dict]:
    """Energies [eV], forces [eV/Å] (and stress [eV/Å³]) of many structures, batched.

    Returns one dict of numpy arrays per structure, in order: ``energy`` (), ``forces`` (N, 3),
    and ``stress`` (3, 3) with ``stress=True``.
    """
    from jnnp.train.batch import Batcher

    if batcher is None:
        batcher = Batcher(potential.spec, structures, batch_size)
    fn = cached_properties_fn(potential.spec, True, bool(stress))
    out = [None] * len(batcher)
    for batch in batcher.batches():
        pred = jax.tree.map(np.asarray, fn(potential.params, batch))
        a0 = 0
        for k in range(batch.n_structures):
            if not batch.structure_mask[k]:
                continue
            i = int(batch.index[k])
            n = int(batch.n_atoms[k])
            rec = {"energy": np.float64(pred["energy"][k]),
                   "forces": pred["forces"][a0:a0 + n].astype(np.float64)}
            if stress:
                rec["stress"] = pred["stress"][k].astype(np.float64)
            out[i] = rec
            a0 += n
    return out
