"""HDNNP model: per-element networks, the potential pytree, energy/forces/stress."""

from jnnp.model.evaluate import compute, energy, energy_and_forces, graph_for
from jnnp.model.networks import ElementMLP
from jnnp.model.potential import (Potential, PotentialSpec, init_potential, make_atomic_energy_fn,
                                  make_energy_fn)
from jnnp.model.properties import make_properties_fn
from jnnp.model.sharded import cpu_mesh, make_sharded_properties_fn, shard_graph, split_graph

__all__ = ["ElementMLP", "Potential", "PotentialSpec", "init_potential", "make_energy_fn",
           "make_atomic_energy_fn", "make_properties_fn", "compute", "energy", "energy_and_forces",
           "graph_for", "split_graph", "shard_graph", "make_sharded_properties_fn", "cpu_mesh"]
