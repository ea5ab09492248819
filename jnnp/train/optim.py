"""Gradient optimisers as optax chains: clip → Adam/AdamW with a learning-rate schedule.

    clip_by_global_norm(clip_norm) → adam | adamw(weight_decay) [lr schedule] → reduce_on_plateau
        → params_ema(ema_decay)

Schedules (``schedule``):

* ``"constant"``: linear warm-up from 0 over ``warmup_steps``, then ``learning_rate``;
* ``"cosine"``: warm-up, then cosine decay to ``final_fraction · learning_rate`` at ``total_steps``;
* ``"plateau"``: warm-up, then constant, multiplied by `optax.contrib.reduce_on_plateau`'s scale,
  which drops by ``plateau_factor`` when the loss (passed as ``value=`` to ``update``, averaged
  over ``plateau_accumulation`` steps, e.g. one epoch) has not improved for ``plateau_patience``
  such averages.

``params_ema`` (optional, last) changes no update: it keeps an exponential moving average of the
parameters in the optimiser state (Polyak averaging, as NequIP's and MACE's ``ema``), which
`ema_params` reads back; the training loop validates and saves the averaged parameters. At a
high learning rate the averaged weights are far less noisy than the last step's, so the best
epoch chosen on a small validation set is not just a lucky one.

All returned transformations accept (and, except for the plateau, ignore) a ``value=`` keyword in
``update``, so a train step can always pass the loss.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["SCHEDULES", "make_schedule", "make_optimizer", "make_lbfgs", "params_ema", "ema_params",
           "plateau_scale"]

SCHEDULES = ("constant", "cosine", "plateau")


def make_schedule(learning_rate: float, schedule: str = "cosine", total_steps: int = 1000,
                  warmup_steps: int = 0, final_fraction: float = 0.01):
    """An optax schedule step → learning rate (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    lr = float(learning_rate)
    warmup_steps = int(max(0, warmup_steps))
    if schedule == "cosine":
        decay = max(int(total_steps), warmup_steps + 1)
        return optax.warmup_cosine_decay_schedule(0.0 if warmup_steps else lr, lr, warmup_steps, decay,
                                                  end_value=lr * final_fraction)
    if warmup_steps:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps),
                                     optax.constant_schedule(lr)], [warmup_steps])
    return optax.constant_schedule(lr)


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, *, schedule: str = "cosine",
                   total_steps: int = 1000, warmup_steps: int = 0, weight_decay: float = 0.0,
                   clip_norm: float | None = 10.0, final_fraction: float = 0.01,
                   plateau_factor: float = 0.5, plateau_patience: int = 10,
                   plateau_accumulation: int = 1, plateau_min_scale: float = 1e-3,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   ema_decay: float | None = None) -> optax.GradientTransformationExtraArgs:
    """The optax chain for first-order training (``name`` ``"adam"`` or ``"adamw"``).

    Args:
        name: ``"adam"`` or ``"adamw"`` (decoupled weight decay ``weight_decay``).
        learning_rate: peak learning rate.
        schedule, total_steps, warmup_steps, final_fraction: see `make_schedule`.
        clip_norm: global-norm gradient clipping threshold, None for none.
        plateau_*: `optax.contrib.reduce_on_plateau` settings (``schedule="plateau"``).
        ema_decay: keep an exponential moving average of the parameters (`params_ema`), None
            for none.
    """
    if name not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {name!r} for make_optimizer; expected 'adam' or 'adamw' "
                         "(use jnnp.train.kalman for the Kalman filter)")
    lr = make_schedule(learning_rate, schedule, total_steps, warmup_steps, final_fraction)
    parts = []
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(float(clip_norm)))
    if name == "adam":
        parts.append(optax.adam(lr, b1=b1, b2=b2, eps=eps))
    else:
        parts.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=float(weight_decay)))
    if schedule == "plateau":
        parts.append(optax.contrib.reduce_on_plateau(factor=plateau_factor, patience=plateau_patience,
                                                     accumulation_size=plateau_accumulation,
                                                     min_scale=plateau_min_scale))
    if ema_decay is not None:
        parts.append(params_ema(ema_decay))
    return optax.chain(*parts)


class ParamsEmaState(NamedTuple):
    """``count`` () int32 updates seen; ``ema_params`` the averaged parameters (the tree that
    ``init`` got)."""

    count: jnp.ndarray
    ema_params: optax.Params


def params_ema(decay: float) -> optax.GradientTransformation:
    """Exponential moving average of the parameters; the updates pass through unchanged.

    After the update that yields parameters p_t (t = 1, 2, ...), the average becomes
    a_t = d_t a_{t−1} + (1 − d_t) p_t with a_0 = p_0 and d_t = min(decay, (1 + t)/(10 + t)): the
    short memory of the first steps (torch_ema's ``use_num_updates``) keeps the average from
    dwelling on the random initial weights. Must be the last link of a chain, so that it sees the
    final updates; ``update`` needs ``params``. Read the average with `ema_params`.

    Raises:
        ValueError: decay outside [0, 1).
    """
    decay = float(decay)
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {decay}")

    def init(params):
        return ParamsEmaState(count=jnp.zeros((), jnp.int32), ema_params=jax.tree.map(jnp.asarray, params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("params_ema needs the parameters in update(updates, state, params)")
        count = state.count + 1
        t = count.astype(jnp.result_type(float))
        d = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
        new = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda a, p: (d * a + (1.0 - d) * p).astype(a.dtype), state.ema_params, new)
        return updates, ParamsEmaState(count=count, ema_params=ema)

    return optax.GradientTransformation(init, update)


def ema_params(opt_state):
    """The averaged parameters kept by `params_ema` in ``opt_state`` (any chain), else None."""
    found = optax.tree.get_all_with_path(opt_state, "ema_params")
    return found[0][1] if found else None


def plateau_scale(opt_state) -> float | jnp.ndarray:
    """Learning-rate scale of the reduce-on-plateau link in ``opt_state`` (1.0 without one;
    per member for vmapped states)."""
    found = optax.tree.get_all_with_path(opt_state, "scale")
    return found[0][1] if found else 1.0


def make_lbfgs(memory_size: int = 10, max_linesearch_steps: int = 20) -> optax.GradientTransformationExtraArgs:
    """Full-batch L-BFGS (`optax.lbfgs`) with a zoom line search (strong Wolfe conditions), the
    quasi-Newton training of aenet's (BFGS) energy fits.

    Deterministic objective only: one update per pass over the whole training set. ``update``
    needs ``value=``, ``grad=`` and ``value_fn=`` (the loss as a function of the parameters), so
    the line search can evaluate trial steps; `jnnp.train.step.make_train_step` passes them with
    ``linesearch=True``. No learning rate: the line search sets the step.
    """
    return optax.lbfgs(memory_size=int(memory_size),
                       linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=int(max_linesearch_steps)))
