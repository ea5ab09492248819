"""Extensivity and locality: a small periodic cell against its explicit 2×2×2 supercell, and two
molecules 40 Å apart against the molecules alone."""

import numpy as np
import pytest

from jnnp import testing as T
from jnnp.data.structure import Structure


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


def test_supercell_energy_forces_stress(setup):
    pot, structures = setup
    s = structures["triclinic"]
    sup = T.supercell(s, (2, 2, 2))
    ref = T.evaluate(pot, s)
    out = T.evaluate(pot, sup, sizes=T.sizes_for(pot, [sup]))
    assert abs(out["energy"] - 8 * ref["energy"]) <= 1e-9 * abs(8 * ref["energy"])
    np.testing.assert_allclose(out["forces"], np.tile(ref["forces"], (8, 1)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["stress"], ref["stress"], rtol=0, atol=1e-10)


def test_supercell_builder_is_explicit(setup):
    """The supercell has 8× the atoms, 8× the volume and the same neighbour environment sizes."""
    pot, structures = setup
    s = structures["triclinic"]
    sup = T.supercell(s, (2, 2, 2))
    assert sup.n_atoms == 8 * s.n_atoms
    assert np.isclose(sup.volume, 8 * s.volume)
    g0, g1 = T.graph_of(pot, s), T.graph_of(pot, sup)
    assert g1.pair_i.shape[0] == 8 * g0.pair_i.shape[0]


def _molecule(seed, offset):
    w = T.water_cluster(1, seed, near_cutoff=False)
    return Structure(positions=w.positions + offset, numbers=w.numbers)


def test_locality_two_molecules_far_apart(setup):
    pot, _ = setup
    a = _molecule(1, np.zeros(3))
    b = _molecule(2, np.array([40.0, 3.0, -2.0]))
    ab = Structure(positions=np.concatenate([a.positions, b.positions]),
                   numbers=np.concatenate([a.numbers, b.numbers]))
    ea, eb, eab = (T.evaluate(pot, x, stress=True) for x in (a, b, ab))
    assert abs(eab["energy"] - (ea["energy"] + eb["energy"])) <= 1e-12 * abs(eab["energy"]) + 1e-12
    np.testing.assert_allclose(eab["forces"], np.concatenate([ea["forces"], eb["forces"]]), rtol=0, atol=1e-12)
    # and the molecules do interact when they are close
    close = Structure(positions=np.concatenate([a.positions, b.positions - [37.5, 3.0, -2.0]]),
                      numbers=ab.numbers)
    assert T.cutoff_margin(close, [4.0]) > 0
    ec = T.evaluate(pot, close)
    assert abs(ec["energy"] - (ea["energy"] + eb["energy"])) > 1e-6
