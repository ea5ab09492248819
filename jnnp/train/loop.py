"""The training loop: `fit` a potential to a training set, validating every epoch.

* Epochs over shuffled batches; the order of epoch e is a permutation seeded by (seed, e), so a
  run resumed from any checkpoint (even one saved mid-epoch) continues exactly as an
  uninterrupted run would (same batches, same parameters).
* Fresh runs first normalise the potential on the training split (`jnnp.train.normalize`:
  reference energies, energy unit, symmetry-function scaling) unless ``normalize=False``.
* Validation after every epoch; the best parameters (lowest validation loss, or training loss
  without a validation set) are kept, saved as a model (``run_dir/model/``) and returned. With
  ``ema_decay`` the parameters validated and kept are the moving average of the weights.
* Early stopping after ``patience`` epochs without improvement; optional wall-time limit.
* Non-finite loss or gradients: the update is skipped, training stops with a message naming the
  batch's structures, and the last good checkpoint is left untouched.
* Ctrl-C (SIGINT, main thread): the current step finishes, a checkpoint is written and `fit`
  returns normally (a second Ctrl-C aborts at once).
* ``run_dir`` receives ``checkpoint.{json,msgpack}``, ``model/`` (best model), ``metrics.csv``
  (one row per epoch), ``metrics.json``, ``validation_structures.csv`` (the kept model's error per
  validation structure), ``cache/`` (neighbour lists) and PNG plots.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from jnnp.config.schema import TrainConfig
from jnnp.train.batch import Batcher
from jnnp.train.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint, save_model
from jnnp.train.features import (FeatureBatcher, cached_feature_properties_fn, features_apply,
                                 make_feature_properties_fn, structure_features)
from jnnp.train.kalman import kalman_filter, make_kalman_train_step
from jnnp.train.loss import LossConfig, combine_terms, loss_terms
from jnnp.train.metrics import (ErrorAccumulator, plot_learning_curve, plot_parity, write_history_csv,
                                write_json, write_rows_csv)
from jnnp.train.normalize import energy_scale, normalize_potential, refit_shifts
from jnnp.train.reference import fit_reference_energies
from jnnp.train.optim import SCHEDULES, make_lbfgs, make_optimizer, make_schedule, plateau_scale
from jnnp.train.step import (TrainState, cached_properties_fn, evaluation_params, init_train_state,
                             make_train_step)

__all__ = ["TrainSettings", "History", "fit", "evaluate", "make_optimizer_for"]

OPTIMIZERS = ("adam", "adamw", "kalman", "lbfgs")
# Passes over the data outside the training steps (normalisation, cached features, the final
# refit) use batches of at most this many structures: a full-batch optimiser's single batch of
# every training graph would be needlessly large.
_PASS_BATCH = 64


# The defaults live in one place, the YAML schema (`jnnp.config.schema.TrainConfig`, pydantic only,
# cheap to import); tests/train/test_train_settings.py checks that the two field sets agree.
_DEFAULTS = TrainConfig()


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Training configuration: the fields of `jnnp.config.schema.TrainConfig`, with its defaults.

    Attributes:
        epochs, batch_size: passes over the training set; structures per batch.
        optimizer: ``"adam"``, ``"adamw"``, ``"kalman"`` (`jnnp.train.kalman`; one update per
            batch, so use small batches, typically 1) or ``"lbfgs"`` (full-batch L-BFGS with a
            line search, `jnnp.train.optim.make_lbfgs`: needs ``batch_size`` ≥ the number of
            training structures; one update per epoch; best with cached features, i.e. energies
            only; no learning rate or schedule).
        learning_rate, schedule, warmup_epochs, weight_decay, clip_norm: `jnnp.train.optim`.
        ema_decay: validate, keep and return an exponential moving average of the weights
            (`jnnp.train.optim.params_ema`; adam/adamw only), None to use the last step's.
        energy_weight, force_weight, stress_weight: `jnnp.train.loss.LossConfig`.
        patience: early-stopping patience [epochs].
        keep: ``"best"``: keep (save, return, test) the epoch with the lowest validation loss
            (training loss without validation); ``"last"``: the final epoch's model, as aenet and
            fits run to the end of a schedule report it (heavy-tailed validation errors can make
            the lowest-loss epoch an early, less converged one). Recorded either way: best_epoch.
        seed: shuffling (and Kalman force-row selection) seed.
        max_time_s: stop (with a checkpoint) after this wall time.
        plateau_factor, plateau_patience: reduce-on-plateau (``schedule="plateau"``), patience in
            epochs.
        kalman_lambda, kalman_nu, kalman_epsilon, kalman_forces_per_update: Kalman filter.
        lbfgs_memory: L-BFGS history length.
        normalize: fit shifts, energy unit and SF scaling on the training set (fresh runs).
        refit_shifts: at the end, refit the reference energies of the best model to its energy
            errors on the training set (`jnnp.train.normalize.refit_shifts`; forces unchanged).
        energy_scale: ``"auto"``, ``"energy_std"``, ``"force_rms"`` or a number [eV]
            (`jnnp.train.normalize.normalize_potential`).
        eval_batch_size: batch size for validation (default: batch_size, at most 64).
        growth: capacity level ratio of padded batches (`jnnp.train.batch.BatchSizer`).
        cache_graphs: keep neighbour lists in ``run_dir/cache``.
        cache_features: when the loss has no force or stress term, no descriptor field is
            trained and the optimiser is not the Kalman filter, compute the symmetry functions of
            the training and validation structures once and train on them
            (`jnnp.train.features`; same result, far fewer operations per step). Per-epoch
            validation then reports energies only; the final validation has forces too.
        plots: write PNG plots at the end.
    """

    epochs: int = _DEFAULTS.epochs
    batch_size: int = _DEFAULTS.batch_size
    optimizer: str = _DEFAULTS.optimizer
    learning_rate: float = _DEFAULTS.learning_rate
    schedule: str = _DEFAULTS.schedule
    warmup_epochs: int = _DEFAULTS.warmup_epochs
    weight_decay: float = _DEFAULTS.weight_decay
    energy_weight: float = _DEFAULTS.energy_weight
    force_weight: float = _DEFAULTS.force_weight
    stress_weight: float = _DEFAULTS.stress_weight
    clip_norm: float | None = _DEFAULTS.clip_norm
    ema_decay: float | None = _DEFAULTS.ema_decay
    patience: int = _DEFAULTS.patience
    keep: str = _DEFAULTS.keep
    seed: int = _DEFAULTS.seed
    max_time_s: float | None = _DEFAULTS.max_time_s
    plateau_factor: float = _DEFAULTS.plateau_factor
    plateau_patience: int = _DEFAULTS.plateau_patience
    kalman_lambda: float = _DEFAULTS.kalman_lambda
    kalman_nu: float = _DEFAULTS.kalman_nu
    kalman_epsilon: float = _DEFAULTS.kalman_epsilon
    kalman_forces_per_update: int = _DEFAULTS.kalman_forces_per_update
    lbfgs_memory: int = _DEFAULTS.lbfgs_memory
    normalize: bool = _DEFAULTS.normalize
    refit_shifts: bool = _DEFAULTS.refit_shifts
    energy_scale: str | float = _DEFAULTS.energy_scale
    eval_batch_size: int | None = _DEFAULTS.eval_batch_size
    growth: float = _DEFAULTS.growth
    cache_graphs: bool = _DEFAULTS.cache_graphs
    cache_features: bool = _DEFAULTS.cache_features
    plots: bool = _DEFAULTS.plots

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.epochs < 0 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("need epochs >= 0, batch_size >= 1, patience >= 1")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")
        if self.ema_decay is not None and self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"ema_decay applies to the adam and adamw optimizers, not {self.optimizer!r}")

    @property
    def validation_batch_size(self) -> int:
        """``eval_batch_size``, else ``batch_size`` up to 64 (a full-batch optimiser's batch size
        would pad the validation set into one huge batch)."""
        return self.eval_batch_size or min(self.batch_size, _PASS_BATCH)

    @property
    def loss(self) -> LossConfig:
        return LossConfig(self.energy_weight, self.force_weight, self.stress_weight)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class History:
    """What `fit` did: one record per epoch and how it ended.

    Attributes:
        epochs: list of per-epoch dicts (``epoch`` 1-based, ``train_loss``, ``train_energy_rmse``
            [meV/atom], ``train_force_rmse`` [meV/Å], ``val_*`` likewise plus MAEs, ``lr``,
            ``time_s``).
        stop_reason: ``"completed"``, ``"early stopping"``, ``"time limit"``, ``"interrupted"``
            or a message starting with ``"non-finite"``.
        best_epoch: epoch (1-based) of the lowest validation (or training) loss: that of the
            returned parameters unless ``keep="last"`` (0: the initial ones).
        best_loss: its validation (or training) loss.
    """

    epochs: list = dataclasses.field(default_factory=list)
    stop_reason: str = ""
    best_epoch: int = 0
    best_loss: float = math.inf

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i):
        return self.epochs[i]

    def column(self, key) -> list:
        return [r.get(key) for r in self.epochs]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_optimizer_for(cfg: TrainSettings, steps_per_epoch: int):
    """The optax transformation named by ``cfg.optimizer`` (Kalman filter or optax chain)."""
    if cfg.optimizer == "kalman":
        return kalman_filter(cfg.kalman_lambda, cfg.kalman_nu, cfg.kalman_epsilon)
    if cfg.optimizer == "lbfgs":
        return make_lbfgs(cfg.lbfgs_memory)
    return make_optimizer(cfg.optimizer, cfg.learning_rate, schedule=cfg.schedule,
                          total_steps=max(1, cfg.epochs * steps_per_epoch),
                          warmup_steps=cfg.warmup_epochs * steps_per_epoch, weight_decay=cfg.weight_decay,
                          clip_norm=cfg.clip_norm, plateau_factor=cfg.plateau_factor,
                          plateau_patience=cfg.plateau_patience, plateau_accumulation=max(1, steps_per_epoch),
                          ema_decay=cfg.ema_decay)


