"""Molecular dynamics: jax-md integrators, chunked jitted scans with neighbour rollback, output,
analysis, and gradients of trajectory observables (backpropagation through MD, reweighting)."""

from jnnp.md.gradients import (
    density_observable,
    make_diff_md,
    make_trajectory_fn,
    potential_energy_observable,
    rdf_observable,
    volume_observable,
)
from jnnp.md.integrate import Ensemble, make_integrator, make_md_energy_fn
from jnnp.md.reweight import fluctuation_gradient, reweighted_average, reweighting_weights
from jnnp.md.simulate import run_md

__all__ = [
    "Ensemble",
    "density_observable",
    "fluctuation_gradient",
    "make_diff_md",
    "make_integrator",
    "make_md_energy_fn",
    "make_trajectory_fn",
    "potential_energy_observable",
    "rdf_observable",
    "reweighted_average",
    "reweighting_weights",
    "run_md",
    "volume_observable",
]
