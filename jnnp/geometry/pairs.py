"""Host-side (numpy) pair and triplet lists including *every* periodic image within the cutoff.

Training cells are often narrower than twice the cutoff, where the minimum-image convention misses
neighbours (and an atom can see its own images). The pair list comes from vesin, a maintained
cell-list library, and is built outside jit; the descriptors then use it inside jit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jnnp.geometry.cell import validate_cell

__all__ = ["PairList", "all_image_pairs", "triplets"]


@dataclasses.dataclass(frozen=True)
class PairList:
    """Directed pairs (i, j, shift) with |R_j − R_i + shift·cell| < cutoff, sorted by i then j.

    Attributes:
        centers: (P,) int32 atom i.
        neighbors: (P,) int32 atom j.
        shifts: (P, 3) int32 lattice shift of j's image (rows of the cell).
        distances: (P,) float64 [Å], at the positions the list was built for.
        vectors: (P, 3) float64 r_ij [Å].
        cutoff: cutoff radius [Å].
    """

    centers: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray
    distances: np.ndarray
    vectors: np.ndarray
    cutoff: float

    def __len__(self) -> int:
        return len(self.centers)


def all_image_pairs(positions, cell, pbc, cutoff: float) -> PairList:
    """All directed pairs within ``cutoff`` [Å], every periodic image included (vesin).

    Args:
        positions: (N, 3) [Å].
        cell: (3, 3) lattice vectors as rows [Å]; ignored along non-periodic directions.
        pbc: (3,) bool or bool.
        cutoff: radius [Å]; pairs with distance < cutoff are kept.

    Returns:
        PairList sorted by (i, j, shift). Self-pairs (i == j, zero shift) are never included.
    """
    import vesin

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    validate_cell(cell, pbc)
    if not pbc.any():
        cell = np.zeros((3, 3))
    elif not pbc.all():
        # vesin needs a full-rank box; give free directions a vector long enough to hold no image.
        cell = cell.copy()
        for d in np.flatnonzero(~pbc):
            if np.linalg.norm(cell[d]) == 0.0:
                cell[d, d] = 1.0
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, s, vec = nl.compute(points=positions, box=cell, periodic=pbc, quantities="ijSD")
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    i, j, s, vec = i[order], j[order], s[order], vec[order]
    d = np.linalg.norm(vec, axis=1)
    keep = d < cutoff
    return PairList(i[keep].astype(np.int32), j[keep].astype(np.int32), s[keep].astype(np.int32),
                    d[keep], vec[keep], float(cutoff))


def triplets(centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs-of-pairs (p, q), p < q, that share the centre atom.

    Args:
        centers: (P,) centre atom of each pair, sorted ascending.

    Returns:
        (T,) int64 arrays ``p`` and ``q`` of pair indices; T = Σ_i n_i (n_i − 1) / 2.
    """
    centers = np.asarray(centers)
    P = len(centers)
    if P == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if np.any(np.diff(centers) < 0):
        raise ValueError("pair list must be sorted by centre atom")
    start = np.r_[0, np.flatnonzero(np.diff(centers)) + 1]
    size = np.diff(np.r_[start, P])
    block_end = np.repeat(start + size, size)
    run = block_end - np.arange(P) - 1  # partners after p in its block
    p = np.repeat(np.arange(P), run)
    offset = np.arange(len(p)) - np.repeat(np.cumsum(run) - run, run)
    q = p + offset + 1
    return p, q


def pair_index(pl: PairList, i, j, shifts) -> np.ndarray:
    """Index into ``pl`` of the directed pairs (i, j, shift), or −1 where the list has no such pair.

    Args:
        pl: the pair list. i, j: (T,) atoms; shifts: (T, 3) integer lattice shifts of j's image.
    """
    i, j, shifts = np.asarray(i, np.int64), np.asarray(j, np.int64), np.asarray(shifts, np.int64)
    if len(pl) == 0 or len(i) == 0:
        return np.full(len(i), -1, np.int64)
    lo = np.minimum(pl.shifts.min(0), shifts.min(0) if len(shifts) else 0).astype(np.int64)
    span = (np.maximum(pl.shifts.max(0), shifts.max(0)) - lo + 1).astype(np.int64)
    n = int(max(pl.centers.max(), pl.neighbors.max(), i.max(), j.max())) + 1

    def key(a, b, s):
        s = s - lo
        return ((a * n + b) * span[0] + s[:, 0]) * span[1] * span[2] + s[:, 1] * span[2] + s[:, 2]

    keys = key(pl.centers.astype(np.int64), pl.neighbors.astype(np.int64), pl.shifts.astype(np.int64))
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    want = key(i, j, shifts)
    pos = np.minimum(np.searchsorted(sorted_keys, want), len(keys) - 1)
    return np.where(sorted_keys[pos] == want, order[pos], -1)
