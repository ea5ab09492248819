"""Padded, fixed-shape batches of structures and their energy/forces/stress function.

A `Batch` is the disjoint union of B structures: one `Graph` whose atom and pair indices are
offset per structure, per-element atom lists concatenated (so the per-element ``local`` index of
a block entry counts that element's atoms over the whole batch and stays sorted), and all
arrays padded to capacities chosen by `BatchSizer`. Structures keep their own cells: the host
stores each pair's lattice shift already multiplied by its structure's cell, as a Cartesian
offset [Å] in ``graph.pair_shift`` (float), and the descriptor is called with cell = I, for
which ``edge_vectors`` (R_j − R_i + shift @ cell) is exact. Stress uses a per-structure strain
ε_s applied to the positions and to these offsets, R → R (1 + ε_s)ᵀ, which is the same
derivative as straining each cell.

Capacities: every size q (atoms, pairs, atoms per element, entries per pair/triplet block) has a
reference r_q = max(B · mean_q + 2 √B · std_q, max_q) over the data set's structures (the upper
end of the typical batch total); a batch with needs n_q gets capacities ⌈r_q g^k⌉ for the
smallest integer k (g = ``growth``, default 1.25) with n_q ≤ r_q g^k for all q, rounded up to
a coarse grid (`jnnp.geometry.graph.bucket`, so that similar data sets share shapes). So one integer k
names the shape, and XLA compiles one program per level k that occurs: for a homogeneous
training set nearly every batch has level 0 (partial batches are padded to level 0 too).

Neighbour graphs are built once per structure (`build_graphs`), optionally cached on disk as
``.npz`` keyed by a hash of the descriptor spec and of the structures' geometry.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jnnp.descriptors.plan import make_plan
from jnnp.geometry.graph import Graph, bucket, build_graph, chunk_triplets, pad_graph
from jnnp.model.potential import make_atomic_energy_fn

__all__ = ["Batch", "BatchSizer", "Batcher", "build_graphs", "collate", "graph_cache_key",
           "make_batch_energy_fn", "make_batch_properties_fn"]


@struct.dataclass
class Batch:
    """B structures as one padded disjoint union (host numpy arrays; a pytree for jit).

    Attributes:
        graph: union `Graph`; ``pair_shift`` holds float Cartesian image offsets [Å].
        positions: (A, 3) [Å], zeros for padding atoms.
        atom_structure: (A,) int32 structure slot of each atom (0 for padding atoms).
        structure_mask: (B,) bool, False for empty padding slots.
        n_atoms: (B,) float number of atoms per slot (1 for empty slots, avoids 0/0).
        energy: (B,) [eV]; forces: (A, 3) [eV/Å]; stress: (B, 3, 3) [eV/Å³] (0 where absent).
        volume: (B,) cell volume [Å³] (0 for free structures).
        has_energy, has_forces, has_stress: (B,) bool label availability.
        index: (B,) int32 position of each structure in the list it came from (−1: padding).
    """

    graph: Graph
    positions: np.ndarray
    atom_structure: np.ndarray
    structure_mask: np.ndarray
    n_atoms: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    volume: np.ndarray
    has_energy: np.ndarray
    has_forces: np.ndarray
    has_stress: np.ndarray
    index: np.ndarray

    @property
    def n_structures(self) -> int:
        return self.structure_mask.shape[0]

    @property
    def shape_key(self) -> tuple:
        """Hashable shape signature (one compiled program per key)."""
        s = self.graph.sizes()
        return (self.n_structures, s["atoms"], s["pairs"], s["elements"], s["pair_blocks"],
                s["triplet_blocks"], self.graph.chunk)


# ----------------------------------------------------------------------------------------------
# Neighbour graphs: build once, cache
# ----------------------------------------------------------------------------------------------

def graph_cache_key(spec, structures) -> str:
    """Hex digest of the descriptor spec and the geometry (Z, R, cell, pbc) of every structure."""
    h = hashlib.sha256(repr(spec).encode())
    for s in structures:
        for a in (s.numbers.astype(np.int64), s.positions, s.cell, s.pbc.astype(np.int8)):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    return h.hexdigest()


def _auto_chunk(graphs) -> int:
    n_trip = n_cent = 0
    for g in graphs:
        for p, q, r, local, mask in g.triplet_blocks:
            n_trip += len(p)
            n_cent += len(np.unique(local))
    return 32 if n_trip >= 256 * max(n_cent, 1) else 1


def _rechunk(g: Graph, chunk: int) -> Graph:
    if chunk == 1:
        return g
    tb = tuple(chunk_triplets(p, q, r, local, chunk) for p, q, r, local, _ in g.triplet_blocks)
    return g.replace(triplet_blocks=tb, chunk=chunk)


_FIELDS = ("species", "pair_i", "pair_j", "pair_shift")
_TRIPLET_FIELDS = ("p", "q", "r", "local", "mask")


def _save_graphs(path: Path, graphs, key: str) -> None:
    arrays = {"key": np.frombuffer(key.encode(), np.uint8),
              "chunk": np.asarray(graphs[0].chunk if graphs else 1),
              "jk": np.asarray(all(g.jk for g in graphs))}
    arrays["n_atoms"] = np.array([g.n_atoms for g in graphs], np.int64)
    arrays["n_pairs"] = np.array([len(g.pair_i) for g in graphs], np.int64)
    for f in _FIELDS:
        arrays[f] = np.concatenate([np.asarray(getattr(g, f)) for g in graphs]) if graphs else np.zeros(0)
    n_el = len(graphs[0].element_atoms) if graphs else 0
    n_pb = len(graphs[0].pair_blocks) if graphs else 0
    n_tb = len(graphs[0].triplet_blocks) if graphs else 0
    def counts(rows, width):
        return np.array(rows, np.int64).reshape(len(rows), width)

    arrays["n_el"] = counts([[len(a) for a in g.element_atoms] for g in graphs], n_el)
    arrays["n_pb"] = counts([[len(b[0]) for b in g.pair_blocks] for g in graphs], n_pb)
    arrays["n_tb"] = counts([[len(b[0]) for b in g.triplet_blocks] for g in graphs], n_tb)
    for c in range(n_el):
        arrays[f"el{c}"] = np.concatenate([g.element_atoms[c] for g in graphs])
    for b in range(n_pb):
        for k, name in enumerate(("idx", "local")):
            arrays[f"pb{b}_{name}"] = np.concatenate([g.pair_blocks[b][k] for g in graphs])
    for b in range(n_tb):
        for k, name in enumerate(_TRIPLET_FIELDS):
            arrays[f"tb{b}_{name}"] = np.concatenate([g.triplet_blocks[b][k] for g in graphs])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_graphs(path: Path, key: str):
    with np.load(path, allow_pickle=False) as z:
        if bytes(z["key"]).decode() != key or "jk" not in z.files:  # other data or an older layout
            return None
        chunk, jk = int(z["chunk"]), bool(z["jk"])
        n = len(z["n_atoms"])

        def split(name, counts):
            return np.split(z[name], np.cumsum(counts)[:-1]) if n else []

        fields = {f: split(f, z["n_pairs"] if f != "species" else z["n_atoms"]) for f in _FIELDS}
        els = [split(f"el{c}", z["n_el"][:, c]) for c in range(z["n_el"].shape[1])]
        pbs = [[split(f"pb{b}_{k}", z["n_pb"][:, b]) for k in ("idx", "local")]
               for b in range(z["n_pb"].shape[1])]
        tbs = [[split(f"tb{b}_{k}", z["n_tb"][:, b]) for k in _TRIPLET_FIELDS]
               for b in range(z["n_tb"].shape[1])]
    graphs = []
    for i in range(n):
        na = len(fields["species"][i])
        graphs.append(Graph(
            species=fields["species"][i], atom_mask=np.ones(na, bool),
            element_atoms=tuple(e[i] for e in els), element_mask=tuple(np.ones(len(e[i]), bool) for e in els),
            pair_i=fields["pair_i"][i], pair_j=fields["pair_j"][i], pair_shift=fields["pair_shift"][i],
            pair_blocks=tuple((b[0][i], b[1][i], np.ones(len(b[0][i]), bool)) for b in pbs),
            triplet_blocks=tuple(tuple(x[i] for x in b) for b in tbs), chunk=chunk, jk=jk))
    return graphs


def build_graphs(spec, structures, *, chunk: int | None = None, cache_dir=None, progress: bool = False):
    """Neighbour graphs (exact sizes, host numpy) of ``structures`` for a `DescriptorSpec`.

    Args:
        spec: `DescriptorSpec` (or `PotentialSpec`, whose descriptor is used).
        structures: sequence of `Structure`.
        chunk: common triplet chunk length of all graphs; None picks 32 when centres have ≥ 256
            triplets on average over the data, else 1 (as `build_graph` does per structure).
        cache_dir: directory for an ``.npz`` cache (``graphs-<hash>.npz``); None: no disk cache.
        progress: show a tqdm bar (if installed) while building.

    Returns:
        list of `Graph`, one per structure, all with the same ``chunk``.
    """
    spec = getattr(spec, "descriptor", spec)
    structures = list(structures)
    key = graph_cache_key((spec, chunk), structures)
    path = Path(cache_dir) / f"graphs-{key[:20]}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            graphs = _load_graphs(path, key)
        except (OSError, ValueError, KeyError):
            graphs = None
        if graphs is not None:
            return graphs
    plan = make_plan(spec)
    it = structures
    if progress:
        try:
            from tqdm.auto import tqdm
            it = tqdm(structures, desc="neighbour lists", leave=False)
        except ImportError:  # pragma: no cover
            pass
    graphs = [build_graph(plan, s.positions, s.numbers, s.cell, s.pbc, chunk=1) for s in it]
    S = _auto_chunk(graphs) if chunk is None else int(chunk)
    graphs = [_rechunk(g, S) for g in graphs]
    if path is not None:
        _save_graphs(path, graphs, key)
    return graphs


# ----------------------------------------------------------------------------------------------
# Capacities
# ----------------------------------------------------------------------------------------------

def _needs(g: Graph) -> np.ndarray:
    """Vector of sizes [atoms, pairs, per-element atoms…, per pair block…, per triplet block…]."""
    return np.array([g.n_atoms, len(g.pair_i), *(len(a) for a in g.element_atoms),
                     *(len(b[0]) for b in g.pair_blocks), *(len(b[0]) for b in g.triplet_blocks)],
                    dtype=np.int64)


class BatchSizer:
    """Capacities for batches of ``batch_size`` structures (module docstring: levels g^k).

    Args:
        graphs: the per-structure graphs of the data set (defines the references r_q).
        batch_size: structure slots B per batch.
        growth: ratio g between consecutive capacity levels (> 1).
        min_level: lowest level used (default 0: partial batches are padded like full ones,
            which saves a compilation); None for no lower bound.
        reference: references r_q to use instead of this data set's (another sizer's
            ``reference`` for the same plan and batch size: its batches then get the same
            capacity levels, hence reuse the same compiled programs).
    """

    def __init__(self, graphs, batch_size: int, growth: float = 1.25, min_level: int | None = 0,
                 reference=None):
        if not graphs:
            raise ValueError("need at least one structure to size batches")
        if growth <= 1.0:
            raise ValueError(f"growth must be > 1, got {growth}")
        self.batch_size = int(batch_size)
        self.growth = float(growth)
        self.min_level = min_level
        g0 = graphs[0]
        self.chunk = g0.chunk
        self.n_el, self.n_pb, self.n_tb = len(g0.element_atoms), len(g0.pair_blocks), len(g0.triplet_blocks)
        self.needs = np.stack([_needs(g) for g in graphs])
        B = self.batch_size
        mean, std = self.needs.mean(0), self.needs.std(0)
        self.reference = np.maximum(B * mean + 2.0 * np.sqrt(B) * std, self.needs.max(0))
        if reference is not None:
            reference = np.asarray(reference, dtype=np.float64)
            if reference.shape != self.reference.shape:
                raise ValueError(f"reference capacities of shape {reference.shape} do not match this "
                                 f"plan's {self.reference.shape}")
            self.reference = reference

    def level(self, need) -> int:
        """Smallest integer k with need ≤ reference · g^k for every size."""
        need = np.asarray(need, dtype=np.float64)
        ok = self.reference > 0
        ratio = float(np.max(need[ok] / self.reference[ok])) if ok.any() else 1.0
        if ratio <= 0:
            return 0
        k = math.ceil(math.log(ratio) / math.log(self.growth) - 1e-9)
        if self.min_level is not None:
            k = max(k, self.min_level)
        while np.any(self._caps(k) < need):
            k += 1
        return k

    def _caps(self, k: int) -> np.ndarray:
        raw = np.ceil(self.reference * self.growth**k - 1e-9).astype(np.int64)
        # coarse rounding (steps of ≈1/8, at least 8) so that similar data sets (e.g. the
        # validation and test splits of one system) share shapes, hence compiled programs
        caps = np.array([bucket(int(x)) if x > 0 else 0 for x in raw], np.int64)
        S = self.chunk
        t0 = 2 + self.n_el + self.n_pb
        caps[t0:] = -(-caps[t0:] // S) * S
        return caps

    def sizes(self, members) -> dict:
        """Capacities (the ``sizes`` dict of `pad_graph`) for the structures ``members``."""
        need = self.needs[np.asarray(members, dtype=np.int64)].sum(0)
        caps = self._caps(self.level(need))
        n_el, n_pb = self.n_el, self.n_pb
        return {"atoms": int(max(caps[0], 1)), "pairs": int(max(caps[1], 1)),
                "elements": tuple(int(x) for x in caps[2:2 + n_el]),
                "pair_blocks": tuple(int(x) for x in caps[2 + n_el:2 + n_el + n_pb]),
                "triplet_blocks": tuple(int(x) for x in caps[2 + n_el + n_pb:])}


# ----------------------------------------------------------------------------------------------
# Collation
# ----------------------------------------------------------------------------------------------

def collate(structures, graphs, sizes: dict, plan, n_slots: int, indices=None) -> Batch:
    """Disjoint union of ``structures`` (with their exact ``graphs``) padded to ``sizes``.

    Args:
        structures, graphs: equal-length sequences (at most ``n_slots``).
        sizes: capacities, as returned by `BatchSizer.sizes` (or `jnnp.geometry.graph.graph_sizes`).
        plan: `DescriptorPlan` of the graphs.
        n_slots: structure slots B (empty slots are masked).
        indices: optional dataset index of each structure (stored in ``Batch.index``).
    """
    n = len(structures)
    if n > n_slots:
        raise ValueError(f"{n} structures do not fit into {n_slots} slots")
    if n == 0:
        raise ValueError("cannot collate an empty batch")
    n_el = len(graphs[0].element_atoms)
    a0 = p0 = 0
    species, pair_i, pair_j, offsets = [], [], [], []
    elem = [[] for _ in range(n_el)]
    pblocks = [([], []) for _ in graphs[0].pair_blocks]
    tblocks = [([], [], [], [], []) for _ in graphs[0].triplet_blocks]
    atom_structure = []
    for s_idx, (s, g) in enumerate(zip(structures, graphs)):
        species.append(g.species)
        atom_structure.append(np.full(g.n_atoms, s_idx, np.int32))
        pair_i.append(g.pair_i + a0)
        pair_j.append(g.pair_j + a0)
        offsets.append(np.asarray(g.pair_shift, np.float64) @ s.cell)
        for c in range(n_el):
            elem[c].append(g.element_atoms[c] + a0)
        for (idx, local, _), acc in zip(g.pair_blocks, pblocks):
            acc[0].append(idx + p0)
            acc[1].append(local)
        for (p, q, r, local, mask), acc in zip(g.triplet_blocks, tblocks):
            acc[0].append(p + p0)
            acc[1].append(q + p0)
            acc[2].append(r + p0)
            acc[3].append(local)
            acc[4].append(mask)
        a0 += g.n_atoms
        p0 += len(g.pair_i)
    # local indices: offset by the number of atoms of the centre element in earlier structures
    counts = np.array([[len(a) for a in g.element_atoms] for g in graphs], np.int64)
    starts = np.vstack([np.zeros((1, n_el), np.int64), np.cumsum(counts, 0)[:-1]])

    def cat(xs, dtype):
        return np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)

    pair_blocks = []
    for b, (idx, local) in zip(plan.pair_blocks, pblocks):
        c = b.key[0]
        local = [lo + starts[k, c] for k, lo in enumerate(local)]
        pair_blocks.append((cat(idx, np.int32), cat(local, np.int32), np.ones(sum(map(len, idx)), bool)))
    triplet_blocks = []
    for b, (p, q, r, local, mask) in zip(plan.triplet_blocks, tblocks):
        c = b.key[0]
        local = [lo + starts[k, c] for k, lo in enumerate(local)]
        triplet_blocks.append((cat(p, np.int32), cat(q, np.int32), cat(r, np.int32), cat(local, np.int32),
                               cat(mask, bool)))
    n_atoms = a0
    union = Graph(species=cat(species, np.int32), atom_mask=np.ones(n_atoms, bool),
                  element_atoms=tuple(cat(e, np.int32) for e in elem),
                  element_mask=tuple(np.ones(int(counts[:, c].sum()), bool) for c in range(n_el)),
                  pair_i=cat(pair_i, np.int32), pair_j=cat(pair_j, np.int32),
                  pair_shift=np.concatenate(offsets).astype(np.float64).reshape(-1, 3),
                  pair_blocks=tuple(pair_blocks), triplet_blocks=tuple(triplet_blocks), chunk=graphs[0].chunk,
                  jk=all(g.jk for g in graphs))
    graph = pad_graph(union, sizes, plan)
    A = sizes["atoms"]
    positions = np.zeros((A, 3))
    forces = np.zeros((A, 3))
    a_struct = np.zeros(A, np.int32)
    a_struct[:n_atoms] = np.concatenate(atom_structure)
    B = int(n_slots)
    energy, volume = np.zeros(B), np.zeros(B)
    stress = np.zeros((B, 3, 3))
    has_e, has_f, has_s = np.zeros(B, bool), np.zeros(B, bool), np.zeros(B, bool)
    nat = np.ones(B)
    smask = np.zeros(B, bool)
    index = np.full(B, -1, np.int32)
    a0 = 0
    for k, s in enumerate(structures):
        na = s.n_atoms
        positions[a0:a0 + na] = s.positions
        smask[k] = True
        nat[k] = na
        volume[k] = s.volume
        index[k] = k if indices is None else int(indices[k])
        if s.energy is not None:
            energy[k], has_e[k] = s.energy, True
        if s.forces is not None:
            forces[a0:a0 + na], has_f[k] = s.forces, True
        if s.stress is not None and s.periodic:
            stress[k], has_s[k] = s.stress, True
        a0 += na
    return Batch(graph=graph, positions=positions, atom_structure=a_struct, structure_mask=smask,
                 n_atoms=nat, energy=energy, forces=forces, stress=stress, volume=volume,
                 has_energy=has_e, has_forces=has_f, has_stress=has_s, index=index)


class Batcher:
    """Batches of a fixed list of structures: graphs built once, capacities by `BatchSizer`.

    Args:
        spec: `PotentialSpec` or `DescriptorSpec`.
        structures: sequence of `Structure` (a `Dataset` works).
        batch_size: structure slots per batch.
        graphs: precomputed graphs (else built with `build_graphs`).
        cache_dir: disk cache for the graphs (see `build_graphs`).
        growth: capacity level ratio (see `BatchSizer`).
        reference: capacity references of another Batcher's sizer (see `BatchSizer`).
    """

    def __init__(self, spec, structures, batch_size: int, *, graphs=None, cache_dir=None,
                 growth: float = 1.25, chunk: int | None = None, progress: bool = False, reference=None):
        desc = getattr(spec, "descriptor", spec)
        self.plan = make_plan(desc)
        self.structures = list(structures)
        self.graphs = list(graphs) if graphs is not None else build_graphs(
            desc, self.structures, chunk=chunk, cache_dir=cache_dir, progress=progress)
        if len(self.graphs) != len(self.structures):
            raise ValueError("need one graph per structure")
        self.batch_size = int(batch_size)
        self.sizer = (BatchSizer(self.graphs, self.batch_size, growth, reference=reference)
                      if self.structures else None)

    def __len__(self) -> int:
        return len(self.structures)

    def n_batches(self, drop_last: bool = False) -> int:
        n, B = len(self.structures), self.batch_size
        return n // B if drop_last else -(-n // B)

    def batch(self, members) -> Batch:
        """The batch of the structures at positions ``members`` (at most ``batch_size``)."""
        members = [int(i) for i in members]
        return collate([self.structures[i] for i in members], [self.graphs[i] for i in members],
                       self.sizer.sizes(members), self.plan, self.batch_size, indices=members)

    def order(self, epoch: int | None = None, seed: int = 0) -> np.ndarray:
        """Structure order of an epoch: a permutation seeded by (seed, epoch), or 0..n−1."""
        n = len(self.structures)
        if epoch is None:
            return np.arange(n)
        return np.random.default_rng([int(seed), int(epoch)]).permutation(n)

    def batches(self, epoch: int | None = None, seed: int = 0, drop_last: bool = False, start: int = 0):
        """Iterate over the batches of an epoch (shuffled by (seed, epoch); None: in order),
        starting at batch number ``start``."""
        order = self.order(epoch, seed)
        B = self.batch_size
        for k in range(start, self.n_batches(drop_last)):
            yield self.batch(order[k * B:(k + 1) * B])


# ----------------------------------------------------------------------------------------------
# Energy, forces, stress of a batch
# ----------------------------------------------------------------------------------------------

def _param_dtype(params):
    return jnp.asarray(params["energy"]["scale"]).dtype


def make_batch_energy_fn(spec):
    """``batch_energy_fn(params, batch, positions=None, strain=None) -> (B,)`` energies [eV].

    Args of the returned function:
        params: potential parameters; batch: `Batch`.
        positions: (A, 3) to use instead of ``batch.positions`` (e.g. to differentiate).
        strain: optional (B, 3, 3) per-structure strain ε_s: positions and image offsets of
            structure s are mapped x → x (1 + ε_s)ᵀ (for the stress).

    Differentiable w.r.t. params, positions and strain. Empty slots get energy 0.
    """
    atomic_energy_fn = make_atomic_energy_fn(spec)

    def batch_energy_fn(params, batch, positions=None, strain=None):
        dtype = _param_dtype(params)
        pos = (batch.positions if positions is None else positions).astype(dtype)
        offsets = jnp.asarray(batch.graph.pair_shift).astype(dtype)
        B = batch.structure_mask.shape[0]
        if strain is not None:
            deform = jnp.eye(3, dtype=dtype) + strain.astype(dtype)
            pos = jnp.einsum("aj,akj->ak", pos, deform[batch.atom_structure])
            pair_struct = batch.atom_structure[batch.graph.pair_i]
            offsets = jnp.einsum("pj,pkj->pk", offsets, deform[pair_struct])
        graph = batch.graph.replace(pair_shift=offsets)
        e_atom = atomic_energy_fn(params, pos, jnp.eye(3, dtype=dtype), graph)
        return jax.ops.segment_sum(e_atom, batch.atom_structure, num_segments=B)

    batch_energy_fn.atomic_energy_fn = atomic_energy_fn
    return batch_energy_fn


def make_batch_properties_fn(spec, *, forces: bool = True, stress: bool = False):
    """``properties_fn(params, batch) -> dict`` with ``energy`` (B,) [eV], and optionally
    ``forces`` (A, 3) [eV/Å] (F = −∂E/∂R) and ``stress`` (B, 3, 3) [eV/Å³] (σ = (1/V) ∂E/∂ε,
    ASE sign; 0 for free structures). Differentiable w.r.t. params (also through the forces)."""
    energy_fn = make_batch_energy_fn(spec)

    def properties_fn(params, batch):
        dtype = _param_dtype(params)
        pos = jnp.asarray(batch.positions).astype(dtype)
        B = batch.structure_mask.shape[0]
        if not forces and not stress:
            return {"energy": energy_fn(params, batch, pos)}

        def total(pos, strain):
            e = energy_fn(params, batch, pos, strain)
            return jnp.sum(e), e

        strain = jnp.zeros((B, 3, 3), dtype) if stress else None
        argnums = (0, 1) if stress else 0
        grads, e = jax.grad(total, argnums=argnums, has_aux=True)(pos, strain)
        out = {"energy": e}
        g_pos = grads[0] if stress else grads
        if forces:
            out["forces"] = -g_pos
        if stress:
            g = grads[1]
            g = 0.5 * (g + jnp.swapaxes(g, 1, 2))
            vol = jnp.asarray(batch.volume).astype(dtype)
            out["stress"] = g / jnp.where(vol > 0, vol, 1.0)[:, None, None] * (vol > 0)[:, None, None]
        return out

    return properties_fn
