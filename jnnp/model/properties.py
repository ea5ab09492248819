"""Energy, forces, stress and per-atom energies from an energy function (all jittable).

Sign conventions: forces F = −∂E/∂R [eV/Å]; stress σ = (1/V) ∂E/∂ε [eV/Å³] for a homogeneous
strain R → R(1+ε)ᵀ, cell → cell(1+ε)ᵀ (ASE's sign convention); virial W = −V σ [eV].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["make_properties_fn"]


def _strained(positions, cell, strain):
    deform = jnp.eye(3, dtype=positions.dtype) + strain
    return positions @ deform.T, cell @ deform.T


def make_properties_fn(energy_fn, *, stress: bool = True, atomic_energy_fn=None):
    """Build ``properties_fn(params, positions, cell, graph) -> dict``.

    The dict has ``energy`` () [eV], ``forces`` (N, 3) [eV/Å], and with ``stress=True`` also
    ``stress`` (3, 3) [eV/Å³] (NaN-free only for periodic cells, where V > 0) and ``virial``
    (3, 3) [eV]; with ``atomic_energy_fn`` also ``energies`` (N,) [eV].
    All entries are differentiable w.r.t. params, positions and cell.
    """

    def strained_energy(params, positions, strain, cell, graph):
        pos, c = _strained(positions, cell, strain)
        return energy_fn(params, pos, c, graph)

    def properties_fn(params, positions, cell, graph):
        strain = jnp.zeros((3, 3), positions.dtype)
        if stress:
            e, (g_pos, g_strain) = jax.value_and_grad(strained_energy, argnums=(1, 2))(
                params, positions, strain, cell, graph)
        else:
            e, g_pos = jax.value_and_grad(energy_fn, argnums=1)(params, positions, cell, graph)
        out = {"energy": e, "forces": -g_pos}
        if stress:
            g = 0.5 * (g_strain + g_strain.T)
            volume = jnp.abs(jnp.linalg.det(cell))
            out["virial"] = -g
            out["stress"] = g / jnp.where(volume > 0, volume, 1.0)
        if atomic_energy_fn is not None:
            out["energies"] = atomic_energy_fn(params, positions, cell, graph)
        return out

    return properties_fn
