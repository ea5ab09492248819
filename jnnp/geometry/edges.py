"""Edge geometry inside jit: differentiable w.r.t. positions and cell (hence stress)."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["edge_vectors", "safe_norm"]


def edge_vectors(positions, cell, centers, neighbors, shifts):
    """Vectors r_ij = R_j − R_i + shift_ij · cell.

    Args:
        positions: (N, 3) Cartesian positions [Å].
        cell: (3, 3) lattice vectors as rows [Å] (any value for free systems: shifts are 0).
        centers, neighbors: (P,) int atom indices i and j.
        shifts: (P, 3) integer lattice shifts (stored as floats) of atom j's image.

    Returns:
        (P, 3) edge vectors [Å]. Differentiable w.r.t.: positions, cell.
    """
    return positions[neighbors] - positions[centers] + shifts.astype(positions.dtype) @ cell


def safe_norm(v, axis=-1):
    """Euclidean norm with a finite (zero) gradient at v = 0 (padded slots, coincident atoms)."""
    d2 = jnp.sum(v * v, axis=axis)
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)
