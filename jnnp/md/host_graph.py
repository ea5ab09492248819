"""Host-built neighbour graphs for MD, with a jittable validity check (any cell size).

The graph is built with vesin (all periodic images, so small training-size cells work) using
every cutoff + ``skin``; it stays exact while no atom has moved more than skin/2 since the
build. ``update`` (jittable) only checks that and raises the overflow flag; the MD driver then
discards the chunk, calls ``reallocate`` at the chunk's start and re-runs it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

from jnnp.geometry.graph import build_graph, graph_sizes, pad_graph
from jnnp.geometry.neighbors import GraphFns

__all__ = ["HostGraphState", "make_host_graph_fns"]


@struct.dataclass
class HostGraphState:
    graph: object
    reference: jnp.ndarray  # (N, 3) positions at build time [Å]
    overflow: jnp.ndarray  # () bool, sticky


def make_host_graph_fns(plan, numbers, cell, pbc, skin: float = 1.0, granularity: float = 0.25) -> GraphFns:
    """``allocate(R)``, ``update(R, state)`` (jit) and ``reallocate(R, state)`` for host graphs.

    Capacities are padded by ``granularity`` so that rebuilt graphs usually keep the same
    shapes (no recompilation); a rebuild that outgrows them allocates bigger buffers.
    """
    numbers = np.asarray(numbers)
    cell = np.asarray(cell, dtype=np.float64)
    half_skin2 = (0.5 * skin) ** 2
    sizes = {}

    def allocate(R, dtype=None):
        R = np.asarray(R, dtype=np.float64)
        g = build_graph(plan, R, numbers, cell, pbc, skin=skin)
        need = graph_sizes(g, granularity)
        if not sizes or any(_bigger(need[k], sizes[k]) for k in need):
            sizes.update({k: _max(need[k], sizes.get(k)) for k in need})
        g = pad_graph(g, {**sizes, "atoms": g.n_atoms}, plan)
        return HostGraphState(graph=g, reference=jnp.asarray(R, dtype or jnp.float64),
                              overflow=jnp.asarray(False))

    def update(R, state):
        moved = jnp.max(jnp.sum((R - state.reference) ** 2, axis=-1))
        return state.replace(overflow=state.overflow | (moved > half_skin2))

    def reallocate(R, state=None):
        return allocate(R, None if state is None else state.reference.dtype)

    return GraphFns(allocate, update, reallocate)


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
