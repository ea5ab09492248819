"""The outer optimisation loop over descriptor hyperparameters (shared by all hypergradients).

``run_outer(fn, raw0, ...)`` repeats: evaluate ``(J, aux), g = fn(raw, carry)``, record, take
an optax Adam step on the raw parameters. ``carry`` is threaded through (e.g. warm-started
network weights, updated by ``update_carry(carry, aux)``). The raw parameters with the lowest
J evaluated are returned (J at the final θ is evaluated, so the last step counts).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["OuterResult", "field_means", "run_outer"]


@dataclasses.dataclass
class OuterResult:
    """``raw``: best raw parameters; ``carry``: the final carry; ``history``: per outer step
    ``objective``, ``grad_norm``, ``time_s`` and the mean value of each field; ``wall_s``."""

    raw: dict
    carry: object
    history: list
    wall_s: float
    best_step: int = 0


def field_means(param, raw) -> dict:
    """Mean value of every parameterised field over all elements (for progress records)."""
    vals = param.values(raw)["elements"]
    return {f"mean_{f}": float(np.mean(np.concatenate([np.asarray(d[f]) for d in vals]))) for f in param.fields}


def run_outer(fn, param, raw0, carry=None, *, steps: int = 20, learning_rate: float = 0.05,
              update_carry=None, progress: bool = False, label: str = "outer") -> OuterResult:
    """Adam on raw SF parameters with hypergradients from ``fn(raw, carry) -> ((J, aux), g)``."""
    t0 = time.perf_counter()
    opt = optax.adam(learning_rate)
    raw = jax.tree.map(jnp.asarray, raw0)
    state = opt.init(raw)
    best = (math.inf, raw, 0)
    history = []
    for it in range(steps + 1):
        te = time.perf_counter()
        (J, aux), g = fn(raw, carry)
        J = float(J)
        gnorm = float(optax.tree.norm(g))
        if math.isfinite(J) and J < best[0]:
            best = (J, raw, it)
        history.append({"step": it, "objective": J, "grad_norm": gnorm, "time_s": time.perf_counter() - te,
                        **field_means(param, raw)})
        if progress:
            print(f"{label} step {it}: objective {J:.6g}, |grad| {gnorm:.3g}", flush=True)
        if it == steps or not (math.isfinite(J) and math.isfinite(gnorm)):
            break
        upd, state = opt.update(g, state, raw)
        raw = optax.apply_updates(raw, upd)
        if update_carry is not None:
            carry = update_carry(carry, aux)
    return OuterResult(jax.device_get(best[1]), carry, history, time.perf_counter() - t0, best[2])
