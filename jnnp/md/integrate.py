"""Integrators: a jnnp potential as a jax-md energy function, and jax-md's simulators.

Positions are Cartesian and *unwrapped* (jax-md's free-space shift): the neighbour graph carries
integer lattice shifts, so wrapping is never needed and the energy stays smooth. Units: eV, Å,
amu, time in Å·sqrt(amu/eV) (`jnnp.units.fs_to_internal`), kT in eV, pressure in eV/Å³.

Cells are jnnp cells (lattice vectors as rows). In NPT the cell is part of the integrator state:
jax-md's ``npt_nose_hoover`` scales its ``box`` (= cell.T, columns) isotropically and moves the
atoms with it, so `state_cell` gives the current cell and the neighbour graph (integer lattice
shifts) stays valid across the change; `jnnp.md.run` passes that cell to the graph update.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.data.elements import mass as element_mass
from jnnp.model.potential import make_energy_fn
from jnnp.units import KB, bar_to_internal, fs_to_internal

__all__ = ["ENSEMBLES", "Ensemble", "make_md_energy_fn", "make_integrator", "masses_of", "state_cell",
           "energy_and_pressure", "conserved_energy", "kinetic_energy", "temperature_k"]

ENSEMBLES = ("nve", "nvt_nose_hoover", "nvt_langevin", "npt_nose_hoover")


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Integrator settings (configs speak fs, K and bar; converted here).

    Attributes:
        kind: one of `ENSEMBLES`.
        timestep_fs: time step [fs].
        temperature_k: target / initial temperature [K].
        tau_fs: Nosé–Hoover thermostat time constant [fs] (default 100 time steps).
        friction_per_fs: Langevin friction γ [1/fs].
        chain_length: Nosé–Hoover chain length (thermostat; the NPT barostat chain too).
        pressure_bar: NPT target pressure [bar].
        barostat_tau_fs: NPT barostat time constant [fs] (default 1000 time steps).
    """

    kind: str = "nve"
    timestep_fs: float = 0.5
    temperature_k: float = 300.0
    tau_fs: float | None = None
    friction_per_fs: float = 0.01
    chain_length: int = 5
    pressure_bar: float = 1.0
    barostat_tau_fs: float | None = None

    def __post_init__(self):
        if self.kind not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {self.kind!r}; expected one of {', '.join(ENSEMBLES)}")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be > 0, got {self.timestep_fs}")
        for name in ("tau_fs", "barostat_tau_fs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")

    @property
    def dt(self) -> float:
        return fs_to_internal(self.timestep_fs)

    @property
    def kT(self) -> float:
        return KB * self.temperature_k

    @property
    def pressure(self) -> float:
        """NPT target pressure [eV/Å³]."""
        return bar_to_internal(self.pressure_bar)

    @property
    def changes_cell(self) -> bool:
        return self.kind == "npt_nose_hoover"

    def thermostat_tau(self) -> float:
        return fs_to_internal(self.tau_fs) if self.tau_fs else 100 * self.dt

    def barostat_tau(self) -> float:
        return fs_to_internal(self.barostat_tau_fs) if self.barostat_tau_fs else 1000 * self.dt


def masses_of(numbers) -> jnp.ndarray:
    """(N,) standard atomic masses [amu]."""
    return jnp.asarray([element_mass(int(z)) for z in numbers])


def make_md_energy_fn(potential):
    """``energy_fn(R, graph=, cell=) -> E [eV]`` with the potential's parameters closed over.

    Also accepts jax-md's NPT calling convention ``energy_fn(R, box=, perturbation=, graph=)``:
    ``box`` = cell.T (columns) and ``perturbation`` = 1 + ε, an isotropic strain applied to
    positions and cell alike (jax-md differentiates w.r.t. ε for the barostat force).
    Differentiable w.r.t. R (forces), cell/box and perturbation.
    """
    efn = make_energy_fn(potential.spec)
    params = potential.params

    def energy_fn(R, graph, cell=None, box=None, perturbation=None, **unused):
        if cell is None:
            cell = box.T
        if perturbation is not None:
            R, cell = R * perturbation, cell * perturbation
        return efn(params, R, cell, graph)

    return energy_fn