_OPTIMIZER_FIELDS = ("epochs", "optimizer", "learning_rate", "schedule", "warmup_epochs", "weight_decay",
                     "clip_norm", "ema_decay", "seed", "plateau_factor", "plateau_patience", "kalman_lambda",
                     "kalman_nu", "kalman_epsilon", "kalman_forces_per_update", "lbfgs_memory")


def _optimizer_key(cfg: TrainSettings) -> tuple:
    return tuple((f, getattr(cfg, f)) for f in _OPTIMIZER_FIELDS)


def _kalman_units(structures, elements) -> tuple:
    """(per-atom energy spread [eV/atom], RMS force [eV/Å]) of the training set: the units in
    which the Kalman filter sees energy and force errors."""
    has_e = [s for s in structures if s.energy is not None]
    e_unit = f_unit = None
    if len(has_e) > 1:
        e_unit = energy_scale(has_e, elements, fit_reference_energies(has_e, elements), "energy_std")
    if any(s.forces is not None for s in structures):
        f_unit = energy_scale(structures, elements, None, "force_rms")
    return e_unit, f_unit


@functools.lru_cache(maxsize=8)
def _training_fns(spec, loss_cfg: LossConfig, opt_key: tuple, n_batches: int, units: tuple = (None, None),
                  features: bool = False):
    """(optimizer, jitted train step), memoised so that repeated `fit` calls (resume, notebooks)
    reuse compiled programs. ``features``: the step takes cached-feature batches."""
    cfg = TrainSettings(**dict(opt_key))
    optimizer = make_optimizer_for(cfg, n_batches)
    if cfg.optimizer == "kalman":
        step = make_kalman_train_step(spec, optimizer, loss_cfg,
                                      forces_per_update=cfg.kalman_forces_per_update, seed=cfg.seed,
                                      energy_unit=units[0], force_unit=units[1])
    else:
        props = make_feature_properties_fn(spec) if features else None
        step = make_train_step(spec, optimizer, loss_cfg, properties_fn=props, linesearch=cfg.optimizer == "lbfgs")
    return optimizer, step


