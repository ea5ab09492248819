"""Cell conventions: jnnp's ``cell`` holds lattice vectors as *rows* (ASE); jax-md's ``box`` as columns."""

from __future__ import annotations

import numpy as np

__all__ = ["cell_to_box", "cell_heights", "min_image_valid", "validate_cell"]


def cell_to_box(cell):
    """Row-vector cell (3, 3) [Å] → jax-md column-vector box (3, 3) [Å]. Works on numpy and jax arrays."""
    return cell.T


def cell_heights(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths (3,) [Å] of the cell: the distance between opposite faces."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    cross = np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]])
    return volume / np.linalg.norm(cross, axis=1)


def min_image_valid(cell: np.ndarray, cutoff: float) -> bool:
    """True when the minimum-image convention finds every neighbour within ``cutoff`` [Å].

    That needs every perpendicular cell width ≥ 2·cutoff; training cells are often smaller, and then
    an all-images pair list (`jnnp.geometry.all_image_pairs`) is required.
    """
    return bool(np.all(cell_heights(cell) >= 2.0 * cutoff))


def validate_cell(cell: np.ndarray, pbc: np.ndarray, *, tol: float = 1e-10) -> None:
    """Raise ValueError for a periodic cell with (near) zero volume."""
    if np.any(pbc) and abs(np.linalg.det(np.asarray(cell, dtype=np.float64))) < tol:
        raise ValueError(f"periodic cell has zero volume: {np.asarray(cell).tolist()}")
