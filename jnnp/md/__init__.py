"""Molecular dynamics: jax-md integrators, chunked jitted scans with neighbour rollback, output, analysis."""

from jnnp.md.integrate import Ensemble, make_integrator, make_md_energy_fn
from jnnp.md.simulate import run_md

__all__ = ["Ensemble", "make_integrator", "make_md_energy_fn", "run_md"]
