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
False, index 0 and ``local`` = N_c − 1, so ``local`` is sorted ascending (with triplet chunks
S > 1 each centre's run is padded to whole chunks, as `build_graph` does). Triplets are found
per centre among its (W_e1 × W_e2) neighbour slots of elements e1, e2 (per-row lists with a
fixed width W_e), in chunks of centres (``lax.scan``), so the temporaries of a rebuild stay near
100 MB whatever the number of atoms (1080 water atoms, r_c 6.35 Å, skin 0.5 Å: K = 182,
3.2 M triplets, 48 MB graph, 77 MB temporaries, rebuild ≈ 0.7 s on 2 CPU cores). Narrow
triplets also get the pair index of their leg j→k (binary search in j's sorted row, ``Graph.jk``)
so that the descriptor can use per-pair radial factors (`jnnp.descriptors.angular`).

Validity: the graph holds every pair and triplet within each block's r_c + skin at build time, so
it is exact while no atom has moved more than skin/2 since then; ``update`` rebuilds (``lax.cond``)
as soon as one has. Lattice shifts are fixed at the build, so positions must not be wrapped
between rebuilds: use an unwrapped ``shift_fn`` for MD (e.g. jax-md's ``space.periodic_general(
cell.T, fractional_coordinates=False, wrapped=False)``), or call ``update`` with the wrapped
positions before every evaluation (a wrapped atom looks like a large move and forces a rebuild).

Changing cells (NPT): pass the current cell to ``update(positions, state, cell)``. The graph is
then rebuilt in that cell, and between rebuilds `graph_invalid` accounts for the strain of the
cell since the build as well as the atoms' moves (lattice shifts are integers, so a graph stays
exact while no pair can have crossed into a cutoff). A cell compressed until the minimum image
no longer holds (width < 2·(cutoff + skin)) raises the overflow flag, and ``reallocate`` then
raises ValueError.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jnnp.geometry.cell import cell_heights
from jnnp.geometry.edges import safe_norm
from jnnp.geometry.graph import Graph, species_of

if TYPE_CHECKING:
    from jax_md import partition

__all__ = ["GraphFns", "JitGraphState", "make_graph_fns"]

_MARGIN = 1e-3  # Å added to jax-md's search radius (its cell sizes use a float32 box)
_CANDIDATES = 1 << 20  # candidate triplets (centres × W_e1·W_e2 slot pairs) per scan step


@struct.dataclass
class JitGraphState:
    """Neighbour state carried through MD (a pytree; fine as a ``lax.scan`` carry).

    Attributes:
        graph: `Graph` with fixed capacities (layout in the module docstring).
        nbrs: jax-md Dense `NeighborList` (idx (N, K), fractional reference positions).
        reference: (N, 3) positions at the last build [Å].
        reference_cell: (3, 3) cell at the last build [Å] (rows).
        overflow: () bool, sticky: some buffer was too small at a build since allocation; the
            graph is then incomplete and the steps since the overflow must be redone after
            ``reallocate``.
        caps: static capacities (pair blocks, triplet blocks, per-element neighbour slots W_e).
        alloc_cell: static cell (9 floats) of the last allocation, which sized jax-md's cell list.
    """

    graph: Graph
    nbrs: partition.NeighborList
    reference: jnp.ndarray
    reference_cell: jnp.ndarray
    overflow: jnp.ndarray
    caps: tuple = struct.field(pytree_node=False, default=((), (), ()))
    alloc_cell: tuple = struct.field(pytree_node=False, default=())


class GraphFns(NamedTuple):
    """Neighbour-graph lifecycle (see `make_graph_fns`; `jnnp.md.host_graph` has the same).

    ``describe(state) -> dict`` (JSON) names the static capacities of a state (its shapes), and
    ``restore(positions, [numbers,] description) -> state`` (arguments as ``allocate``) returns a
    template with exactly that pytree structure, whose leaves the caller replaces by saved arrays
    (MD restart files; the template's leaves may be shape placeholders).
    """

    allocate: Callable
    update: Callable
    reallocate: Callable
    describe: Callable | None = None
    restore: Callable | None = None


