"""Invariance of energy and forces under translation, rotation (positions and cell), permutation
of same-element atoms and wrapping atoms by lattice vectors; float32 against float64.

Every structure is padded to the common test capacities, so all evaluations of one dtype share a
single compiled properties function.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jnnp import testing as T

TRANSFORMS = ("translate", "rotate", "permute", "wrap", "all")
CASES = [(name, t) for name in ("cluster", "ortho", "triclinic") for t in TRANSFORMS
         if not (name == "cluster" and t == "wrap")]

SEEDS = {"translate": 1, "rotate": 2, "permute": 3, "wrap": 4, "all": 5}


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


def _ef(pot):
    def fn(s):
        out = T.evaluate(pot, s)
        return out["energy"], out["forces"]
    return fn


@pytest.mark.parametrize("name,transform", CASES)
def test_invariance(setup, name, transform):
    pot, structures = setup
    de, df = T.check_invariance(_ef(pot), structures[name], transform, seed=SEEDS[transform])
    assert de <= 1e-10, f"|ΔE|/atom = {de:.3e} eV"
    assert df <= 1e-9, f"max |ΔF| = {df:.3e} eV/Å"


@pytest.mark.parametrize("name", ["ortho", "triclinic"])
def test_stress_rotates_with_structure(setup, name):
    pot, structures = setup
    s = structures[name]
    t, _, rot = T.transformed(s, "rotate", 3)
    sig0 = T.evaluate(pot, s)["stress"]
    sig1 = T.evaluate(pot, t)["stress"]
    np.testing.assert_allclose(sig1, rot @ sig0 @ rot.T, rtol=0, atol=1e-12)


def test_invariance_check_detects_broken_symmetry(setup):
    """A displacement that is not a symmetry changes the energy well above the tolerance."""
    pot, structures = setup
    s = structures["triclinic"]
    pos = s.positions.copy()
    pos[3] += 1e-3
    e0, _ = _ef(pot)(s)
    e1, _ = _ef(pot)(s.replace(positions=pos))
    assert abs(e1 - e0) / s.n_atoms > 1e-8


@pytest.mark.parametrize("name", ["cluster", "triclinic"])
def test_float32_matches_float64(setup, name):
    pot, structures = setup
    pot32 = pot.astype(jnp.float32)
    s = structures[name]
    t, perm, rot = T.transformed(s, "all", 5)
    ref = T.evaluate(pot, s)
    for struct, back in ((s, lambda f: f), (t, lambda f: (f @ rot)[np.argsort(perm)])):
        out = T.evaluate(pot32, struct, dtype=jnp.float32, stress=False)
        assert abs(out["energy"] - ref["energy"]) / s.n_atoms <= 1e-5
        assert np.abs(back(out["forces"]) - ref["forces"]).max() <= 1e-4
