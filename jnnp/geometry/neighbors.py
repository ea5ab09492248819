"""Neighbour graphs built inside jit from a jax-md Dense neighbour list (MD-sized periodic boxes).

`make_graph_fns(plan, cell)` returns jax-md-style ``allocate`` (host), ``update`` (jittable) and
``reallocate`` (host) functions that keep a `jnnp.geometry.Graph` with fixed capacities up to date
during MD, without leaving the device.

Host or jit graph?
    * `jnnp.geometry.build_graph` (vesin, numpy): every periodic image, so any cell, including
      training cells narrower than twice the cutoff; exact sizes; rebuilt outside jit. Use it for
      training, single-point evaluation, and MD in small cells (`jnnp.md.host_graph`).
    * this module: the minimum image only, so every perpendicular cell width must be at least
      2·(cutoff + skin); fixed capacities with an overflow flag; the rebuild runs inside jit
      (e.g. in the body of a ``lax.scan`` over MD steps). Use it for long MD of large boxes.

Layout (what the descriptor relies on): the pair arrays are jax-md's (N, K) slots flattened to
N·K entries, pair p = i·K + slot, with i = j = 0 and shift 0 in empty slots (zero edge vector).
In every block the valid entries come first, sorted by centre, and padded entries have mask
False, index 0 and ``local`` = N_c − 1, so ``local`` is sorted ascending.

Validity: the graph holds every pair and triplet within each block's r_c + skin at build time, so
it is exact while no atom has moved more than skin/2 since then; ``update`` rebuilds (``lax.cond``)
as soon as one has. Lattice shifts are fixed at the build, so positions must not be wrapped
between rebuilds: use an unwrapped ``shift_fn`` for MD (e.g. ``space.periodic_general(box,
fractional_coordinates=False, wrapped=False)``), or call ``update`` with the wrapped positions
before every evaluation (a wrapped atom looks like a large move and forces a rebuild).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax_md import partition, space

from jnnp.geometry.cell import cell_heights
from jnnp.geometry.edges import safe_norm
from jnnp.geometry.graph import Graph, species_of

__all__ = ["JitGraphState", "GraphFns", "make_graph_fns"]

_MARGIN = 1e-3  # Å added to jax-md's search radius (its cell sizes use a float32 box)
_CANDIDATES = 1 << 18  # candidate triplets (centres × slot pairs) examined per scan step


@struct.dataclass
class JitGraphState:
    """Neighbour state carried through MD (a pytree; fine as a ``lax.scan`` carry).

    Attributes:
        graph: `Graph` with fixed capacities (layout in the module docstring).
        nbrs: jax-md Dense `NeighborList` (idx (N, K), fractional reference positions).
        reference: (N, 3) positions at the last build [Å].
        overflow: () bool, sticky: some buffer was too small at a build since allocation; the
            graph is then incomplete and the steps since the overflow must be redone after
            ``reallocate``.
    """

    graph: Graph
    nbrs: partition.NeighborList
    reference: jnp.ndarray
    overflow: jnp.ndarray


class GraphFns(NamedTuple):
    allocate: Callable
    update: Callable
    reallocate: Callable


def _lower_triangular(cell):
    """Rotate a row cell to lower-triangular form (positive diagonal), as jax-md's box needs."""
    q, r = np.linalg.qr(cell.T)
    return (np.sign(np.diag(r))[:, None] * r).T


