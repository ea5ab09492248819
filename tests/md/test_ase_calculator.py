"""`jnnp.ase.Calculator`: agreement with `jnnp.compute`, finite-difference stress and forces, ASE
optimiser and MD, and one compiled program per size bucket (float64)."""

import ase
import numpy as np
import pytest
from _models import BOUND_CLUSTER_SEED, cheap_potential, cluster, fast_compiles, random_box
from ase import units
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import jnnp
from jnnp.ase import Calculator
from jnnp.model.evaluate import compiled_properties


def _atoms(structure, potential):
    atoms = ase.Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell,
                      pbc=structure.pbc)
    atoms.calc = Calculator(potential)
    return atoms


def _n_programs(jitted):
    """Number of compiled programs in a jax.jit function's cache (None if JAX hides it)."""
    size = getattr(jitted, "_cache_size", None)
    return None if size is None else size()


def _structure(atoms):
    return jnnp.Structure(positions=atoms.positions, numbers=atoms.numbers, cell=np.asarray(atoms.cell),
                          pbc=atoms.pbc)


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


@pytest.fixture(scope="module")
def potential():
    return cheap_potential()


@pytest.fixture
def box(potential):
    return _atoms(random_box(), potential)


@pytest.fixture
def free_cluster(potential):
    return _atoms(cluster(), potential)


@pytest.fixture
def bound_cluster():
    """The cluster with network weights that bind it (same spec: same compiled program)."""
    return _atoms(cluster(), cheap_potential(seed=BOUND_CLUSTER_SEED))


@pytest.mark.parametrize("which", ["box", "free_cluster"])
def test_results_equal_compute(which, request, potential):
    atoms = request.getfixturevalue(which)
    ref = jnnp.compute(potential, _structure(atoms))
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"]), rel=0, abs=1e-12)
    assert isinstance(atoms.get_potential_energy(), float)
    forces = atoms.get_forces()
    assert forces.dtype == np.float64 and forces.shape == (len(atoms), 3)
    np.testing.assert_allclose(forces, ref["forces"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), ref["energies"], rtol=0, atol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    assert np.abs(forces).max() > 1e-3  # a non-trivial check
    if atoms.pbc.any():
        s = ref["stress"]
        voigt = [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
        np.testing.assert_allclose(atoms.get_stress(), voigt, rtol=0, atol=1e-12)
        np.testing.assert_allclose(atoms.get_stress(voigt=False), s, rtol=0, atol=1e-12)
        np.testing.assert_allclose(s, s.T, atol=1e-14)


def test_stress_matches_numerical_stress(box):
    """Analytic stress vs ASE's central differences of E over ±1e-5 strains (eV/Å³)."""
    stress = box.get_stress()
    numeric = calculate_numerical_stress(box, eps=1e-5)
    assert np.abs(stress).max() > 1e-4  # far above the tolerance
    np.testing.assert_allclose(stress, numeric, rtol=0, atol=1e-6)
    np.testing.assert_allclose(stress, numeric, rtol=0, atol=1e-8)  # actually O(eps²) + round-off


@pytest.mark.parametrize("which", ["box", "free_cluster"])
def test_forces_match_numerical_forces(which, request):
    atoms = request.getfixturevalue(which)
    forces = atoms.get_forces()
    idx = range(len(atoms)) if which == "free_cluster" else range(0, len(atoms), 4)
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=idx)
    np.testing.assert_allclose(forces[list(idx)], numeric, rtol=0, atol=1e-8)


@pytest.mark.parametrize("which", ["box", "free_cluster"])
def test_compiled_once_per_size_bucket(which, request, potential):
    """Displaced positions (same neighbour graph, so the same size bucket) reuse the compiled
    program: no new entry in the jit cache of `compiled_properties`."""
    atoms = request.getfixturevalue(which)
    fn = compiled_properties(potential.spec, bool(atoms.pbc.any()), True)
    e0 = atoms.get_potential_energy()
    n_programs, misses = _n_programs(fn), compiled_properties.cache_info().misses
    if n_programs is None:
        pytest.skip("this JAX does not expose the jit cache size")
    for seed in range(3):
        atoms.positions += np.random.default_rng(seed).normal(scale=1e-3, size=(len(atoms), 3))
        assert atoms.get_potential_energy() != e0
        atoms.get_forces()
    assert compiled_properties.cache_info().misses == misses
    assert _n_programs(fn) == n_programs


def test_bfgs_reduces_fmax(bound_cluster, potential):
    atoms = bound_cluster
    fn = compiled_properties(potential.spec, False, True)
    fmax0 = np.linalg.norm(atoms.get_forces(), axis=1).max()
    e0 = atoms.get_potential_energy()
    n_programs = _n_programs(fn)
    BFGS(atoms, maxstep=0.05, logfile=None).run(fmax=1e-4, steps=25)
    fmax = np.linalg.norm(atoms.get_forces(), axis=1).max()
    assert fmax < 0.5 * fmax0, (fmax0, fmax)
    assert atoms.get_potential_energy() < e0
    assert _n_programs(fn) == n_programs  # the whole relaxation ran one compiled program


def test_ase_velocity_verlet_conserves_energy(bound_cluster):
    atoms = bound_cluster
    m = atoms.get_masses()[:, None]
    atoms.set_momenta(np.random.default_rng(0).normal(size=(len(atoms), 3)) * np.sqrt(m * units.kB * 100.0))
    Stationary(atoms)
    e_kin, e_tot = [], []

    def record():
        e_kin.append(atoms.get_kinetic_energy())
        e_tot.append(atoms.get_total_energy())

    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs, logfile=None)
    dyn.attach(record, interval=1)
    dyn.run(50)
    e_kin, e_tot = np.asarray(e_kin), np.asarray(e_tot)
    assert len(e_tot) == 51 and np.all(np.isfinite(e_tot))
    # kinetic and potential energy exchange while their sum stays put
    max_dev = np.max(np.abs(e_tot - e_tot[0]))
    assert max_dev / len(atoms) < 1e-6
    assert np.ptp(e_kin) > 100 * max_dev