def graph_invalid(positions, cell, reference, reference_cell, skin: float, cutoff: float, margin=0.0):
    """True (jittable) when a graph built at (``reference``, ``reference_cell``) with radius
    r_c + ``skin`` may miss a pair or triplet within r_c ≤ ``cutoff`` at (``positions``, ``cell``)
    — or could once each atom has moved ``margin`` (scalar or (N,) [Å]) further.

    With A = cell_ref⁻¹·cell, x = R·A⁻¹ (the atoms carried back to the build cell) and
    m = max |x − R_ref|, every pair vector changed by at most 2m before the strain A, which
    shortens it by at most σ_min(A). A pair outside r_c + skin at the build is therefore still
    outside r_c while σ_min·(r_c + skin − 2m) ≥ r_c, i.e. 2m ≤ skin − r_c·(1/σ_min − 1) for
    σ_min < 1 (compression); 2m ≤ skin suffices otherwise. For cell = cell_ref this is the usual
    "no atom moved more than skin/2". Distances between two neighbours (triplets) obey the same
    bound. Shapes: positions/reference (N, 3) [Å], cells (3, 3) rows [Å].
    """
    A = jnp.linalg.solve(reference_cell, cell)
    x = jnp.linalg.solve(A.T, positions.T).T
    m = jnp.max(safe_norm(x - reference) + margin)
    sigma = jnp.linalg.svd(A, compute_uv=False)[-1]
    allowed = 0.5 * (skin - cutoff * jnp.maximum(1.0 / sigma - 1.0, 0.0))
    return (allowed < 0) | (m > jnp.maximum(allowed, 0.0))


def _heights(cell):
    """Perpendicular widths (3,) of a cell (jnp, jittable)."""
    cross = jnp.cross(cell[jnp.array([1, 2, 0])], cell[jnp.array([2, 0, 1])])
    return jnp.abs(jnp.linalg.det(cell)) / jnp.linalg.norm(cross, axis=1)


def _box_of(cell):
    """jax-md box (columns, upper triangular) of a row cell, jittable (same metric as the cell)."""
    _, r = jnp.linalg.qr(cell.T)
    return jnp.triu(jnp.sign(jnp.diag(r))[:, None] * r)


def _quiet(fn, *args, **kwargs):
    """Call jax-md without its FutureWarning (0.2.29 scatters int64 indices into int32 under x64)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "scatter inputs have incompatible types", FutureWarning)
        return fn(*args, **kwargs)


def _lower_triangular(cell):
    """Rotate a row cell to lower-triangular form (positive diagonal), as jax-md's box needs."""
    _, r = np.linalg.qr(cell.T)
    return (np.sign(np.diag(r))[:, None] * r).T


def _pair_slot(rows_sorted, order, a, b):
    """Slot of neighbour ``b`` in row ``a`` of a jax-md Dense list, by binary search.

    Args:
        rows_sorted: (N, K) the list's rows sorted ascending; order: (N, K) their argsort.
        a, b: (T,) int32 atoms.

    Returns:
        ((T,) int32 slot s with idx[a, s] == b where found, (T,) bool found). Each row lists an
        atom at most once (minimum image), so the slot is unique.
    """
    K = rows_sorted.shape[1]
    lo, hi = jnp.zeros_like(a), jnp.full_like(a, K)
    for _ in range(max(1, K).bit_length()):  # lower bound of b in rows_sorted[a]
        mid = (lo + hi) // 2
        below = rows_sorted[a, jnp.minimum(mid, K - 1)] < b
        lo, hi = jnp.where(below, mid + 1, lo), jnp.where(below, hi, mid)
    lo = jnp.minimum(lo, K - 1)
    return order[a, lo], rows_sorted[a, lo] == b


def _candidates(block, W1: int, W2: int):
    """Static flat indices w1·W2 + w2 of the slot pairs a triplet block considers: None for all
    W1 × W2 (two neighbour elements), the strict upper triangle when both legs come from the same
    element's slot list (each unordered pair once, half the candidates)."""
    if block.key[1] != block.key[2]:
        return None
    return np.flatnonzero(np.triu(np.ones((W1, W2), bool), 1)).astype(np.int32)


