"""Host-built neighbour graphs for MD, with a jittable validity check (any cell size).

The graph is built with vesin (all periodic images, so small training-size cells work) using
every cutoff + ``skin``; it stays exact while no atom has moved more than skin/2 since the
build — or, when the cell changes (NPT), while `jnnp.geometry.neighbors.graph_invalid` says no
pair can have crossed into a cutoff. ``update`` (jittable) only checks that and raises the
overflow flag; the MD driver then discards the chunk, calls ``reallocate`` at the chunk's start
(in the cell of that moment) and re-runs it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jnnp.geometry.graph import build_graph, graph_sizes, pad_graph
from jnnp.geometry.neighbors import GraphFns, graph_invalid

__all__ = ["HostGraphState", "make_host_graph_fns"]


@struct.dataclass
class HostGraphState:
    """graph: padded `Graph`; reference: (N, 3) positions at build [Å]; reference_cell: (3, 3)
    cell at build [Å]; overflow: () bool, sticky (the graph may miss neighbours)."""

    graph: object
    reference: jnp.ndarray
    reference_cell: jnp.ndarray
    overflow: jnp.ndarray


def make_host_graph_fns(plan, numbers, cell, pbc, skin: float = 1.0, granularity: float = 0.25) -> GraphFns:
    """``allocate(R, dtype=None, cell=None)``, ``update(R, state, cell=None)`` (jit),
    ``reallocate(R, state, cell=None)``, ``describe(state)`` and ``restore(R, description)``.

    ``cell`` (3, 3) [Å] defaults to the constructor's; pass the current one when it changes.
    Capacities are padded by ``granularity`` so that rebuilt graphs usually keep the same shapes
    (no recompilation); a rebuild that outgrows them allocates bigger buffers, and ``reallocate``
    never returns smaller ones than the state it replaces (nor does ``restore``'s description).
    """
    numbers = np.asarray(numbers)
    cell0 = np.asarray(cell, dtype=np.float64)
    half_skin2 = (0.5 * skin) ** 2
    cutoff = float(plan.spec.cutoff)
    sizes = {}

    def _reserve(floor):
        for k, v in floor.items():
            if k != "atoms":
                sizes[k] = _max(tuple(v) if isinstance(v, list) else v, sizes.get(k))

    def allocate(R, dtype=None, cell=None, chunk=None):
        R = np.asarray(R, dtype=np.float64)
        c = cell0 if cell is None else np.asarray(cell, dtype=np.float64)
        g = build_graph(plan, R, numbers, c, pbc, skin=skin, **({} if chunk is None else {"chunk": chunk}))
        need = graph_sizes(g, granularity)
        if not sizes or any(_bigger(need[k], sizes[k]) for k in need):
            sizes.update({k: _max(need[k], sizes.get(k)) for k in need})
        g = pad_graph(g, {**sizes, "atoms": g.n_atoms}, plan)
        dtype = dtype or jnp.float64
        return HostGraphState(graph=g, reference=jnp.asarray(R, dtype), reference_cell=jnp.asarray(c, dtype),
                              overflow=jnp.asarray(False))

    def update(R, state, cell=None, margin=0.0):  # host graphs cannot rebuild in jit: no margin
        if cell is None:
            moved = jnp.max(jnp.sum((R - state.reference) ** 2, axis=-1)) > half_skin2
        else:
            moved = graph_invalid(R, jax.lax.stop_gradient(cell).astype(R.dtype), state.reference,
                                  state.reference_cell, skin, cutoff)
        return state.replace(overflow=state.overflow | moved)

    def reallocate(R, state=None, cell=None):
        if state is not None:
            _reserve(state.graph.sizes())
        return allocate(R, None if state is None else state.reference.dtype, cell,
                        None if state is None else state.graph.chunk)

    def describe(state) -> dict:
        return {"kind": "host", "sizes": state.graph.sizes(), "chunk": int(state.graph.chunk)}

    def restore(R, description, dtype=None):
        if description.get("kind") != "host":
            raise ValueError(f"not a host neighbour graph description: {description}")
        _reserve(description["sizes"])
        return allocate(R, dtype, chunk=int(description["chunk"]))

    return GraphFns(allocate, update, reallocate, describe, restore)


def _bigger(a, b):
    if isinstance(a, tuple):
        return any(x > y for x, y in zip(a, b))
    return a > b


def _max(a, b):
    if b is None:
        return a
    if isinstance(a, tuple):
        return tuple(max(x, y) for x, y in zip(a, b))
    return max(a, b)
