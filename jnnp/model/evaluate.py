"""Convenience evaluation of a `Potential` on `Structure` objects (host in, numpy out).

Compiled functions are cached per `PotentialSpec`; a new graph size recompiles (the descriptor
shapes are static), so for many structures of varying size use the padded batches of
`jnnp.train`, and for MD `jnnp.md`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.plan import make_plan
from jnnp.geometry.graph import build_graph, graph_sizes, pad_graph
from jnnp.model.potential import Potential, PotentialSpec, make_energy_fn
from jnnp.model.properties import make_properties_fn

__all__ = ["compute", "energy_and_forces", "energy", "graph_for", "compiled_properties"]


@functools.lru_cache(maxsize=32)
def compiled_properties(spec: PotentialSpec, stress: bool = True, atomic: bool = True):
    """Jitted ``properties_fn(params, positions, cell, graph) -> dict`` for a spec (cached)."""
    efn = make_energy_fn(spec)
    return jax.jit(make_properties_fn(efn, stress=stress,
                                      atomic_energy_fn=efn.atomic_energy_fn if atomic else None))


@functools.lru_cache(maxsize=32)
def _plan(spec):
    return make_plan(spec)


def graph_for(potential: Potential, structure):
    """Neighbour graph (all periodic images) of ``structure`` for ``potential``'s descriptors."""
    return build_graph(_plan(potential.spec.descriptor), structure.positions, structure.numbers,
                       structure.cell, structure.pbc)


def padded_inputs(potential: Potential, structure, dtype):
    """(positions, cell, graph) padded to bucketed sizes, so similar structures share a program."""
    plan = _plan(potential.spec.descriptor)
    graph = build_graph(plan, structure.positions, structure.numbers, structure.cell, structure.pbc)
    graph = pad_graph(graph, graph_sizes(graph), plan)
    pos = np.zeros((graph.n_atoms, 3))
    pos[: structure.n_atoms] = structure.positions
    return jnp.asarray(pos, dtype), jnp.asarray(structure.cell, dtype), graph


def compute(potential: Potential, structure, *, stress: bool | None = None) -> dict:
    """Energy [eV], forces [eV/Å], per-atom energies [eV] and, for periodic cells, stress [eV/Å³].

    Positions are evaluated in the dtype of the potential's parameters (float64 or float32).
    Neighbour arrays are padded to bucketed sizes, so a relaxation or a series of similar
    structures reuses the compiled program.
    Returns a dict of numpy float64 arrays: ``energy`` (), ``forces`` (N, 3), ``energies`` (N,),
    and ``stress`` (3, 3) when ``stress`` (default: the structure is periodic).
    """
    if stress is None:
        stress = structure.periodic
    dtype = jnp.asarray(potential.params["energy"]["scale"]).dtype
    fn = compiled_properties(potential.spec, bool(stress), True)
    out = fn(potential.params, *padded_inputs(potential, structure, dtype))
    n = structure.n_atoms
    return {k: np.asarray(v, dtype=np.float64)[:n] if k in ("forces", "energies") else np.asarray(v, np.float64)
            for k, v in out.items()}


def energy_and_forces(potential: Potential, structure) -> tuple[float, np.ndarray]:
    """(E [eV], F (N, 3) [eV/Å]) of one structure."""
    out = compute(potential, structure, stress=False)
    return float(out["energy"]), out["forces"]


def energy(potential: Potential, structure) -> float:
    """Total energy [eV]."""
    return energy_and_forces(potential, structure)[0]