def make_integrator(energy_fn, ensemble: Ensemble):
    """jax-md ``(init_fn, apply_fn)`` for the ensemble, with one calling convention for all:
    ``init_fn(key, R, kT=, mass=, graph=, cell=[, momenta=])`` and ``apply_fn(state, graph=,
    cell=)``. For NPT ``cell`` is the initial cell at ``init_fn`` and ignored by ``apply_fn`` (the
    state carries the box; `state_cell`)."""
    from jax_md import simulate, space  # imported on use: importing jax-md takes seconds

    _, shift_fn = space.free()
    if ensemble.kind == "nve":
        return simulate.nve(energy_fn, shift_fn, ensemble.dt)
    if ensemble.kind == "nvt_nose_hoover":
        return simulate.nvt_nose_hoover(energy_fn, shift_fn, ensemble.dt, ensemble.kT,
                                        tau=ensemble.thermostat_tau(), chain_length=ensemble.chain_length)
    if ensemble.kind == "nvt_langevin":
        gamma = ensemble.friction_per_fs * fs_to_internal(1.0) ** -1
        return simulate.nvt_langevin(energy_fn, shift_fn, ensemble.dt, ensemble.kT, gamma=gamma)
    init, apply = simulate.npt_nose_hoover(
        energy_fn, shift_fn, ensemble.dt, ensemble.pressure, ensemble.kT,
        barostat_kwargs={"tau": ensemble.barostat_tau(), "chain_length": ensemble.chain_length},
        thermostat_kwargs={"tau": ensemble.thermostat_tau(), "chain_length": ensemble.chain_length})

    def init_fn(key, R, cell, **kwargs):
        if float(np.linalg.det(np.asarray(cell, dtype=np.float64))) <= 0:
            raise ValueError("NPT needs a periodic cell with positive volume (right-handed lattice "
                             f"vectors), got cell {np.asarray(cell).tolist()}")
        return init(key, R, jnp.asarray(cell).T, **kwargs)

    def apply_fn(state, cell=None, **kwargs):
        return apply(state, **kwargs)

    return init_fn, apply_fn


def state_cell(state, cell):
    """The cell [Å] (rows) the integrator state lives in: the NPT box, else the fixed ``cell``."""
    from jax_md import simulate

    if isinstance(state, simulate.NPTNoseHooverState):
        return state.box.T
    return cell


def kinetic_energy(state):
    from jax_md import quantity

    return quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)


def temperature_k(state):
    """Instantaneous temperature [K] with 3N − 3 degrees of freedom (total momentum is zero)."""
    n = state.position.shape[0]
    return 2.0 * kinetic_energy(state) / ((3 * n - 3) * KB)


def energy_and_pressure(energy_fn, state, graph, cell):
    """``(E_pot [eV], P [eV/Å³], V [Å³])`` for a periodic cell, in one reverse pass.

    P = (2 K − ∂E/∂ε) / (3 V) with ε an isotropic strain of positions and cell (so ∂E/∂ε is
    V·tr σ_pot, the trace of `jnnp.model.properties`' stress times V); the kinetic term uses all
    3N momenta (the common instantaneous definition; jax-md's NPT barostat force uses the same
    virial).
    """
    R = state.position

    def strained(eps):
        return energy_fn(R * (1 + eps), graph=graph, cell=cell * (1 + eps))

    e, de = jax.value_and_grad(strained)(jnp.zeros((), R.dtype))
    volume = jnp.abs(jnp.linalg.det(cell))
    return e, (2.0 * kinetic_energy(state) - de) / (3.0 * volume), volume


def conserved_energy(ensemble: Ensemble, state, e_pot):
    """The quantity the dynamics conserves [eV], given the state's potential energy ``e_pot``:
    E_pot + E_kin (NVE), jax-md's Nosé–Hoover invariants (NVT, NPT: extended Hamiltonian incl.
    thermostat/barostat terms and P·V); None for Langevin (not conservative)."""
    from jax_md import simulate

    def known(*args, **kwargs):  # the invariants' energy_fn: E_pot is already evaluated
        return e_pot

    if ensemble.kind == "nve":
        return e_pot + kinetic_energy(state)
    if ensemble.kind == "nvt_nose_hoover":
        return simulate.nvt_nose_hoover_invariant(known, state, ensemble.kT)
    if ensemble.kind == "npt_nose_hoover":
        return simulate.npt_nose_hoover_invariant(known, state, ensemble.pressure, ensemble.kT)
    return None
