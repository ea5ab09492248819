"""Energy, forces and stress of one structure with its atoms shared out over several devices.

XLA:CPU runs most of the descriptor kernel on one thread, so a second core would idle. Started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (set before JAX is imported) the host
offers D CPU devices that execute concurrently; `split_graph` divides the centre atoms of a host
graph into D parts of about equal work (pairs + triplets), and `make_sharded_properties_fn` runs
the usual `make_properties_fn` on every part under ``shard_map`` and adds the parts up with
``psum``. The same split serves several GPUs.

Each part's graph keeps every atom (positions are replicated) but lists only its own centres,
their pairs and triplets, and the pairs those triplets use as legs (the j→k leg of a narrow
triplet belongs to another centre). The atomic energies of the parts add up to the total energy,
so their gradients add up to the forces and the virial. The parts are padded to common shapes
(`jnnp.geometry.graph.pad_graph`) and stacked along a leading axis, one slice per device.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jnnp.geometry.graph import Graph, pad_graph
from jnnp.model.properties import make_properties_fn

__all__ = ["split_graph", "shard_graph", "make_sharded_properties_fn", "cpu_mesh"]

_AXIS = "parts"


def cpu_mesh(devices=None) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of the default backend)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), (_AXIS,))


def _owner(graph: Graph, parts: int) -> np.ndarray:
    """(N,) part of each atom: contiguous index ranges with about equal pairs + triplets."""
    pair_i = np.asarray(graph.pair_i)
    work = np.bincount(pair_i, minlength=graph.n_atoms).astype(np.float64)
    for p, _, _, _, mask in graph.triplet_blocks:
        work += np.bincount(pair_i[np.asarray(p)[np.asarray(mask)]], minlength=graph.n_atoms)
    cum = np.cumsum(work)
    mid = cum - 0.5 * work                     # an atom goes where the middle of its work falls
    total = cum[-1] if len(cum) else 0.0
    return np.minimum((mid * parts / max(total, 1.0)).astype(int), parts - 1)


def _part(graph: Graph, plan, own: np.ndarray) -> Graph:
    """The sub-graph of the centre atoms with ``own`` True (exact sizes, numpy arrays)."""
    pair_i = np.asarray(graph.pair_i)
    element_atoms, local_map = [], []
    for atoms in graph.element_atoms:
        atoms = np.asarray(atoms)
        keep = own[atoms]
        remap = np.zeros(len(atoms), np.int32)
        remap[keep] = np.arange(int(keep.sum()), dtype=np.int32)
        element_atoms.append(atoms[keep])
        local_map.append(remap)
    used = [np.zeros(1, np.int64)]             # pair 0 stays: padding entries point at it
    pair_blocks = []
    for (idx, local, mask), b in zip(graph.pair_blocks, plan.pair_blocks):
        idx, local, mask = np.asarray(idx), np.asarray(local), np.asarray(mask)
        keep = own[pair_i[idx]] & mask
        pair_blocks.append((idx[keep], local_map[b.key[0]][local[keep]], mask[keep]))
        used.append(idx[keep])
    S = graph.chunk
    trip_blocks = []
    for (p, q, r, local, mask), b in zip(graph.triplet_blocks, plan.triplet_blocks):
        p, q, r, local, mask = (np.asarray(a) for a in (p, q, r, local, mask))
        # a chunk of S entries belongs to one centre (its local index is that of every entry)
        centre = np.asarray(graph.element_atoms[b.key[0]])[local.reshape(-1, S)[:, 0]]
        keep = np.repeat(own[centre] & mask.reshape(-1, S).any(axis=1), S)
        trip_blocks.append((p[keep], q[keep], r[keep], local_map[b.key[0]][local[keep]], mask[keep]))
        used += [p[keep & mask], q[keep & mask], r[keep & mask]]
    pairs = np.unique(np.concatenate(used))
    renum = lambda x: np.searchsorted(pairs, x).astype(np.int32)
    return graph.replace(
        element_atoms=tuple(a.astype(np.int32) for a in element_atoms),
        element_mask=tuple(np.ones(len(a), bool) for a in element_atoms),
        pair_i=pair_i[pairs].astype(np.int32), pair_j=np.asarray(graph.pair_j)[pairs].astype(np.int32),
        pair_shift=np.asarray(graph.pair_shift)[pairs],
        pair_blocks=tuple((renum(i), loc, m) for i, loc, m in pair_blocks),
        triplet_blocks=tuple((renum(p), renum(q), renum(r), loc, m) for p, q, r, loc, m in trip_blocks))


def split_graph(graph: Graph, plan, parts: int) -> Graph:
    """Split a host graph (`jnnp.geometry.build_graph`, unpadded) of ``plan`` into ``parts``
    sub-graphs of about equal work, padded to common shapes and stacked along a new leading
    axis (every leaf gets shape (parts, ...)). Parts may be empty (tiny systems): they
    contribute zero."""
    if parts < 1:
        raise ValueError(f"parts must be ≥ 1, got {parts}")
    owner = _owner(graph, parts)
    subs = [_part(graph, plan, owner == k) for k in range(parts)]
    sizes = [g.sizes() for g in subs]

    def largest(key, least):   # per entry of sizes[key], the largest over the parts (≥ least)
        return tuple(max(least, *col) for col in zip(*(s[key] for s in sizes)))

    cap = {"atoms": graph.n_atoms, "pairs": max(s["pairs"] for s in sizes) + 1,
           "elements": largest("elements", 1), "pair_blocks": largest("pair_blocks", 1),
           "triplet_blocks": largest("triplet_blocks", graph.chunk)}
    padded = [pad_graph(g, cap, plan) for g in subs]
    return jax.tree.map(lambda *xs: np.stack(xs), *padded)


def shard_graph(stacked: Graph, mesh: Mesh) -> Graph:
    """Place the parts of a `split_graph` result one per device of ``mesh``."""
    return jax.device_put(stacked, NamedSharding(mesh, PartitionSpec(_AXIS)))


def make_sharded_properties_fn(energy_fn, mesh: Mesh, *, stress: bool = True, atomic_energy_fn=None):
    """Jitted ``properties_fn(params, positions, cell, stacked_graph) -> dict`` that evaluates
    `jnnp.model.properties.make_properties_fn` on each part of a `split_graph` result on its
    own device of ``mesh`` (as many parts as devices) and sums the parts.

    Same outputs and units as `make_properties_fn`: energy [eV], forces (N, 3) [eV/Å], stress
    [eV/Å³] and virial [eV], per-atom energies [eV]. Differentiable like it (reverse mode).
    """
    props = make_properties_fn(energy_fn, stress=stress, atomic_energy_fn=atomic_energy_fn)
    rep, split = PartitionSpec(), PartitionSpec(_AXIS)

    def part(params, positions, cell, graph):
        out = props(params, positions, cell, jax.tree.map(lambda x: x[0], graph))
        return jax.tree.map(lambda x: jax.lax.psum(x, _AXIS), out)

    return jax.jit(jax.shard_map(part, mesh=mesh, in_specs=(rep, rep, rep, split), out_specs=rep,
                                 check_vma=False))