def make_graph_fns(plan, cell, skin: float = 0.5, capacity_multiplier: float = 1.25,
                   extra_capacity: int = 32, chunk: int | None = None, parts: int = 1,
                   axis_name: str = "parts") -> GraphFns:
    """Factories for jit-built neighbour graphs of one periodic cell (host call).

    Args:
        plan: `jnnp.descriptors.plan.DescriptorPlan`.
        cell: (3, 3) lattice vectors as rows [Å], periodic in all directions: the cell of
            ``allocate``/``update`` unless they are given another one (NPT).
        skin: extra radius [Å]; the graph is valid until an atom has moved skin/2.
        capacity_multiplier: block capacities are count × this + ``extra_capacity`` at
            allocation, per-row neighbour slot widths W_e are max count × this + 4; jax-md's Dense
            width K uses the same factor (at least 1).
        extra_capacity: slack entries added to every block capacity.
        chunk: triplet chunk length (see `Graph`); None picks 32 or 1 as `build_graph` does.
        parts: split the centre atoms over this many devices (`jnnp.md.parallel`): the state's
            leaves then get a leading axis of length ``parts``, slice p listing the pairs and
            triplets of part p's centres (every atom's row of pairs stays, for the j→k legs);
            every ``parts``-th atom of each element goes to a part, which balances the work
            whatever the atom order. ``update`` must then run on one slice per device inside
            ``shard_map`` over the mesh axis ``axis_name`` (the parts agree on overflow by a
            ``psum``); ``allocate``/``reallocate`` take and return stacked states.

    Returns:
        GraphFns ``allocate(positions, numbers[, capacity_multiplier], cell=None) ->
        JitGraphState`` (host: sizes capacities from the current structure; the multiplier can be
        overridden, e.g. to test overflow handling), ``update(positions, state, cell=None, margin=0)
        -> JitGraphState`` (jittable: rebuilds when needed, i.e. when an atom is within ``margin``
        (scalar or per atom (N,) [Å]) of having moved skin/2 — a margin ≥ the coming step's move
        spares redoing that step; raises ``state.overflow`` when a buffer is too small; ``cell`` =
        the current cell when it changes), ``reallocate(positions, state, cell=None) ->
        JitGraphState`` (host: never smaller capacities, and at least count + ``extra_capacity``),
        and ``describe``/``restore`` (see `GraphFns`). positions: (N, 3) [Å], unwrapped.

    Raises:
        ValueError: a cell width below 2·(cutoff + skin), where the minimum image misses
            neighbours (use the all-image host builder then).
    """
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    rcut = plan.spec.cutoff + skin
    if parts < 1:
        raise ValueError(f"parts must be ≥ 1, got {parts}")
    if abs(np.linalg.det(cell)) < 1e-10:
        raise ValueError("jit neighbour graphs need a periodic 3D cell; for free or partly periodic "
                         "systems use the host builder jnnp.geometry.build_graph")
    widths = cell_heights(cell)
    if np.any(widths < 2.0 * rcut):
        raise ValueError(
            f"cell widths {np.round(widths, 4).tolist()} Å are below 2·(cutoff + skin) = {2 * rcut:.4f} "
            "Å, so the minimum-image convention misses neighbours; use the all-image host builder "
            "(jnnp.geometry.build_graph, or jnnp.md.host_graph.make_host_graph_fns for MD) or a "
            "bigger supercell")
    cell0 = cell
    box = _lower_triangular(cell).T  # jax-md box: columns = lattice vectors, upper triangular
    from jax_md import partition, space  # imported on use: importing jax-md takes seconds

    displacement, _ = space.periodic_general(box, fractional_coordinates=True)
    neighbor_fn = partition.neighbor_list(  # dr_threshold 0: rebuilds whenever asked (our lax.cond)
        displacement, box, rcut + _MARGIN, dr_threshold=0.0, format=partition.Dense,
        capacity_multiplier=max(1.0, capacity_multiplier), fractional_coordinates=True)
    rc_max = float(plan.spec.cutoff)
    nel = len(plan.spec.elements)
    blocks_of = {}  # centre element -> indices of its triplet blocks
    slot_rc = np.full((nel, nel), -np.inf)  # [c, e]: radius of the element-e slot lists of centres c
    for k, b in enumerate(plan.triplet_blocks):
        blocks_of.setdefault(b.key[0], []).append(k)
        for e in b.key[1:]:
            slot_rc[b.key[0], e] = max(slot_rc[b.key[0], e], b.rc + skin)

    def fractional(R, cell):
        f = R @ jnp.linalg.inv(cell)
        return f - jnp.floor(f)

    def build(R, cell, idx, species, element_atoms, element_mask, caps=None, S=1):
        """(Graph, overflow) in ``cell`` for static ``caps``; with caps None the counts that size them.
        ``element_atoms``/``element_mask``: the centres (per element, padded) this graph lists."""
        R, cell = jax.lax.stop_gradient(R), jax.lax.stop_gradient(cell)
        N, K = idx.shape
        i32 = jnp.int32
        valid = idx < N
        j = jnp.where(valid, idx, 0).astype(i32)
        i = jnp.where(valid, jnp.arange(N, dtype=i32)[:, None], 0)
        f = R @ jnp.linalg.inv(cell)
        shift = jnp.where(valid[..., None], -jnp.round(f[j] - f[i]), 0.0)  # minimum image at build
        vec = R[j] - R[i] + shift @ cell
        r, sj, si = safe_norm(vec), species[j], species[i]
        local_of, own = jnp.zeros(N, i32), jnp.zeros(N, bool)
        for atoms, ok in zip(element_atoms, element_mask):
            target = jnp.where(ok, atoms, N)  # padding centres scatter nowhere
            local_of = local_of.at[target].set(jnp.arange(atoms.shape[0], dtype=i32), mode="drop")
            own = own.at[target].set(True, mode="drop")
        valid_centre = valid & own[:, None]  # every row's pairs stay listed (j→k legs); blocks: own centres
        over = jnp.asarray(False)

        counts, pair_blocks = [[], [], []], []
        for n, b in enumerate(plan.pair_blocks):
            c, e = b.key
            m = (valid_centre & (si == c) & (sj == e) & (r < b.rc + skin)).reshape(-1)
            count = jnp.sum(m, dtype=i32)
            counts[0].append(count)
            if caps is not None:
                cap = caps[0][n]
                dest = jnp.where(m, jnp.cumsum(m, dtype=i32) - 1, cap)
                sel = jnp.zeros(cap, i32).at[dest].set(jnp.arange(m.shape[0], dtype=i32), mode="drop")
                ok = jnp.arange(cap) < count
                loc = jnp.where(ok, local_of[i.reshape(-1)[sel]], element_atoms[c].shape[0] - 1)
                pair_blocks.append((sel, loc, ok))
                over |= count > cap

        # Per row, the slots of each neighbour element within the triplet radius: (N, W_e) lists.
        slots, slot_ok = [], []
        for e in range(nel if plan.triplet_blocks else 0):
            m = valid & (sj == e) & (r < jnp.asarray(slot_rc[:, e], r.dtype)[si])
            cnt = jnp.sum(m, axis=1, dtype=i32)
            W = max(K, 1) if caps is None else caps[2][e]
            pos = jnp.where(m, jnp.cumsum(m, axis=1, dtype=i32) - 1, W)
            slots.append(jnp.zeros((N, W), i32).at[jnp.arange(N)[:, None], pos].set(
                jnp.arange(K, dtype=i32), mode="drop"))
            slot_ok.append(jnp.arange(W) < cnt[:, None])
            counts[2].append(jnp.max(cnt))
            over |= jnp.max(cnt) > W

        trip, tcounts = {}, {}
        if caps is not None and any(b.narrow for b in plan.triplet_blocks):
            order = jnp.argsort(idx, axis=1).astype(i32)  # rows sorted by neighbour (empty slots N last)
            rows_sorted = jnp.take_along_axis(idx, order, axis=1)
        for c, ks in blocks_of.items():
            rows, Nc = element_atoms[c], element_atoms[c].shape[0]
            blocks = [plan.triplet_blocks[k] for k in ks]
            dims = [(slots[b.key[1]].shape[1], slots[b.key[2]].shape[1]) for b in blocks]
            B = max(1, min(Nc, _CANDIDATES // max(w1 * w2 for w1, w2 in dims)))
            n_chunks = -(-Nc // B)
            rows_p = jnp.pad(rows, (0, n_chunks * B - Nc)).reshape(n_chunks, B)
            row_ok = jnp.pad(element_mask[c], (0, n_chunks * B - Nc)).reshape(n_chunks, B)

            def step(carry, xs, blocks=blocks, dims=dims, ks=ks, B=B):
                rws, rok, first = xs
                rr, vc = r[rws], vec[rws]
                out, ys = [], []
                for n, (b, (W1, W2)) in enumerate(zip(blocks, dims)):
                    s1, s2 = slots[b.key[1]][rws], slots[b.key[2]][rws]
                    r1, r2 = jnp.take_along_axis(rr, s1, 1), jnp.take_along_axis(rr, s2, 1)
                    ok1, ok2 = slot_ok[b.key[1]][rws] & rok[:, None], slot_ok[b.key[2]][rws]
                    m = (ok1[:, :, None] & ok2[:, None, :]
                         & (jnp.maximum(r1[:, :, None], r2[:, None, :]) < b.rc + skin))
                    if b.narrow:  # r_jk² from the Gram matrix
                        v1, v2 = (jnp.take_along_axis(vc, s[..., None], 1) for s in (s1, s2))
                        rjk2 = (r1[:, :, None] ** 2 + r2[:, None, :] ** 2
                                - 2.0 * jnp.einsum("bkx,blx->bkl", v1, v2))
                        m &= rjk2 < (b.rc + skin) ** 2
                    m = m.reshape(B, W1 * W2)
                    cols = _candidates(b, W1, W2)
                    if cols is not None:  # each unordered pair of slots once: only the upper triangle
                        m = m[:, cols]
                    n_r = jnp.sum(m, axis=1, dtype=i32)
                    ys.append(n_r)
                    if caps is None:
                        continue
                    buf, off = carry[n]
                    m_r = -(-n_r // S) * S  # each centre's run padded to whole chunks of S
                    start = off + jnp.cumsum(m_r, dtype=i32) - m_r
                    dest = jnp.where(m, start[:, None] + jnp.cumsum(m, axis=1, dtype=i32) - 1, buf.shape[0])
                    key = ((first + jnp.arange(B, dtype=i32))[:, None] * (W1 * W2)  # (local, w1, w2)
                           + (jnp.arange(W1 * W2, dtype=i32) if cols is None else jnp.asarray(cols)))
                    out.append((buf.at[dest].set(key, mode="drop"), off + jnp.sum(m_r, dtype=i32)))
                return (carry if caps is None else out), ys

            init = () if caps is None else [(jnp.full(caps[1][k], -1, i32), jnp.asarray(0, i32)) for k in ks]
            final, ys = jax.lax.scan(step, init, (rows_p, row_ok, jnp.arange(n_chunks, dtype=i32) * B))
            for n, (k, b, (W1, W2)) in enumerate(zip(ks, blocks, dims)):
                tcounts[k] = ys[n].reshape(-1)[:Nc]
                if caps is None:
                    continue
                keys, total = final[n]
                ok = keys >= 0
                key = jnp.maximum(jax.lax.cummax(keys, axis=0), 0)  # padding takes its centre's key
                inside = jnp.arange(keys.shape[0]) < total
                loc = jnp.where(inside, key // (W1 * W2), Nc - 1)
                row = rows[jnp.where(inside, loc, 0)]
                a = slots[b.key[1]][row, key % (W1 * W2) // W2]
                q = slots[b.key[2]][row, key % W2]
                jk = jnp.zeros_like(keys)
                if b.narrow:  # pair index of the leg j→k, listed since r_jk < r_c + skin (masked above)
                    j_atom = j[row, a]
                    slot, found = _pair_slot(rows_sorted, order, j_atom, j[row, q])
                    over |= jnp.any(ok & ~found)  # only possible with an overflowed jax-md list
                    jk = jnp.where(ok, j_atom * K + slot, 0)
                trip[k] = (jnp.where(ok, row * K + a, 0), jnp.where(ok, row * K + q, 0), jk, loc, ok)
                over |= total > keys.shape[0]
        if caps is None:
            return counts[0], [tcounts[k] for k in range(len(plan.triplet_blocks))], counts[2]
        graph = Graph(species=species, atom_mask=jnp.ones(N, bool), element_atoms=tuple(element_atoms),
                      element_mask=tuple(element_mask),
                      pair_i=i.reshape(-1), pair_j=j.reshape(-1), pair_shift=shift.reshape(-1, 3).astype(i32),
                      pair_blocks=tuple(pair_blocks),
                      triplet_blocks=tuple(trip[k] for k in range(len(plan.triplet_blocks))), chunk=S, jk=True)
        return graph, over

    count_jit = jax.jit(build)
    build_jit = jax.jit(build, static_argnames=("caps", "S"))
    fix_cell = lambda cell, dtype: jnp.asarray(cell0 if cell is None else cell, dtype)
    stack = lambda xs: jax.tree.map(lambda *a: jnp.stack(a), *xs)

    def centres_of(species):
        """Per part: (element_atoms, element_mask), each atom of element c going to part
        (its rank among the element's atoms) mod ``parts``; padded to equal lengths."""
        out = []
        for p in range(parts):
            atoms, masks = [], []
            for c_ in range(nel):
                all_c = np.flatnonzero(species == c_)
                mine = all_c[p::parts]
                n = -(-len(all_c) // parts)
                atoms.append(jnp.asarray(np.pad(mine, (0, n - len(mine))), jnp.int32))
                masks.append(jnp.asarray(np.arange(n) < len(mine)))
            out.append((tuple(atoms), tuple(masks)))
        return out

    def _allocate(positions, species, multiplier, floor=None, S=None, cell=None, exact=None):
        R = jnp.asarray(positions)
        c = fix_cell(cell, R.dtype)
        if cell is not None:
            widths = cell_heights(np.asarray(c, np.float64))
            if np.any(widths < 2.0 * rcut):
                raise ValueError(
                    f"the cell has shrunk to widths {np.round(widths, 4).tolist()} Å, below 2·(cutoff + skin) = "
                    f"{2 * rcut:.4f} Å, where the minimum image misses neighbours; use the all-image host "
                    "builder (neighbors: host) or a bigger supercell")
        box_kw = {} if cell is None else {"box": _box_of(c.astype(jnp.float64))}
        centres = centres_of(species)
        species = jnp.asarray(species, jnp.int32)
        nbrs = _quiet(neighbor_fn.allocate, fractional(R, c), **box_kw)
        alloc_cell = tuple(float(x) for x in np.asarray(c, np.float64).reshape(-1))

        def state_of(graphs, over, caps):
            st = JitGraphState(graph=graphs[0], nbrs=nbrs, reference=R, reference_cell=c, caps=caps,
                               alloc_cell=alloc_cell, overflow=over)
            if parts == 1:
                return st
            return stack([st.replace(graph=g) for g in graphs])  # one slice per part

        if exact is not None:  # a template with exactly these static capacities (restart files)
            nbrs = dataclasses.replace(nbrs, max_occupancy=int(exact["max_occupancy"]),
                                       cell_list_capacity=exact["cell_list_capacity"])
            caps, S = tuple(tuple(int(x) for x in part) for part in exact["caps"]), int(exact["chunk"])
            graphs = [jax.eval_shape(lambda *a: build(*a, caps=caps, S=S)[0], R, c, nbrs.idx, species, *cm)
                      for cm in centres]
            graphs = [jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), g) for g in graphs]
            return state_of(graphs, jnp.asarray(True), caps)
        if floor is not None and nbrs.max_occupancy < floor[1]:  # never narrower than before
            nbrs = _quiet(neighbor_fn.allocate, fractional(R, c), extra_capacity=floor[1] - nbrs.max_occupancy,
                          **box_kw)
        K = nbrs.max_occupancy
        counts = [jax.device_get(count_jit(R, c, nbrs.idx, species, *cm)) for cm in centres]
        if S is None:
            S = chunk or 1
            n_trip = sum(int(t.sum()) for _, tc, _ in counts for t in tc)
            n_cent = sum(int((t > 0).sum()) for _, tc, _ in counts for t in tc)
            if chunk is None and n_trip >= 256 * max(1, n_cent):  # as build_graph chooses
                S = 32
        size = lambda n, S: -(-(int(n * multiplier) + extra_capacity) // S) * S
        n_c = [len(centres[0][0][b.key[0]]) for b in plan.pair_blocks + plan.triplet_blocks]
        caps = [max(size(int(n), 1) for n in col) for col in zip(*(pc for pc, _, _ in counts))]
        caps += [max(size(int((-(-t // S) * S).sum()), S) for t in col) for col in zip(*(tc for _, tc, _ in counts))]
        caps = [cap if nc else 0 for cap, nc in zip(caps, n_c)]
        slot_w = tuple(max(1, min(K, int(max(int(w) for w in col) * multiplier) + 4))
                       for col in zip(*(wc for _, _, wc in counts)))
        caps = (tuple(caps[:len(plan.pair_blocks)]), tuple(caps[len(plan.pair_blocks):]), slot_w)
        if floor is not None:
            caps = tuple(tuple(max(a, b) for a, b in zip(new, old)) for new, old in zip(caps, floor[0]))
        if plan.triplet_blocks and max(len(a) for a in centres[0][0]) * max(caps[2]) ** 2 >= 2 ** 31:
            raise ValueError(f"{len(R)} atoms × {max(caps[2])}² slot pairs overflow int32 triplet keys")
        built = [build_jit(R, c, nbrs.idx, species, *cm, caps=caps, S=S) for cm in centres]
        over = functools.reduce(jnp.logical_or, [o for _, o in built]) | nbrs.did_buffer_overflow.astype(bool)
        return state_of([g for g, _ in built], over, caps)

    def allocate(positions, numbers, capacity_multiplier=capacity_multiplier, cell=None) -> JitGraphState:
        return _allocate(positions, species_of(numbers, plan.spec.elements), capacity_multiplier, cell=cell)

    def reallocate(positions, state: JitGraphState, cell=None) -> JitGraphState:
        species = np.asarray(state.graph.species).reshape(-1, np.shape(positions)[0])[0]
        return _allocate(positions, species, max(1.0, capacity_multiplier),
                         (state.caps, state.nbrs.max_occupancy), state.graph.chunk, cell=cell)

    def update(positions, state: JitGraphState, cell=None, margin=0.0) -> JitGraphState:
        R = positions.astype(state.reference.dtype)
        if cell is None:  # the allocation cell throughout
            c, box_kw = state.reference_cell, {}
            moved = jnp.max(safe_norm(R - state.reference) + margin) > 0.5 * skin
        else:
            c = jax.lax.stop_gradient(cell).astype(R.dtype)
            box_kw = {"box": _box_of(c)}
            moved = graph_invalid(R, c, state.reference, state.reference_cell, skin, rc_max, margin)

        def rebuild(state):
            nbrs = _quiet(neighbor_fn.update, fractional(R, c), state.nbrs, **box_kw)
            g = state.graph
            graph, over = build(R, c, nbrs.idx, g.species, g.element_atoms, g.element_mask, state.caps, g.chunk)
            if parts > 1:  # every part must agree, or the parts' trajectories would part ways
                over = jax.lax.psum(over.astype(jnp.int32), axis_name) > 0
            over = state.overflow | over | nbrs.did_buffer_overflow.astype(bool)
            if cell is not None:  # jax-md's cells too small after a compression; minimum image lost
                over |= nbrs.cell_size_too_small.astype(bool) | jnp.any(_heights(c) < 2.0 * rcut)
            return state.replace(graph=graph, nbrs=nbrs, reference=R, reference_cell=c, overflow=over)

        return jax.lax.cond(moved, rebuild, lambda s: s, state)

    def describe(state: JitGraphState) -> dict:
        return {"kind": "jit", "caps": state.caps, "max_occupancy": int(state.nbrs.max_occupancy),
                "cell_list_capacity": state.nbrs.cell_list_capacity, "chunk": int(state.graph.chunk),
                "alloc_cell": list(state.alloc_cell), "parts": parts}

    def restore(positions, numbers, description: dict) -> JitGraphState:
        if description.get("kind") != "jit":
            raise ValueError(f"not a jit neighbour graph description: {description}")
        if int(description.get("parts", 1)) != parts:
            raise ValueError(f"the neighbour graph was saved in {description.get('parts', 1)} parts, this run "
                             f"splits it in {parts} (devices changed?)")
        cell = np.asarray(description["alloc_cell"], np.float64).reshape(3, 3)
        same = np.array_equal(cell, np.asarray(cell0))
        return _allocate(positions, species_of(numbers, plan.spec.elements), capacity_multiplier,
                         cell=None if same else cell, exact=description)

    return GraphFns(allocate, update, reallocate, describe, restore)
