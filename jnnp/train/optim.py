"""Gradient optimisers as optax chains: clip → Adam/AdamW with a learning-rate schedule.

    clip_by_global_norm(clip_norm) → adam | adamw(weight_decay) [lr schedule] → reduce_on_plateau

Schedules (``schedule``):

* ``"constant"``: linear warm-up from 0 over ``warmup_steps``, then ``learning_rate``;
* ``"cosine"``: warm-up, then cosine decay to ``final_fraction · learning_rate`` at ``total_steps``;
* ``"plateau"``: warm-up, then constant, multiplied by `optax.contrib.reduce_on_plateau`'s scale,
  which drops by ``plateau_factor`` when the loss (passed as ``value=`` to ``update``, averaged
  over ``plateau_accumulation`` steps, e.g. one epoch) has not improved for ``plateau_patience``
  such averages.

All returned transformations accept (and, except for the plateau, ignore) a ``value=`` keyword in
``update``, so a train step can always pass the loss.
"""

from __future__ import annotations

import optax

__all__ = ["SCHEDULES", "make_schedule", "make_optimizer", "make_lbfgs"]

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
                   b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """The optax chain for first-order training (``name`` ``"adam"`` or ``"adamw"``).

    Args:
        name: ``"adam"`` or ``"adamw"`` (decoupled weight decay ``weight_decay``).
        learning_rate: peak learning rate.
        schedule, total_steps, warmup_steps, final_fraction: see `make_schedule`.
        clip_norm: global-norm gradient clipping threshold, None for none.
        plateau_*: `optax.contrib.reduce_on_plateau` settings (``schedule="plateau"``).
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
    return optax.chain(*parts)


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
