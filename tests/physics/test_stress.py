"""Stress against finite symmetric strains (positions and cell deformed together), force sum."""

import numpy as np
import pytest

from jnnp import testing as T


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


@pytest.mark.parametrize("name", ["ortho", "triclinic"])
def test_stress_matches_finite_strain(setup, name):
    pot, structures = setup
    s = structures[name]
    out = T.evaluate(pot, s)
    assert np.abs(out["stress"]).max() > 1e-3           # non-trivial stress
    pos, cell, g = T.padded_inputs(pot, s)
    err = T.check_stress_fd(T.energy_fn_for(pot.spec), pos, cell, pot.params, g, stress=out["stress"], h=1e-6)
    assert err <= 1e-6, f"max |σ - σ_fd| = {err:.3e} eV/Å³"


@pytest.mark.parametrize("name", ["ortho", "triclinic"])
def test_stress_symmetric_and_virial(setup, name):
    pot, structures = setup
    s = structures[name]
    out = T.evaluate(pot, s)
    np.testing.assert_allclose(out["stress"], out["stress"].T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(out["virial"], -s.volume * out["stress"], rtol=1e-12, atol=1e-14)


def test_stress_check_detects_wrong_stress(setup):
    pot, structures = setup
    s = structures["triclinic"]
    out = T.evaluate(pot, s)
    wrong = out["stress"].copy()
    wrong[0, 1] += 1e-5
    wrong[1, 0] += 1e-5
    pos, cell, g = T.padded_inputs(pot, s)
    assert T.check_stress_fd(T.energy_fn_for(pot.spec), pos, cell, pot.params, g, stress=wrong) > 5e-6


@pytest.mark.parametrize("name", ["cluster", "ortho", "triclinic"])
def test_forces_sum_to_zero(setup, name):
    pot, structures = setup
    f = T.evaluate(pot, structures[name])["forces"]
    assert np.abs(f).max() > 1e-2
    assert np.abs(f.sum(axis=0)).max() <= 1e-10
