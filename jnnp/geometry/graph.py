"""Neighbour graph: index arrays (host-built, numpy → jnp) that the jitted descriptor reads.

A `Graph` holds only integers, integer lattice shifts and masks; positions and the cell are
separate, differentiable inputs. Pairs and triplets are grouped into the blocks of a
`jnnp.descriptors.plan.DescriptorPlan` so that each symmetry function only touches the pairs or
triplets of its element combination, and triplets are never formed edge × edge.
"""

from __future__ import annotations

import numpy as np
from flax import struct

from jnnp.geometry.pairs import all_image_pairs, pair_index, triplets

__all__ = ["Graph", "build_graph"]


@struct.dataclass
class Graph:
    """Index data for one structure (or a padded batch of structures).

    Attributes:
        species: (N,) int32 element index 0..T−1 (0 for padding atoms).
        atom_mask: (N,) bool, False for padding atoms.
        element_atoms: per element, (N_c,) int32 global indices of the atoms of that element.
        element_mask: per element, (N_c,) bool.
        pair_i, pair_j: (P,) int32 centre and neighbour atom of each directed pair.
        pair_shift: (P, 3) int32 lattice shift of j's image (rows of the cell).
        pair_blocks: per plan pair block, (idx, local, mask): (P_b,) pair indices, centre index
            within its element, validity.
        triplet_blocks: per plan triplet block, (p, q, r, local, mask): (T_b,) the pair indices of
            the legs i→j and i→k (sharing the centre), of the leg j→k when ``jk`` is set and the
            block is narrow (else 0), centre index within its element, validity.
        chunk: static S ≥ 1; when S > 1 every triplet block is laid out in chunks of S entries,
            each chunk belonging to a single centre (padded with masked entries), so the
            descriptor can reduce within chunks before the segment sum (T_b is a multiple of S).
        jk: static; True when the ``r`` entries of narrow triplet blocks are valid, which lets the
            descriptor use per-pair radial factors (`jnnp.descriptors.angular`).
    """

    species: np.ndarray
    atom_mask: np.ndarray
    element_atoms: tuple
    element_mask: tuple
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_shift: np.ndarray
    pair_blocks: tuple
    triplet_blocks: tuple
    chunk: int = struct.field(pytree_node=False, default=1)
    jk: bool = struct.field(pytree_node=False, default=False)

    @property
    def n_atoms(self) -> int:
        return self.species.shape[0]

    def sizes(self) -> dict:
        """Array lengths (the static shape signature that determines compilation)."""
        return {"atoms": self.species.shape[0], "pairs": self.pair_i.shape[0],
                "elements": tuple(a.shape[0] for a in self.element_atoms),
                "pair_blocks": tuple(b[0].shape[0] for b in self.pair_blocks),
                "triplet_blocks": tuple(b[0].shape[0] for b in self.triplet_blocks)}


def species_of(numbers, elements) -> np.ndarray:
    """Element index 0..T−1 of each atomic number; ValueError naming an unknown element."""
    numbers = np.asarray(numbers)
    lookup = {int(z): i for i, z in enumerate(elements)}
    unknown = sorted(set(numbers.tolist()) - set(lookup))
    if unknown:
        raise ValueError(f"atomic number(s) {unknown} not among the model's elements {list(elements)}")
    return np.array([lookup[int(z)] for z in numbers], dtype=np.int32)


