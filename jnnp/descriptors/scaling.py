"""Symmetry-function scaling and centring exactly as n2p2, with statistics from a data set.

n2p2 keywords → ``kind`` (n2p2's precedence): ``scale_symmetry_functions`` and
``center_symmetry_functions`` → "scale_center"; scale alone → "scale"; center alone (also with
``scale_symmetry_functions_sigma``) → "center"; sigma alone → "sigma" (centred, divided by σ);
none → "none".
Statistics per element: ``{"min", "max", "mean", "sigma": (n_c,)}`` — a pytree, so it can be
fitted from the training split and stored/loaded with the model.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["SCALING_KINDS", "apply_scaling", "scaling_statistics", "identity_statistics"]

SCALING_KINDS = ("none", "scale", "center", "scale_center", "sigma")


def apply_scaling(kind: str, stats: dict, G, smin: float = 0.0, smax: float = 1.0):
    """Scale one element's symmetry functions G (..., n_c) as n2p2's ``SymFnc::scale``.

    Functions whose range (max − min) or sigma is zero get a zero scaling factor, as in n2p2.
    Differentiable w.r.t. G and the statistics.
    """
    dtype = G.dtype
    lo, hi = jnp.asarray(stats["min"], dtype), jnp.asarray(stats["max"], dtype)
    mean, sigma = jnp.asarray(stats["mean"], dtype), jnp.asarray(stats["sigma"], dtype)
    if kind == "none":
        return G
    if kind == "center":
        return G - mean
    if kind in ("scale", "scale_center"):
        rng = hi - lo
        factor = jnp.where(rng != 0, (smax - smin) / jnp.where(rng != 0, rng, 1.0), 0.0)
        return smin + factor * (G - (lo if kind == "scale" else mean))
    if kind == "sigma":
        factor = jnp.where(sigma != 0, (smax - smin) / jnp.where(sigma != 0, sigma, 1.0), 0.0)
        return smin + factor * (G - mean)
    raise ValueError(f"unknown scaling kind {kind!r}; expected one of {SCALING_KINDS}")


def scaling_statistics(G: np.ndarray) -> dict:
    """min, max, mean and (population) standard deviation over rows of G (n_atoms, n_c)."""
    G = np.asarray(G, dtype=np.float64)
    if G.shape[0] == 0:
        return identity_statistics(G.shape[1])
    return {"min": G.min(0), "max": G.max(0), "mean": G.mean(0), "sigma": G.std(0)}


def identity_statistics(n: int) -> dict:
    return {"min": np.zeros(n), "max": np.ones(n), "mean": np.zeros(n), "sigma": np.ones(n)}
