"""Learnable symmetry functions: network weights and descriptor hyperparameters trained jointly.

The optimised pytree is ``{"networks": <element networks>, "sf": <raw SF parameters>}`` (raw as
in `jnnp.hyper.param`); every parameter group — ``"networks"`` and each parameterised field
``"eta"``, ``"rs"``, ``"zeta"``, ``"rc"`` — has its own optax chain and learning rate
(`optax.multi_transform`); a group whose learning rate is 0 (or missing) is frozen
(`optax.set_to_zero`) and keeps its values bit for bit.

Scaling statistics: when the functions move, the statistics fitted at the start go stale. With
``refresh_scaling`` they are recomputed on the training set after every epoch, and the change is
folded into the first layer of each element network (`refresh_scaling`), so the model's
predictions are unchanged by the refresh itself.

The pieces reused from `jnnp.train`: `Batcher` (graphs built for `SFParameterization.graph_spec`),
`normalize_potential`, `descriptor_statistics`, `make_loss_fn`, `make_optimizer`, the non-finite
guard, `ErrorAccumulator`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jnnp.descriptors.params import init_descriptor_params
from jnnp.hyper.outer import field_means
from jnnp.hyper.param import SFParameterization
from jnnp.model.potential import Potential
from jnnp.train.batch import Batcher
from jnnp.train.loss import LossConfig, combine_terms, loss_terms, make_loss_fn
from jnnp.train.metrics import ErrorAccumulator
from jnnp.train.normalize import descriptor_statistics, normalize_potential
from jnnp.train.optim import make_optimizer
from jnnp.train.step import cached_properties_fn, select_finite, tree_all_finite

__all__ = [
    "GROUPS",
    "LearnResult",
    "LearnState",
    "LearnableSettings",
    "assemble",
    "evaluate_params",
    "fit_learnable",
    "make_group_optimizer",
    "make_learnable",
    "make_learnable_step",
    "refresh_scaling",
    "static_potential",
]

GROUPS = ("networks", "eta", "rs", "zeta", "rc")


@struct.dataclass
class LearnState:
    """``step`` (), ``params`` full potential parameters (``params["descriptor"]`` = values of
    ``raw``), ``raw`` the raw SF parameters, ``opt_state`` of ``{"networks", "sf"}``."""

    step: Any
    params: dict
    raw: dict
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class LearnableSettings:
    """Joint training settings.

    Attributes:
        epochs, batch_size, seed: as in `jnnp.train.TrainSettings`.
        learning_rates: per group (``GROUPS``) peak learning rate; 0 or missing: frozen.
        schedule, warmup_epochs, clip_norm: `jnnp.train.optim.make_optimizer` (per group).
        energy_weight, force_weight: loss weights (`jnnp.train.loss.LossConfig`).
        refresh_scaling: recompute SF scaling statistics after every epoch (module docstring).
        normalize: fit shifts, energy unit and scaling on the training set first.
        eval_batch_size: validation batch size (default batch_size).
    """

    epochs: int = 50
    batch_size: int = 8
    learning_rates: tuple = (("networks", 1e-3), ("eta", 1e-2), ("rs", 1e-2))
    schedule: str = "cosine"
    warmup_epochs: int = 0
    clip_norm: float | None = 10.0
    energy_weight: float = 1.0
    force_weight: float = 10.0
    refresh_scaling: bool = True
    normalize: bool = True
    seed: int = 0
    eval_batch_size: int | None = None

    def __post_init__(self):
        lr = dict(self.learning_rates)
        bad = set(lr) - set(GROUPS)
        if bad:
            raise ValueError(f"unknown parameter group(s) {sorted(bad)} in learning_rates; expected {GROUPS}")
        if any(not (v >= 0) for v in lr.values()):
            raise ValueError(f"learning rates must be >= 0, got {lr}")
        object.__setattr__(self, "learning_rates", tuple(sorted(lr.items())))

    @property
    def loss(self) -> LossConfig:
        return LossConfig(self.energy_weight, self.force_weight, 0.0)


@dataclasses.dataclass
class LearnResult:
    """What `fit_learnable` returns: the best ``potential`` with a static descriptor spec (the
    learnt values; usable anywhere), its ``raw`` parameters, the ``history`` (one dict per
    epoch) and ``best_epoch`` (0: the initial parameters)."""

    potential: Potential
    raw: dict
    history: list
    best_epoch: int
    wall_s: float


def make_learnable(potential: Potential, param: SFParameterization) -> tuple[Potential, dict]:
    """(potential whose descriptor spec is ``param.trainable_spec``, raw parameters).

    The raw parameters reproduce ``potential``'s current symmetry functions, which must have
    the structure of ``param.spec``.
    """
    raw = param.init_raw(dataclasses.replace(potential.spec.descriptor, trainable=()))
    spec = dataclasses.replace(potential.spec, descriptor=param.trainable_spec)
    params = dict(potential.params)
    params["descriptor"] = jax.tree.map(np.asarray, param.values(raw))
    return Potential(spec, params), raw


def assemble(param: SFParameterization, params: dict, raw: dict, networks=None) -> dict:
    """Potential parameters with ``params["descriptor"]`` from ``raw`` (and optionally other
    network weights). Differentiable in raw and networks."""
    out = dict(params)
    out["descriptor"] = param.values(raw)
    if networks is not None:
        out["networks"] = networks
    return out


def static_potential(param: SFParameterization, potential: Potential, raw: dict) -> Potential:
    """The potential with its learnt functions as a plain static spec (n2p2-exportable, fast
    descriptor path); predictions equal those of the learnable form to round-off."""
    desc = param.to_spec(jax.device_get(raw))
    params = dict(jax.device_get(potential.params))
    params["descriptor"] = init_descriptor_params(desc)
    return Potential(dataclasses.replace(potential.spec, descriptor=desc), params)


def make_group_optimizer(param: SFParameterization, raw: dict, networks, learning_rates: dict,
                         **kw) -> optax.GradientTransformation:
    """`optax.multi_transform` over ``{"networks": networks, "sf": raw}``: for each group a
    `jnnp.train.optim.make_optimizer` chain with that group's learning rate (``kw``: its other
    arguments), or `optax.set_to_zero` when the rate is 0 or missing."""
    lr = dict(learning_rates)
    labels = {"networks": jax.tree.map(lambda _: "networks", networks), "sf": param.labels(raw)}
    used = set(jax.tree.leaves(labels))
    transforms = {g: (make_optimizer("adam", lr[g], **kw) if lr.get(g, 0.0) > 0 else optax.set_to_zero())
                  for g in used}
    return optax.multi_transform(transforms, labels)


def make_learnable_step(spec, param: SFParameterization, optimizer, loss_cfg: LossConfig, *, jit: bool = True):
    """``step(state: LearnState, batch) -> (state, metrics)``: one joint update of networks and
    raw SF parameters (state unchanged and ``metrics["finite"] = False`` on a non-finite loss)."""
    loss_fn = make_loss_fn(spec, loss_cfg)

    def step(state: LearnState, batch):
        tr = {"networks": state.params["networks"], "sf": state.raw}

        def f(tr):
            return loss_fn(assemble(param, state.params, tr["sf"], tr["networks"]), batch)

        (loss, (terms, _)), grads = jax.value_and_grad(f, has_aux=True)(tr)
        updates, opt_state = optimizer.update(grads, state.opt_state, tr)
        new_tr = optax.apply_updates(tr, updates)
        new = LearnState(step=state.step + 1, params=assemble(param, state.params, new_tr["sf"], new_tr["networks"]),
                         raw=new_tr["sf"], opt_state=opt_state)
        gnorm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(gnorm) & tree_all_finite(new.params)
        return select_finite(ok, new, state), {"loss": loss, "finite": ok, "grad_norm": gnorm, **terms}

    return jax.jit(step) if jit else step


def _affine(kind: str, stats: dict, smin: float, smax: float):
    """(a, o, s0) with scaled x = s0 + a (G − o) for `jnnp.descriptors.scaling.apply_scaling`."""
    n = len(np.asarray(stats["mean"]))
    one, zero = np.ones(n), np.zeros(n)
    if kind == "none":
        return one, zero, 0.0
    if kind == "center":
        return one, np.asarray(stats["mean"], np.float64), 0.0
    width = (np.asarray(stats["max"]) - np.asarray(stats["min"]) if kind in ("scale", "scale_center")
             else np.asarray(stats["sigma"]))
    a = np.where(width != 0, (smax - smin) / np.where(width != 0, width, 1.0), 0.0)
    o = np.asarray(stats["min"] if kind == "scale" else stats["mean"], np.float64)
    return a, o, smin


def refresh_scaling(spec, params: dict, new_stats) -> dict:
    """``params`` with scaling statistics ``new_stats`` and each element network's first layer
    changed so that the network output is the same function of the unscaled descriptor G.

    With x = s0 + a (G − o) (old) and x' = s0 + a' (G − o') (new): x = D x' + e with D = a/a'
    (0 where a' = 0: that function is constant on the data) and e = s0 + a (o' − o) − D s0, so
    W' = D W and b' = b + eᵀ W.
    """
    out = dict(params)
    nets = []
    for c, (old, new) in enumerate(zip(params["scaling"], new_stats)):
        a0, o0, s0 = _affine(spec.scaling, jax.device_get(old), spec.scale_min, spec.scale_max)
        a1, o1, _ = _affine(spec.scaling, new, spec.scale_min, spec.scale_max)
        D = np.where(a1 != 0, a0 / np.where(a1 != 0, a1, 1.0), 0.0)
        e = s0 + a0 * (o1 - o0) - D * s0
        net = jax.tree.map(lambda x: x, params["networks"][c])
        layer = dict(net["params"]["layer_0"])
        W = jnp.asarray(layer["kernel"])
        layer["kernel"] = jnp.asarray(D, W.dtype)[:, None] * W
        layer["bias"] = jnp.asarray(layer["bias"]) + jnp.asarray(e, W.dtype) @ W
        net = {**net, "params": {**net["params"], "layer_0": layer}}
        nets.append(net)
    dtype = jnp.asarray(params["energy"]["scale"]).dtype
    out["networks"] = tuple(nets)
    out["scaling"] = tuple({k: jnp.asarray(v, dtype) for k, v in st.items()} for st in new_stats)
    return out


def evaluate_params(spec, params: dict, batcher: Batcher, loss_cfg: LossConfig) -> dict:
    """Loss and `ErrorAccumulator` summary (meV/atom, meV/Å) of ``params`` on every batch of
    ``batcher`` (jitted properties function memoised per spec)."""
    fn = cached_properties_fn(spec, True, False)
    acc = ErrorAccumulator(spec.elements)
    sse = {"energy": 0.0, "force": 0.0}
    cnt = {"energy": 0.0, "force": 0.0}
    for batch in batcher.batches():
        pred = fn(params, batch)
        terms = jax.device_get(loss_terms(pred, batch))
        for k in sse:
            sse[k] += float(terms[f"{k}_mse"]) * float(terms[f"{k}_count"])
            cnt[k] += float(terms[f"{k}_count"])
        acc.add(batch, jax.device_get(pred))
    mse = {f"{k}_mse": sse[k] / cnt[k] if cnt[k] else 0.0 for k in sse}
    return {"loss": float(combine_terms(mse, loss_cfg)), **acc.summary()}


def fit_learnable(potential: Potential, param: SFParameterization, train, val=None,
                  settings: LearnableSettings = LearnableSettings(), *, progress: bool = False) -> LearnResult:
    """Train network weights and the parameterised SF hyperparameters jointly.

    Args:
        potential: starting `Potential` (static descriptor with ``param.spec``'s structure).
        param: which fields are learnable and how they are parameterised.
        train, val: structures (val may be empty: the training loss then selects the best epoch).
        settings: `LearnableSettings` (learning rate per group; 0 freezes a group).

    Returns:
        `LearnResult`; its potential has a static spec with the learnt values of the best epoch.
    """
    t0 = time.perf_counter()
    train, val = list(train), list(val or [])
    pot, raw = make_learnable(potential, param)
    spec, cfg = pot.spec, settings.loss
    train_b = Batcher(param.graph_spec, train, settings.batch_size)
    val_b = Batcher(param.graph_spec, val, settings.eval_batch_size or settings.batch_size) if val else None
    if settings.normalize:
        pot = normalize_potential(pot, train, batcher=train_b)
    n_b = train_b.n_batches()
    params = jax.tree.map(jnp.asarray, pot.params)
    raw = jax.tree.map(jnp.asarray, raw)
    opt = make_group_optimizer(param, raw, params["networks"], dict(settings.learning_rates),
                               schedule=settings.schedule, total_steps=max(1, settings.epochs * n_b),
                               warmup_steps=settings.warmup_epochs * n_b, clip_norm=settings.clip_norm)
    step = make_learnable_step(spec, param, opt, cfg)
    state = LearnState(jnp.zeros((), jnp.int32), params, raw,
                       opt.init({"networks": params["networks"], "sf": raw}))

    def score(p):
        return evaluate_params(spec, p, val_b or train_b, cfg)

    first = score(state.params)
    best = (first["loss"], 0, state.params, state.raw)
    history = []
    for epoch in range(settings.epochs):
        te = time.perf_counter()
        losses = []
        finite = True
        for batch in train_b.batches(epoch, settings.seed):
            state, m = step(state, batch)
            if not bool(m["finite"]):
                finite = False
                break
            losses.append(float(m["loss"]))
        if finite and settings.refresh_scaling:
            stats = descriptor_statistics(spec, state.params, train_b)
            state = state.replace(params=refresh_scaling(spec, state.params, stats))
        s = score(state.params)
        rec = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else math.nan,
               "val_loss": s["loss"], "val_energy_rmse": s["energy_rmse"], "val_force_rmse": s["force_rmse"],
               "time_s": time.perf_counter() - te, **field_means(param, state.raw)}
        history.append(rec)
        if progress:
            print(f"learnable epoch {epoch + 1}: train loss {rec['train_loss']:.4g}, val loss {rec['val_loss']:.4g}, "
                  f"val F RMSE {rec['val_force_rmse']:.3g} meV/Å", flush=True)
        if math.isfinite(s["loss"]) and s["loss"] < best[0]:
            best = (s["loss"], epoch + 1, state.params, state.raw)
        if not finite:
            break
    _, best_epoch, best_params, best_raw = best
    final = static_potential(param, pot.replace(params=best_params), best_raw)
    return LearnResult(final, jax.device_get(best_raw), history, best_epoch, time.perf_counter() - t0)