def make_graph_fns(plan, cell, skin: float = 0.5, capacity_multiplier: float = 1.25,
                   extra_capacity: int = 32, chunk: int | None = None) -> GraphFns:
    """Factories for jit-built neighbour graphs of one periodic cell (host call).

    Args:
        plan: `jnnp.descriptors.plan.DescriptorPlan`.
        cell: (3, 3) lattice vectors as rows [Å], fixed (NVE/NVT), periodic in all directions.
        skin: extra radius [Å]; the graph is valid until an atom has moved skin/2.
        capacity_multiplier: capacities are count × this + ``extra_capacity`` at allocation.
        extra_capacity: slack entries added to every block capacity.
        chunk: triplet chunk length (see `Graph`); None picks 32 or 1 as `build_graph` does.

    Returns:
        GraphFns ``allocate(positions, numbers[, capacity_multiplier]) -> JitGraphState`` (host:
        sizes capacities from the current structure), ``update(positions, state) -> JitGraphState`` (jittable: rebuilds
        when needed, raises ``state.overflow`` when a buffer is too small) and
        ``reallocate(positions, state) -> JitGraphState`` (host: never smaller capacities, and at
        least count + ``extra_capacity``). positions: (N, 3) [Å], unwrapped.

    Raises:
        ValueError: a cell width below 2·(cutoff + skin), where the minimum image misses
            neighbours (use the all-image host builder then).
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    rcut = plan.spec.cutoff + skin
    if abs(np.linalg.det(cell)) < 1e-10:
        raise ValueError("jit neighbour graphs need a periodic 3D cell; for free or partly periodic "
                         "systems use the host builder jnnp.geometry.build_graph")
    widths = cell_heights(cell)
    if np.any(widths < 2.0 * rcut):
        raise ValueError(
            f"cell widths {np.round(widths, 4).tolist()} Å are below 2·(cutoff + skin) = {2 * rcut:.4f} Å, "
            "so the minimum-image convention misses neighbours; use the all-image host builder "
            "(jnnp.geometry.build_graph, or jnnp.md.host_graph.make_host_graph_fns for MD) or a bigger supercell")
    inv_cell = np.linalg.inv(cell)
    box = _lower_triangular(cell).T  # jax-md box: columns = lattice vectors, upper triangular
    displacement, _ = space.periodic_general(box, fractional_coordinates=True)
    neighbor_fn = partition.neighbor_list(
        displacement, box, rcut + _MARGIN, dr_threshold=0.0, capacity_multiplier=max(1.0, capacity_multiplier),
        format=partition.Dense, fractional_coordinates=True)
    half_skin2 = (0.5 * skin) ** 2
    blocks_of = {}  # centre element -> indices of its triplet blocks
    for k, b in enumerate(plan.triplet_blocks):
        blocks_of.setdefault(b.key[0], []).append(k)

    def fractional(R):
        f = R @ jnp.asarray(inv_cell, R.dtype)
        return f - jnp.floor(f)

    def build(R, idx, species, element_atoms, caps=None, S=1):
        """Graph (and overflow) for capacities ``caps``; with caps None the per-block counts."""
        R = jax.lax.stop_gradient(R)
        N, K = idx.shape
        i32 = jnp.int32
        valid = idx < N
        j = jnp.where(valid, idx, 0).astype(i32)
        i = jnp.where(valid, jnp.arange(N, dtype=i32)[:, None], 0)
        f = R @ jnp.asarray(inv_cell, R.dtype)
        shift = jnp.where(valid[..., None], -jnp.round(f[j] - f[i]), 0.0)
        vec = R[j] - R[i] + shift @ jnp.asarray(cell, R.dtype)
        r, sj, si = safe_norm(vec), species[j], species[i]
        local_of = jnp.zeros(N, i32)
        for atoms in element_atoms:
            local_of = local_of.at[atoms].set(jnp.arange(atoms.shape[0], dtype=i32))
        over = jnp.asarray(False)

        counts, pair_blocks = [], []
        for n, b in enumerate(plan.pair_blocks):
            c, e = b.key
            m = (valid & (si == c) & (sj == e) & (r < b.rc + skin)).reshape(-1)
            count = jnp.sum(m, dtype=i32)
            counts.append(count)
            if caps is not None:
                cap = caps[0][n]
                (sel,) = jnp.nonzero(m, size=cap, fill_value=0)
                ok = jnp.arange(cap) < count
                loc = jnp.where(ok, local_of[i.reshape(-1)[sel]], element_atoms[c].shape[0] - 1)
                pair_blocks.append((sel.astype(i32), loc.astype(i32), ok))
                over |= count > cap

        ta, tb = (jnp.asarray(a, i32) for a in np.triu_indices(K, 1))
        trip, tcounts = {}, {}
        for c, ks in blocks_of.items():
            rows, Nc = element_atoms[c], element_atoms[c].shape[0]
            B = max(1, min(Nc, _CANDIDATES // max(1, len(ta))))
            n_chunks = -(-Nc // B)
            rows_p = jnp.pad(rows, (0, n_chunks * B - Nc)).reshape(n_chunks, B)
            row_ok = (jnp.arange(n_chunks * B) < Nc).reshape(n_chunks, B)
            narrow_rc = {plan.triplet_blocks[k].rc for k in ks if plan.triplet_blocks[k].narrow}

            def step(carry, xs, ks=ks, narrow_rc=narrow_rc):
                rws, rok, first = xs
                vv = valid[rws] & rok[:, None]
                ss, rr, vc = sj[rws], r[rws], vec[rws]
                both = vv[:, ta] & vv[:, tb]
                lo, hi = jnp.minimum(ss[:, ta], ss[:, tb]), jnp.maximum(ss[:, ta], ss[:, tb])
                rmax = jnp.maximum(rr[:, ta], rr[:, tb])
                rjk = safe_norm(vc[:, tb] - vc[:, ta]) if narrow_rc else None
                out, ys = [], []
                for k, acc in zip(ks, carry if caps is not None else [None] * len(ks)):
                    b = plan.triplet_blocks[k]
                    m = both & (lo == b.key[1]) & (hi == b.key[2]) & (rmax < b.rc + skin)
                    if b.narrow:
                        m &= rjk < b.rc + skin
                    n_r = jnp.sum(m, axis=1, dtype=i32)
                    ys.append(n_r)
                    if caps is None:
                        continue
                    p_arr, q_arr, m_arr, s_arr, off = acc
                    cap = p_arr.shape[0]
                    m_r = -(-n_r // S) * S
                    start = off + jnp.cumsum(m_r, dtype=i32) - m_r
                    dest = jnp.where(m, start[:, None] + jnp.cumsum(m, axis=1, dtype=i32) - 1, cap)
                    base = rws[:, None] * K
                    p_arr = p_arr.at[dest].set(base + ta, mode="drop")
                    q_arr = q_arr.at[dest].set(base + tb, mode="drop")
                    m_arr = m_arr.at[dest].set(True, mode="drop")
                    s_arr = s_arr.at[jnp.where(m_r > 0, start, cap)].set(first + jnp.arange(B, dtype=i32),
                                                                         mode="drop")
                    out.append((p_arr, q_arr, m_arr, s_arr, off + jnp.sum(m_r, dtype=i32)))
                return out, ys

            if caps is None:
                init = []
            else:
                init = [(jnp.zeros(caps[1][k], i32), jnp.zeros(caps[1][k], i32), jnp.zeros(caps[1][k], bool),
                         jnp.full(caps[1][k], -1, i32), jnp.asarray(0, i32)) for k in ks]
            firsts = jnp.arange(n_chunks, dtype=i32) * B
            final, ys = jax.lax.scan(step, init, (rows_p, row_ok, firsts))
            for n, k in enumerate(ks):
                tcounts[k] = ys[n].reshape(-1)[:Nc]
                if caps is not None:
                    p_arr, q_arr, m_arr, s_arr, total = final[n]
                    loc = jax.lax.cummax(s_arr, axis=0)
                    loc = jnp.where(jnp.arange(s_arr.shape[0]) < total, loc, Nc - 1)
                    trip[k] = (p_arr, q_arr, loc, m_arr)
                    over |= total > s_arr.shape[0]
        if caps is None:
            return counts, [tcounts[k] for k in range(len(plan.triplet_blocks))]
        graph = Graph(species=species, atom_mask=jnp.ones(N, bool), element_atoms=tuple(element_atoms),
                      element_mask=tuple(jnp.ones(a.shape[0], bool) for a in element_atoms),
                      pair_i=i.reshape(-1), pair_j=j.reshape(-1), pair_shift=shift.reshape(-1, 3).astype(i32),
                      pair_blocks=tuple(pair_blocks),
                      triplet_blocks=tuple(trip[k] for k in range(len(plan.triplet_blocks))), chunk=S)
        return graph, over

    count_jit = jax.jit(build)
    build_jit = jax.jit(build, static_argnames=("caps", "S"))

    def caps_of(graph):
        return (tuple(b[0].shape[0] for b in graph.pair_blocks),
                tuple(b[0].shape[0] for b in graph.triplet_blocks))

    def _allocate(positions, species, multiplier, floor=None, S=None):
        R = jnp.asarray(positions)
        element_atoms = tuple(jnp.asarray(np.flatnonzero(species == c), jnp.int32)
                              for c in range(len(plan.spec.elements)))
        species = jnp.asarray(species, jnp.int32)
        nbrs = neighbor_fn.allocate(fractional(R))
        if floor is not None and nbrs.max_occupancy < floor[2]:
            nbrs = neighbor_fn.allocate(fractional(R), extra_capacity=floor[2] - nbrs.max_occupancy)
        pc, tc = jax.device_get(count_jit(R, nbrs.idx, species, element_atoms))
        if S is None:
            S = chunk or 1
            if chunk is None and sum(int(t.sum()) for t in tc) >= 256 * max(1, sum(int((t > 0).sum()) for t in tc)):
                S = 32
        sizes = lambda n, S: -(-(int(n * multiplier) + extra_capacity) // S) * S
        n_c = [len(element_atoms[b.key[0]]) for b in plan.pair_blocks + plan.triplet_blocks]
        caps = [sizes(int(n), 1) for n in pc] + [sizes(int((-(-t // S) * S).sum()), S) for t in tc]
        caps = [cap if nc else 0 for cap, nc in zip(caps, n_c)]
        if floor is not None:
            caps = [max(a, b) for a, b in zip(caps, floor[0] + floor[1])]
        caps = (tuple(caps[:len(pc)]), tuple(caps[len(pc):]))
        graph, over = build_jit(R, nbrs.idx, species, element_atoms, caps=caps, S=S)
        return JitGraphState(graph=graph, nbrs=nbrs, reference=R,
                             overflow=over | nbrs.did_buffer_overflow.astype(bool))

    def allocate(positions, numbers, capacity_multiplier=capacity_multiplier) -> JitGraphState:
        return _allocate(positions, species_of(numbers, plan.spec.elements), capacity_multiplier)

    def reallocate(positions, state: JitGraphState) -> JitGraphState:
        floor = caps_of(state.graph) + (state.nbrs.max_occupancy,)
        return _allocate(positions, np.asarray(state.graph.species), max(1.0, capacity_multiplier), floor,
                         state.graph.chunk)

    def update(positions, state: JitGraphState) -> JitGraphState:
        R = positions.astype(state.reference.dtype)
        moved = jnp.max(jnp.sum((R - state.reference) ** 2, axis=-1)) > half_skin2

        def rebuild(state):
            nbrs = neighbor_fn.update(fractional(R), state.nbrs)
            g = state.graph
            graph, over = build(R, nbrs.idx, g.species, g.element_atoms, caps_of(g), g.chunk)
            over = over | nbrs.did_buffer_overflow.astype(bool)
            return JitGraphState(graph=graph, nbrs=nbrs, reference=R, overflow=state.overflow | over)

        return jax.lax.cond(moved, rebuild, lambda s: s, state)

    return GraphFns(allocate, update, reallocate)
