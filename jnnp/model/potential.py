"""A Behler–Parrinello HDNNP as a static spec plus a parameter pytree, and its energy function.

E = Σ_i [ scale · NN_{c(i)}( S_{c(i)}( G_i ) ) + shift_{c(i)} ]   [eV]

with G_i the symmetry functions of atom i, S the n2p2 scaling, NN_c the element network (output
in normalised units), ``scale`` the energy unit of the network output (n2p2: Ha/conv_energy in eV)
and ``shift_c`` the per-element reference energy (n2p2: mean_energy + atom_energy, in eV).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.params import init_descriptor_params
from jnnp.descriptors.scaling import apply_scaling, identity_statistics
from jnnp.descriptors.spec import DescriptorSpec
from jnnp.model.networks import ElementMLP, init_network_params

__all__ = ["PotentialSpec", "Potential", "make_element_energy_fn", "make_atomic_energy_fn", "make_energy_fn", "init_potential"]


@dataclasses.dataclass(frozen=True)
class PotentialSpec:
    """Static structure of an HDNNP (hashable; changing it recompiles).

    Attributes:
        descriptor: symmetry functions per element (lengths in Å).
        hidden: hidden-layer widths, e.g. (25, 25).
        activations: n2p2 activation characters for each hidden layer and the output layer.
        normalize_nodes: n2p2 ``normalize_nodes``.
        scaling: symmetry-function scaling kind (`jnnp.descriptors.scaling.SCALING_KINDS`).
        scale_min, scale_max: n2p2 ``scale_min_short`` / ``scale_max_short``.
        source_units: (length, energy) units of the model this was read from (for export); jnnp
            itself always works in Å and eV.
    """

    descriptor: DescriptorSpec
    hidden: tuple[int, ...] = (25, 25)
    activations: tuple[str, ...] = ("t", "t", "l")
    normalize_nodes: bool = False
    scaling: str = "scale_center"
    scale_min: float = 0.0
    scale_max: float = 1.0
    # Export metadata only: excluded from equality/hash so it never causes a recompilation.
    source_units: tuple[str, str] = dataclasses.field(default=("angstrom", "eV"), compare=False)

    def __post_init__(self):
        if len(self.activations) != len(self.hidden) + 1:
            raise ValueError(f"need {len(self.hidden) + 1} activations (hidden + output), "
                             f"got {self.activations}")

    @property
    def elements(self) -> tuple[int, ...]:
        return self.descriptor.elements

    @property
    def cutoff(self) -> float:
        return self.descriptor.cutoff

    def network(self, param_dtype=jnp.float64) -> ElementMLP:
        return ElementMLP(features=(*self.hidden, 1), activations=self.activations,
                          normalize_nodes=self.normalize_nodes, param_dtype=param_dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Potential:
    """An HDNNP: ``spec`` (static) and ``params`` (pytree of arrays; differentiable)."""

    spec: PotentialSpec = dataclasses.field(metadata=dict(static=True))
    params: dict

    def replace(self, **kw) -> "Potential":
        return dataclasses.replace(self, **kw)

    def astype(self, dtype) -> "Potential":
        """Cast every floating-point parameter to ``dtype`` (e.g. float32 for speed)."""
        cast = lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x
        return self.replace(params=jax.tree.map(cast, self.params))


def init_potential(spec: PotentialSpec, key, dtype=jnp.float64) -> Potential:
    """Random network weights, identity scaling statistics, unit energy scale, zero shifts."""
    keys = jax.random.split(key, len(spec.elements))
    net = spec.network(dtype)
    params = {
        "descriptor": init_descriptor_params(spec.descriptor, dtype),
        "scaling": tuple(identity_statistics(n) for n in spec.descriptor.n_features),
        "networks": tuple(init_network_params(net, n, k) for n, k in zip(spec.descriptor.n_features, keys)),
        "energy": {"scale": np.asarray(1.0, dtype), "shift": np.zeros(len(spec.elements), dtype)},
    }
    return Potential(spec, params)


def make_element_energy_fn(spec: PotentialSpec):
    """``element_energy_fn(params, c, G_c) -> (n,)`` energies [eV] of n atoms of element index
    ``c`` from their unscaled symmetry functions ``G_c`` (n, F_c): scaling, network, energy unit
    and reference energy. Differentiable w.r.t. params (networks, scaling, energy) and ``G_c``."""
    net = spec.network()

    def element_energy_fn(params, c, G_c):
        dtype = G_c.dtype
        x = apply_scaling(spec.scaling, params["scaling"][c], G_c, spec.scale_min, spec.scale_max)
        out = net.apply(jax.tree.map(lambda a: jnp.asarray(a, dtype), params["networks"][c]), x)
        return out * jnp.asarray(params["energy"]["scale"], dtype) + jnp.asarray(params["energy"]["shift"], dtype)[c]

    return element_energy_fn


def make_atomic_energy_fn(spec: PotentialSpec):
    """``atomic_energy_fn(params, positions, cell, graph) -> (N,)`` atomic energies [eV].

    Padding atoms get 0. Differentiable w.r.t.: params (all), positions, cell.
    """
    descriptor_fn = make_descriptor_fn(spec.descriptor)
    element_energy_fn = make_element_energy_fn(spec)

    def atomic_energy_fn(params, positions, cell, graph):
        positions = jnp.asarray(positions)
        G = descriptor_fn(params["descriptor"], positions, cell, graph)
        e_atom = jnp.zeros(positions.shape[0], positions.dtype)
        for c, G_c in enumerate(G):
            e_c = element_energy_fn(params, c, G_c) * graph.element_mask[c]
            e_atom = e_atom.at[graph.element_atoms[c]].add(e_c)
        return e_atom

    atomic_energy_fn.descriptor_fn = descriptor_fn
    return atomic_energy_fn


def make_energy_fn(spec: PotentialSpec):
    """``energy_fn(params, positions, cell, graph) -> ()`` total energy [eV].

    Differentiable w.r.t.: params (all), positions, cell.
    """
    atomic_energy_fn = make_atomic_energy_fn(spec)

    def energy_fn(params, positions, cell, graph):
        return jnp.sum(atomic_energy_fn(params, positions, cell, graph))

    energy_fn.atomic_energy_fn = atomic_energy_fn
    return energy_fn