class _SigintFlag:
    """Context manager: the first SIGINT sets ``.set``; a second one raises KeyboardInterrupt."""

    def __init__(self, verbose: bool):
        self.set = False
        self.verbose = verbose
        self._prev = None

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        if self.verbose:
            print("\ninterrupt: finishing the current step and saving a checkpoint "
                  "(press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)
        return False


class _Progress:
    """tqdm bar per epoch when available, else one plain line per epoch."""

    def __init__(self, enabled: bool, n_batches: int):
        self.enabled = enabled
        self.n = n_batches
        self.bar = None
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def start(self, epoch: int, done: int):
        if self.enabled and self.tqdm is not None:
            self.bar = self.tqdm(total=self.n, initial=done, desc=f"epoch {epoch}", leave=False,
                                 dynamic_ncols=True)

    def step(self, loss: float):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}")

    def end(self, line: str):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            if self.tqdm is not None:
                self.tqdm.write(line)
            else:
                print(line, flush=True)


def _fmt(v, spec=".4g"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


class _Sums:
    """Count-weighted running sums of the MSE terms over an epoch (JSON round-trippable)."""

    KEYS = ("energy", "force", "stress")

    def __init__(self, d=None):
        self.d = dict(d or {})

    def add(self, m: dict):
        for k in self.KEYS:
            if f"{k}_mse" in m:
                n = float(m[f"{k}_count"])
                self.d[f"{k}_sse"] = self.d.get(f"{k}_sse", 0.0) + float(m[f"{k}_mse"]) * n
                self.d[f"{k}_n"] = self.d.get(f"{k}_n", 0.0) + n
        self.d["loss_sum"] = self.d.get("loss_sum", 0.0) + float(m["loss"])
        self.d["batches"] = self.d.get("batches", 0) + 1

    def mse(self, k):
        n = self.d.get(f"{k}_n", 0.0)
        return self.d[f"{k}_sse"] / n if n else math.nan

    def loss(self, cfg: LossConfig) -> float:
        total = 0.0
        for k, w in zip(self.KEYS, (cfg.energy_weight, cfg.force_weight, cfg.stress_weight)):
            v = self.mse(k)
            if w and math.isfinite(v):
                total += w * v
        return total

    def rmse_mev(self, k) -> float:
        v = self.mse(k)
        return math.sqrt(v) * 1000.0 if math.isfinite(v) else math.nan


def _validate(properties_fn, params, batcher, loss_cfg, elements, systems=None):
    """(loss, metrics dict, accumulator) of ``params`` on all batches of ``batcher``, with a
    jitted properties function (shared with `predict`, so no extra compilation)."""
    sums = _Sums()
    acc = ErrorAccumulator(elements, systems)
    for batch in batcher.batches():
        pred = properties_fn(params, batch)
        terms = loss_terms(pred, batch)
        m = jax.device_get({"loss": combine_terms(terms, loss_cfg), **terms})
        sums.add(m)
        acc.add(batch, jax.device_get(pred))
    return sums.loss(loss_cfg), acc.summary(), acc


def evaluate(potential, dataset, *, batch_size: int = 16, systems=None, loss: LossConfig | None = None,
             run_dir=None, name: str = "test", plots: bool = True, like=None, cache_dir=None) -> dict:
    """Metrics of ``potential`` on ``dataset`` (e.g. the test split).

    ``like``: structures (e.g. the validation split, evaluated with the same ``batch_size``) whose
    batch capacities to use, so that the program compiled for them is reused rather than a new
    one compiled for this data set's shapes. ``cache_dir``: graph cache (see `build_graphs`).

    Returns the `ErrorAccumulator.summary` dict plus ``loss`` (with the weights of ``loss``).
    With ``run_dir``, writes ``{name}_metrics.json``, ``{name}_structures.csv`` (per-structure
    errors, `ErrorAccumulator.structure_rows`) and ``{name}_parity.png`` there.
    """
    loss = loss or LossConfig()
    stress = any(s.stress is not None and s.periodic for s in dataset)
    ref = (Batcher(potential.spec, like, batch_size, cache_dir=cache_dir).sizer.reference
           if like else None)
    batcher = Batcher(potential.spec, dataset, batch_size, cache_dir=cache_dir, reference=ref)
    step = cached_properties_fn(potential.spec, True, stress)
    val, summary, acc = _validate(step, potential.params, batcher, loss, potential.spec.elements, systems)
    summary = {"loss": val, **summary}
    if run_dir is not None:
        write_json(summary, Path(run_dir) / f"{name}_metrics.json")
        write_rows_csv(acc.structure_rows(dataset), Path(run_dir) / f"{name}_structures.csv")
        if plots:
            plot_parity(acc, Path(run_dir) / f"{name}_parity.png", title=name)
    return summary


def fit(potential, train_set, val_set=None, cfg: TrainSettings = TrainSettings(), run_dir="run", *,
        resume: bool = False, progress: bool = True, callback=None, split: dict | None = None,
        systems=None):
    """Train ``potential`` on ``train_set``; returns ``(best potential, History)``.

    Args:
        potential: initial `Potential` (ignored apart from its spec when resuming).
        train_set, val_set: sequences of labelled `Structure` (val_set may be None/empty).
        cfg: `TrainSettings`.
        run_dir: output folder (module docstring).
        resume: continue from ``run_dir``'s checkpoint if there is one (same data and cfg
            assumed; the result equals that of an uninterrupted run).
        progress: show progress (tqdm or one line per epoch).
        callback: optional ``callback(event: dict)`` called after every step (``event["kind"]
            == "step"``, with ``epoch``, ``batch``, ``metrics``) and every epoch (``"epoch"``,
            with ``record``).
        split: data-split record to store in the checkpoint (e.g. ``Split.to_dict()``).
        systems: optional system key per validation structure, for per-system metrics.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_set, val_set = list(train_set), list(val_set or [])
    if not train_set:
        raise ValueError("the training set is empty")
    spec = potential.spec
    loss_cfg = cfg.loss
    cache = run_dir / "cache" if cfg.cache_graphs else None
    train_b = Batcher(spec, train_set, cfg.batch_size, cache_dir=cache, growth=cfg.growth, progress=progress)
    val_b = (Batcher(spec, val_set, cfg.validation_batch_size, cache_dir=cache, growth=cfg.growth)
             if val_set else None)
    n_batches = train_b.n_batches()
    if cfg.optimizer == "lbfgs" and n_batches != 1:
        raise ValueError(f"optimizer 'lbfgs' is full-batch: set batch_size >= {len(train_set)} (the number of "
                         f"training structures), got {cfg.batch_size}")
    pass_b = (train_b if cfg.batch_size <= _PASS_BATCH else
              Batcher(spec, train_set, _PASS_BATCH, graphs=train_b.graphs, growth=cfg.growth))
    units = _kalman_units(train_set, spec.elements) if cfg.optimizer == "kalman" else (None, None)
    use_features = cfg.cache_features and features_apply(spec, loss_cfg, cfg.optimizer)
    optimizer, train_step = _training_fns(spec, loss_cfg, _optimizer_key(cfg), n_batches, units, use_features)
    schedule = (make_schedule(cfg.learning_rate, cfg.schedule, max(1, cfg.epochs * n_batches),
                              cfg.warmup_epochs * n_batches) if cfg.optimizer in ("adam", "adamw") else None)

    # ---- initial or resumed state -----------------------------------------------------------
    if resume and checkpoint_exists(run_dir):
        ck_raw = load_checkpoint(run_dir)
        if ck_raw["potential"].spec != spec:
            raise ValueError(f"{run_dir}: the checkpoint's model spec differs from the potential "
                             "passed to fit")
        saved_cfg = ck_raw["config"]
        if saved_cfg and saved_cfg != _jsonable(cfg.to_dict()):
            warnings.warn(f"{run_dir}: resuming with settings that differ from the checkpoint's; the result "
                          "will not match an uninterrupted run", stacklevel=2)
        template = init_train_state(ck_raw["potential"].params, optimizer)
        ck = load_checkpoint(run_dir, opt_state_template=template.opt_state,
                             extra_template={"best_params": template.params})
        state = TrainState(step=jax.numpy.asarray(ck["step"], jax.numpy.int32),
                           params=jax.tree.map(jax.numpy.asarray, ck["potential"].params),
                           opt_state=jax.tree.map(jax.numpy.asarray, ck["opt_state"]))
        best_params = ck["extra"]["best_params"]
        potential = ck["potential"]
        loop = ck["state"]
        history = History(epochs=loop["history"], best_epoch=loop["best_epoch"],
                          best_loss=_float(loop["best_loss"]))
        epoch0, batch0, sums0, bad = loop["epoch"], loop["batch"], loop["sums"], loop["bad_epochs"]
    else:
        if cfg.normalize:
            potential = normalize_potential(potential, train_set, batcher=pass_b, scale=cfg.energy_scale)
        state = init_train_state(potential.params, optimizer)
        best_params = state.params
        history = History()
        epoch0, batch0, sums0, bad = 0, 0, {}, 0

    properties_fn = cached_properties_fn(spec, True, loss_cfg.uses_stress)
    # the batches and the validation function of the epochs
    train_src, val_src, epoch_properties_fn = train_b, val_b, properties_fn
    if use_features:
        train_src = FeatureBatcher(train_b, structure_features(spec, potential.params, pass_b))
        if val_b is not None:
            val_src = FeatureBatcher(val_b, structure_features(spec, potential.params, val_b))
        epoch_properties_fn = cached_feature_properties_fn(spec)
    prog = _Progress(progress, n_batches)
    t_start = time.monotonic()
    elements = spec.elements
    B = cfg.batch_size
    split = split or {}

    def loop_state(epoch, batch, sums):
        return {"epoch": epoch, "batch": batch, "sums": sums, "bad_epochs": bad, "history": history.epochs,
                "best_epoch": history.best_epoch, "best_loss": _jsonfloat(history.best_loss)}

    def checkpoint(epoch, batch, sums):
        save_checkpoint(run_dir, potential.replace(params=state.params), opt_state=state.opt_state,
                        step=int(state.step), extra={"best_params": best_params},
                        state=loop_state(epoch, batch, sums), config=_jsonable(cfg.to_dict()), split=split)

    stop = ""
    pos = (epoch0, batch0, dict(sums0))
    with _SigintFlag(progress) as sigint:
        try:
            for epoch in range(epoch0, cfg.epochs):
                t_epoch = time.monotonic()
                order = train_b.order(epoch, cfg.seed)
                sums = _Sums(sums0 if epoch == epoch0 else None)
                start = batch0 if epoch == epoch0 else 0
                prog.start(epoch + 1, start)
                for k in range(start, n_batches):
                    members = order[k * B:(k + 1) * B]
                    new_state, m = train_step(state, train_src.batch(members))
                    m = jax.device_get(m)
                    if not bool(m["finite"]):
                        names = ", ".join(train_set[int(i)].provenance for i in members)
                        stop = (f"non-finite loss or gradient at epoch {epoch + 1}, batch {k + 1} "
                                f"(structures: {names}); training stopped, the last good checkpoint "
                                "and best model are kept")
                        break
                    state = new_state
                    sums.add(m)
                    pos = (epoch, k + 1, sums.d)
                    prog.step(float(m["loss"]))
                    if callback is not None:
                        callback({"kind": "step", "epoch": epoch + 1, "batch": k + 1, "metrics": m})
                    if sigint.set:
                        stop = "interrupted"
                    elif cfg.max_time_s is not None and time.monotonic() - t_start > cfg.max_time_s:
                        stop = "time limit"
                    if stop:
                        if k + 1 < n_batches:
                            checkpoint(epoch, k + 1, sums.d)
                        break
                if stop and (stop.startswith("non-finite") or sums.d.get("batches", 0) < n_batches):
                    prog.end(f"epoch {epoch + 1}: {stop}")
                    break
                # ---- end of epoch: validation, bookkeeping, checkpoint -------------------------
                rec = {"epoch": epoch + 1, "train_loss": sums.loss(loss_cfg),
                       "train_energy_rmse": sums.rmse_mev("energy"),
                       "train_force_rmse": sums.rmse_mev("force")}
                if loss_cfg.uses_stress:
                    rec["train_stress_rmse"] = sums.rmse_mev("stress")
                eval_params = evaluation_params(state)
                if val_b is not None:
                    vloss, vm, _ = _validate(epoch_properties_fn, eval_params, val_src, loss_cfg, elements)
                    rec.update(val_loss=vloss, val_energy_rmse=vm["energy_rmse"],
                               val_energy_mae=vm["energy_mae"], val_force_rmse=vm["force_rmse"],
                               val_force_mae=vm["force_mae"])
                    if "stress_rmse" in vm:
                        rec["val_stress_rmse"] = vm["stress_rmse"]
                    score = vloss
                else:
                    score = rec["train_loss"]
                rec["lr"] = _learning_rate(cfg, schedule, state)
                rec["time_s"] = time.monotonic() - t_epoch
                improved = math.isfinite(score) and score < history.best_loss
                if improved:
                    history.best_loss, history.best_epoch = score, epoch + 1
                    best_params = eval_params
                    bad = 0
                    save_model(run_dir / "model", potential.replace(params=best_params),
                               metadata={"epoch": epoch + 1, "loss": score})
                else:
                    bad += 1
                rec["best"] = improved
                history.epochs.append(rec)
                checkpoint(epoch + 1, 0, {})
                pos = (epoch + 1, 0, {})
                write_history_csv(history.epochs, run_dir / "metrics.csv")
                prog.end(_epoch_line(rec))
                if callback is not None:
                    callback({"kind": "epoch", "epoch": epoch + 1, "record": rec})
                if stop:
                    break
                if bad >= cfg.patience:
                    stop = "early stopping"
                    break
            else:
                stop = stop or "completed"
        except KeyboardInterrupt:
            stop = "interrupted"
            prog.end(f"interrupted: saving a checkpoint in {run_dir}")
            checkpoint(*pos)
    history.stop_reason = stop or "completed"
    if stop.startswith("non-finite"):
        warnings.warn(stop, RuntimeWarning, stacklevel=2)
    kept_epoch, kept_loss = history.best_epoch, history.best_loss
    if cfg.keep == "last" and history.epochs and stop != "interrupted" and not stop.startswith("non-finite"):
        best_params, kept_epoch = evaluation_params(state), len(history.epochs)
        kept_loss = history.epochs[-1].get("val_loss", history.epochs[-1]["train_loss"])
        if not cfg.refit_shifts:    # otherwise saved below, after the refit
            save_model(run_dir / "model", potential.replace(params=best_params),
                       metadata={"epoch": kept_epoch, "loss": _jsonfloat(kept_loss)})
    best = potential.replace(params=jax.tree.map(np.asarray, best_params))
    if cfg.refit_shifts and stop != "interrupted":
        best = refit_shifts(best, pass_b)
        save_model(run_dir / "model", best, metadata={"epoch": kept_epoch, "shifts_refitted": True,
                                                       "loss": _jsonfloat(kept_loss)})
    elif history.best_epoch == 0 and not (run_dir / "model" / "model.json").exists():
        save_model(run_dir / "model", best, metadata={"epoch": 0})
    summary = {"stop_reason": history.stop_reason, "best_epoch": history.best_epoch, "kept_epoch": kept_epoch,
               "best_loss": history.best_loss, "epochs_run": len(history.epochs),
               "settings": cfg.to_dict(), "history": history.epochs}
    if val_b is not None and not stop.startswith("interrupted"):
        vloss, vm, acc = _validate(properties_fn, best.params, val_b, loss_cfg, elements, systems)
        summary["validation"] = {"loss": vloss, **vm}
        write_rows_csv(acc.structure_rows(val_set), run_dir / "validation_structures.csv")
        if cfg.plots:
            plot_parity(acc, run_dir / "validation_parity.png", title="validation")
    write_json(summary, run_dir / "metrics.json")
    if history.epochs:
        write_history_csv(history.epochs, run_dir / "metrics.csv")
        if cfg.plots:
            plot_learning_curve(history.epochs, run_dir / "learning_curve.png")
    return best, history


def _learning_rate(cfg: TrainSettings, schedule, state) -> float:
    """Current learning rate (schedule × reduce-on-plateau scale); NaN for the Kalman filter and
    L-BFGS."""
    if schedule is None:
        return math.nan
    return float(schedule(int(state.step))) * float(plateau_scale(state.opt_state))


def _epoch_line(rec: dict) -> str:
    parts = [f"epoch {rec['epoch']:4d}", f"loss {_fmt(rec['train_loss'])}",
             f"E {_fmt(rec['train_energy_rmse'], '.3g')} meV/atom",
             f"F {_fmt(rec['train_force_rmse'], '.3g')} meV/Å"]
    if "val_loss" in rec:
        parts += [f"| val loss {_fmt(rec['val_loss'])}", f"E {_fmt(rec['val_energy_rmse'], '.3g')}",
                  f"F {_fmt(rec['val_force_rmse'], '.3g')}"]
    if rec.get("best"):
        parts.append("*")
    return "  ".join(parts)


def _jsonfloat(x):
    x = float(x)
    return x if math.isfinite(x) else str(x)


def _float(x):
    return float(x)


def _jsonable(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d))