def chunk_triplets(p, q, r, local, chunk: int):
    """Pad each centre's run of triplets to a multiple of ``chunk`` (masked entries, p = q = r = 0)."""
    if chunk == 1 or len(local) == 0:
        return p, q, r, local, np.ones(len(p), bool)
    starts = np.r_[0, np.flatnonzero(np.diff(local)) + 1]
    counts = np.diff(np.r_[starts, len(local)])
    padded = -(-counts // chunk) * chunk
    new_start = np.r_[0, np.cumsum(padded)[:-1]]
    total = int(padded.sum())
    dest = np.repeat(new_start - starts, counts) + np.arange(len(local))
    P, Q, J = (np.zeros(total, np.int32) for _ in range(3))
    L = np.repeat(local[starts], padded).astype(np.int32)
    M = np.zeros(total, bool)
    P[dest], Q[dest], J[dest], M[dest] = p, q, r, True
    return P, Q, J, L, M


def build_graph(plan, positions, numbers, cell=None, pbc=False, chunk: int | None = None,
                skin: float = 0.0) -> Graph:
    """Build the neighbour graph of one structure for a descriptor plan (numpy, outside jit).

    Every periodic image within the cutoff is included, so cells smaller than twice the cutoff
    are handled exactly.

    Args:
        plan: `jnnp.descriptors.plan.DescriptorPlan`.
        positions: (N, 3) [Å]; numbers: (N,) atomic numbers.
        cell: (3, 3) rows [Å] or None; pbc: bool or (3,) bool.
        chunk: triplet chunk length (see `Graph`); None picks 32 when centres have ≥ 256
            triplets on average (liquids, solids) and 1 otherwise (small molecules).
        skin: extra radius [Å] added to every cutoff when selecting pairs and triplets, so the
            graph stays complete while no atom moves more than skin/2 (pairs beyond a function's
            cutoff contribute exactly zero).

    Returns:
        Graph with exact sizes (no padding except the chunk padding of triplet blocks).
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    species = species_of(numbers, plan.spec.elements)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pl = all_image_pairs(positions, cell, pbc, plan.spec.cutoff + skin)
    element_atoms = [np.flatnonzero(species == c).astype(np.int32) for c in range(len(plan.spec.elements))]
    local = np.zeros(n, dtype=np.int32)
    for atoms in element_atoms:
        local[atoms] = np.arange(len(atoms), dtype=np.int32)
    si, sj, d = species[pl.centers], species[pl.neighbors], pl.distances

    nel = len(plan.spec.elements)
    pair_blocks = [(idx.astype(np.int32), local[pl.centers[idx]], np.ones(len(idx), bool))
                   for idx in _split_by_block(plan.pair_blocks, si * nel + sj, d, skin, (nel, nel))]

    triplet_blocks = []
    if chunk is None:
        n_trip = n_cent = 0
    if plan.triplet_blocks:
        p, q = triplets(pl.centers)
        ej, ek = sj[p], sj[q]
        key = (si[p] * nel + np.minimum(ej, ek)) * nel + np.maximum(ej, ek)
        for b, sel in zip(plan.triplet_blocks, _split_by_block(plan.triplet_blocks, key, np.maximum(d[p], d[q]),
                                                               skin, (nel, nel, nel))):
            tp, tq = p[sel], q[sel]
            tr = np.zeros(len(tp), np.int64)
            if b.narrow:
                # The leg j→k is itself a listed pair whenever r_jk < r_c + skin ≤ cutoff + skin.
                rjk = np.linalg.norm(pl.vectors[tq] - pl.vectors[tp], axis=1)
                tr = pair_index(pl, pl.neighbors[tp], pl.neighbors[tq], pl.shifts[tq] - pl.shifts[tp])
                keep = (rjk < b.rc + skin) & (tr >= 0)
                tp, tq, tr = tp[keep], tq[keep], tr[keep]
            triplet_blocks.append((tp.astype(np.int32), tq.astype(np.int32), tr.astype(np.int32),
                                   local[pl.centers[tp]]))
            if chunk is None:
                n_trip += len(tp)
                n_cent += len(np.unique(pl.centers[tp]))
    if chunk is None:
        chunk = 32 if n_trip >= 256 * max(n_cent, 1) else 1
    triplet_blocks = [chunk_triplets(p, q, r, loc, chunk) for p, q, r, loc in triplet_blocks]

    return Graph(species=species, atom_mask=np.ones(n, bool), element_atoms=tuple(element_atoms),
                 element_mask=tuple(np.ones(len(a), bool) for a in element_atoms),
                 pair_i=pl.centers, pair_j=pl.neighbors, pair_shift=pl.shifts,
                 pair_blocks=tuple(pair_blocks), triplet_blocks=tuple(tuple(b) for b in triplet_blocks),
                 chunk=int(chunk), jk=True)


def _split_by_block(blocks, key, r, skin: float, shape) -> list[np.ndarray]:
    """Per block, the entries (indices into ``key``, ascending) whose element key (the flat index
    of the block's ``key`` in an array of ``shape``) is the block's and whose distance ``r`` is
    below the block's r_c + skin — one sort for all blocks instead of a mask per block."""
    table = np.full(int(np.prod(shape)), len(blocks), np.int64)
    table[[np.ravel_multi_index(b.key, shape) for b in blocks]] = np.arange(len(blocks))
    rc = np.array([b.rc + skin for b in blocks] + [-np.inf])
    bid = table[key]
    bid = np.where(r < rc[bid], bid, len(blocks)).astype(np.int16 if len(blocks) < 2**15 - 1 else np.int64)
    order = np.argsort(bid, kind="stable")  # a radix sort for int16 keys
    bounds = np.searchsorted(bid[order], np.arange(len(blocks) + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(len(blocks))]


def bucket(n: int, granularity: float = 0.125, minimum: int = 8) -> int:
    """Round ``n`` up to a coarse grid (steps of about ``granularity``·n, powers of two), so that
    structures of similar size share one compiled program."""
    if n <= minimum:
        return minimum
    step = max(minimum, 2 ** int(np.floor(np.log2(n * granularity))))
    return int(-(-n // step) * step)


def _pad1(a, size, fill):
    a = np.asarray(a)
    if len(a) > size:
        raise ValueError(f"cannot pad length {len(a)} down to {size}")
    pad = np.full((size - len(a),) + a.shape[1:], fill, dtype=a.dtype)
    return np.concatenate([a, pad])


def graph_sizes(graph: Graph, granularity: float = 0.125) -> dict:
    """Bucketed capacities for `pad_graph` (atoms, pairs, per-element atoms, per-block entries)."""
    S = graph.chunk
    return {"atoms": bucket(graph.n_atoms, granularity),
            "pairs": bucket(graph.pair_i.shape[0] + 1, granularity),
            "elements": tuple(bucket(len(a), granularity) for a in graph.element_atoms),
            "pair_blocks": tuple(bucket(len(b[0]), granularity) for b in graph.pair_blocks),
            "triplet_blocks": tuple(-(-bucket(len(b[0]), granularity) // S) * S for b in graph.triplet_blocks)}


def pad_graph(graph: Graph, sizes: dict, plan) -> Graph:
    """Pad a host graph of ``plan`` to fixed capacities (masked entries; conventions in `Graph`).

    Padding atoms have species 0 and atom_mask False; the caller pads positions to
    ``sizes["atoms"]`` rows (any finite values: no pair refers to them).
    """
    cap_el = sizes["elements"]

    def last_local(c):
        return cap_el[c] - 1

    element_atoms = tuple(_pad1(a, cap, 0) for a, cap in zip(graph.element_atoms, cap_el))
    element_mask = tuple(_pad1(m, cap, False) for m, cap in zip(graph.element_mask, cap_el))
    pair_blocks = []
    for (idx, local, mask), cap, b_c in zip(graph.pair_blocks, sizes["pair_blocks"], (b.key[0] for b in plan.pair_blocks)):
        pair_blocks.append((_pad1(idx, cap, 0), _pad1(local, cap, last_local(b_c)), _pad1(mask, cap, False)))
    triplet_blocks = []
    for (p, q, r, local, mask), cap, b_c in zip(graph.triplet_blocks, sizes["triplet_blocks"],
                                               (b.key[0] for b in plan.triplet_blocks)):
        triplet_blocks.append((_pad1(p, cap, 0), _pad1(q, cap, 0), _pad1(r, cap, 0),
                               _pad1(local, cap, last_local(b_c)), _pad1(mask, cap, False)))
    return Graph(species=_pad1(graph.species, sizes["atoms"], 0),
                 atom_mask=_pad1(graph.atom_mask, sizes["atoms"], False),
                 element_atoms=element_atoms, element_mask=element_mask,
                 pair_i=_pad1(graph.pair_i, sizes["pairs"], 0), pair_j=_pad1(graph.pair_j, sizes["pairs"], 0),
                 pair_shift=_pad1(graph.pair_shift, sizes["pairs"], 0), pair_blocks=tuple(pair_blocks),
                 triplet_blocks=tuple(triplet_blocks), chunk=graph.chunk, jk=graph.jk)
