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
    # Three broadcast multiply-adds instead of a (P, 3) @ (3, 3) product: XLA:CPU sends the
    # matrix product to a library call that costs more than the whole edge computation.
    s = shifts.astype(positions.dtype)
    cell = jnp.asarray(cell, positions.dtype)
    offset = s[:, 0:1] * cell[0] + s[:, 1:2] * cell[1] + s[:, 2:3] * cell[2]
    return positions[neighbors] - positions[centers] + offset


def safe_norm(v, axis=-1):
    """Euclidean norm with a finite (zero) gradient at v = 0 (padded slots, coincident atoms)."""
    d2 = jnp.sum(v * v, axis=axis)
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)
