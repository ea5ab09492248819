"""Extensivity and locality: a small periodic cell against its explicit 2×2×2 supercell, and two
molecules 40 Å apart against the molecules alone."""

import numpy as np
import pytest

from jnnp import testing as T
from jnnp.data.structure import Structure


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


def _base_cell(triclinic):
    """Two atoms (O, H) in a cell with edges 2.6–3.6 Å < r_c: many self-images per atom."""
    return T.small_periodic_cell(triclinic, seed=0, n_atoms=2, cell_scale=0.7, near_cutoff=False)


@pytest.mark.parametrize("triclinic", [False, True])
def test_supercell_energy_forces_stress(setup, triclinic):
    pot, _ = setup
    s = _base_cell(triclinic)
    sup = T.supercell(s, (2, 2, 2))
    g0, g1 = T.graph_of(pot, s), T.graph_of(pot, sup)
    assert g1.pair_i.shape[0] == 8 * g0.pair_i.shape[0]
    assert np.sum(g0.pair_i == g0.pair_j) > 0                  # atoms see their own images
    ref = T.evaluate(pot, s)
    out = T.evaluate(pot, sup)
    assert np.abs(ref["forces"]).max() > 1e-2
    assert abs(out["energy"] - 8 * ref["energy"]) <= 1e-9 * abs(8 * ref["energy"])
    np.testing.assert_allclose(out["forces"], np.tile(ref["forces"], (8, 1)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["stress"], ref["stress"], rtol=0, atol=1e-10)


def test_supercell_detects_non_extensive_change(setup):
    """Contrast: moving one atom of the supercell breaks E = 8 E_cell well above tolerance."""
    pot, _ = setup
    s = _base_cell(True)
    sup = T.supercell(s, (2, 2, 2))
    pos = sup.positions.copy()
    pos[5] += [0.01, 0.0, 0.0]
    e = T.evaluate(pot, sup.replace(positions=pos))["energy"]
    assert abs(e - 8 * T.evaluate(pot, s)["energy"]) > 1e-6


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
    np.testing.assert_allclose(eab["forces"], np.concatenate([ea["forces"], eb["forces"]]),
                               rtol=0, atol=1e-12)
    # and the molecules do interact when they are close
    close = Structure(positions=np.concatenate([a.positions, b.positions - [37.5, 3.0, -2.0]]),
                      numbers=ab.numbers)
    assert T.cutoff_margin(close, [4.0]) > 0
    ec = T.evaluate(pot, close)
    assert abs(ec["energy"] - (ea["energy"] + eb["energy"])) > 1e-6
