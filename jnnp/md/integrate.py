"""Integrators: a jnnp potential as a jax-md energy function, and jax-md's simulators.

Positions are Cartesian and *unwrapped* (jax-md's free-space shift): the neighbour graph carries
integer lattice shifts, so wrapping is never needed and the energy stays smooth. Units: eV, Å,
amu, time in Å·sqrt(amu/eV) (`jnnp.units.fs_to_internal`), kT in eV.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax_md import quantity, simulate, space

from jnnp.data.elements import mass as element_mass
from jnnp.model.potential import make_energy_fn
from jnnp.units import KB, fs_to_internal

__all__ = ["Ensemble", "make_md_energy_fn", "make_integrator", "masses_of", "pressure"]


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Integrator settings (configs speak fs and K; converted here).

    Attributes:
        kind: "nve", "nvt_nose_hoover" or "nvt_langevin".
        timestep_fs: time step [fs].
        temperature_k: target / initial temperature [K].
        tau_fs: Nosé–Hoover thermostat time constant [fs] (default 100 time steps).
        friction_per_fs: Langevin friction γ [1/fs].
        chain_length: Nosé–Hoover chain length.
    """

    kind: str = "nve"
    timestep_fs: float = 0.5
    temperature_k: float = 300.0
    tau_fs: float | None = None
    friction_per_fs: float = 0.01
    chain_length: int = 5

    def __post_init__(self):
        if self.kind not in ("nve", "nvt_nose_hoover", "nvt_langevin"):
            raise ValueError(f"unknown ensemble {self.kind!r}; expected nve, nvt_nose_hoover, nvt_langevin")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be > 0, got {self.timestep_fs}")

    @property
    def dt(self) -> float:
        return fs_to_internal(self.timestep_fs)

    @property
    def kT(self) -> float:
        return KB * self.temperature_k


def masses_of(numbers) -> jnp.ndarray:
    """(N,) standard atomic masses [amu]."""
    return jnp.asarray([element_mass(int(z)) for z in numbers])


def make_md_energy_fn(potential):
    """``energy_fn(R, graph=, cell=) -> E [eV]`` with the potential's parameters closed over.

    Differentiable w.r.t. R (forces) and cell.
    """
    efn = make_energy_fn(potential.spec)
    params = potential.params

    def energy_fn(R, graph, cell, **unused):
        return efn(params, R, cell, graph)

    return energy_fn


def make_integrator(energy_fn, ensemble: Ensemble):
    """jax-md ``(init_fn, apply_fn)`` for the ensemble; kwargs ``graph=, cell=`` pass through."""
    _, shift_fn = space.free()
    if ensemble.kind == "nve":
        return simulate.nve(energy_fn, shift_fn, ensemble.dt)
    if ensemble.kind == "nvt_nose_hoover":
        tau = fs_to_internal(ensemble.tau_fs) if ensemble.tau_fs else 100 * ensemble.dt
        return simulate.nvt_nose_hoover(energy_fn, shift_fn, ensemble.dt, ensemble.kT, tau=tau,
                                        chain_length=ensemble.chain_length)
    gamma = ensemble.friction_per_fs * fs_to_internal(1.0) ** -1
    return simulate.nvt_langevin(energy_fn, shift_fn, ensemble.dt, ensemble.kT, gamma=gamma)


def pressure(kinetic_energy, stress_pot, volume):
    """Instantaneous pressure [eV/Å³] = 2K/(3V) − tr(σ_pot)/3 (σ_pot = (1/V) ∂E/∂ε)."""
    return 2.0 * kinetic_energy / (3.0 * volume) - jnp.trace(stress_pot) / 3.0


def kinetic_energy(state):
    return quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)


def temperature_k(state):
    """Instantaneous temperature [K] with 3N − 3 degrees of freedom (total momentum is zero)."""
    n = state.position.shape[0]
    return 2.0 * kinetic_energy(state) / ((3 * n - 3) * KB)
