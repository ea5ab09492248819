"""n2p2 reference: jnnp reproduces n2p2's prediction of the RPBE-D3 water HDNNP exactly.

Model: ``reference-fit-7241`` (input.nn.predict, scaling.data, weights.00{1,8}.data; Bohr/Ha).
Structure: the 1080-atom liquid-water box ``input.data.H2O_1080_liquid`` (Bohr/Ha).
Reference: n2p2's regression values (``prediction_H2O_1080_liquid.txt``: total energy in Ha and
forces in Ha/Bohr, atoms in input.data order). Everything in float64 (tests/conftest.py enables
x64). The box is evaluated once per module through the public `jnnp.compute` (one compilation,
about ten seconds on a CPU); the other tests reuse that compiled function.

Tolerances: total energy 1e-10 relative, every force component 1e-8 Ha/Bohr absolute.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import jnnp
from _shared import shared_path
from jnnp.units import BOHR, HARTREE

pytestmark = pytest.mark.shared_data

WATER = ("n2p2-examples", "H2O_RPBE-D3")
ENERGY_RTOL = 1e-10
FORCE_ATOL = 1e-8  # Ha/Bohr
N_ATOMS = 1080


@pytest.fixture(scope="module")
def reference() -> tuple[float, np.ndarray]:
    """(total energy [Ha], forces (1080, 3) [Ha/Bohr]) predicted by n2p2."""
    path = shared_path(*WATER, "reference-fit-7241", "prediction_H2O_1080_liquid.txt")
    energy, rows = None, []
    for line in path.read_text().splitlines():
        if line.startswith("# total_energy_Ha"):
            energy = float(line.split()[-1])
        elif line.strip() and not line.startswith("#"):
            rows.append([float(x) for x in line.split()])
    forces = np.array(rows)
    assert energy is not None and forces.shape == (N_ATOMS, 3)
    return energy, forces


@pytest.fixture(scope="module")
def water_pot() -> jnnp.Potential:
    return jnnp.read_n2p2(shared_path(*WATER, "reference-fit-7241"), input_nn="input.nn.predict",
                          length_unit="bohr", energy_unit="hartree")


@pytest.fixture(scope="module")
def box():
    data = jnnp.read(shared_path(*WATER, "input.data.H2O_1080_liquid"), length_unit="bohr",
                     energy_unit="hartree")
    assert len(data) == 1
    s = data[0]
    assert s.n_atoms == N_ATOMS and s.periodic
    return s


@pytest.fixture(scope="module")
def prediction(water_pot, box) -> dict:
    """jnnp's prediction for the box (the one expensive evaluation of this module)."""
    return jnnp.compute(water_pot, box, stress=False)


def _in_hartree_bohr(out: dict) -> tuple[float, np.ndarray]:
    return out["energy"] / HARTREE, out["forces"] * (BOHR / HARTREE)


def _assert_matches_reference(out: dict, reference) -> None:
    e_ref, f_ref = reference
    e, f = _in_hartree_bohr(out)
    assert abs(e - e_ref) <= ENERGY_RTOL * abs(e_ref), f"E = {e!r} Ha, n2p2 {e_ref!r} Ha"
    err = np.abs(f - f_ref)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= FORCE_ATOL, (f"max |ΔF| = {err.max():.3e} Ha/Bohr at atom {worst[0]}, "
                                     f"component {'xyz'[worst[1]]}")


def test_float64(water_pot):
    assert jax.config.jax_enable_x64
    for leaf in jax.tree.leaves(water_pot.params):
        if np.issubdtype(np.asarray(leaf).dtype, np.floating):
            assert np.asarray(leaf).dtype == np.float64


def test_energy_and_forces_match_n2p2(prediction, reference):
    assert prediction["forces"].shape == (N_ATOMS, 3)
    _assert_matches_reference(prediction, reference)


def test_atomic_energies_and_total_force(prediction):
    assert prediction["energies"].shape == (N_ATOMS,)
    assert prediction["energies"].sum() == pytest.approx(prediction["energy"], rel=1e-14)
    # periodic box: the forces sum to zero (to rounding)
    np.testing.assert_allclose(prediction["forces"].sum(0), 0.0, atol=1e-9)


def test_model_exported_in_angstrom_ev_matches_n2p2(water_pot, box, reference, tmp_path):
    """The model written by jnnp in Å/eV and read back still reproduces n2p2's numbers."""
    jnnp.write_n2p2(water_pot, tmp_path, length_unit="angstrom", energy_unit="eV")
    back = jnnp.read_n2p2(tmp_path)
    assert back.spec.source_units == ("angstrom", "eV")
    # Apart from source_units (export metadata, not read by the energy function) the spec must be
    # the original one; evaluating with the original spec object reuses the compiled function.
    assert dataclasses.replace(back.spec, source_units=water_pot.spec.source_units) == water_pot.spec
    out = jnnp.compute(back.replace(spec=water_pot.spec), box, stress=False)
    _assert_matches_reference(out, reference)


def test_box_given_in_angstrom_matches_n2p2(water_pot, box, reference, tmp_path):
    """The same box written in Å (by the test's own code) and read with the default units."""
    src = shared_path(*WATER, "input.data.H2O_1080_liquid")
    out_lines = []
    for line in src.read_text().splitlines():
        t = line.split()
        if t and t[0] in ("lattice", "atom"):
            t[1:4] = [f"{float(x) * BOHR:.17g}" for x in t[1:4]]
        out_lines.append(" ".join(t))
    path = tmp_path / "input.data"
    path.write_text("\n".join(out_lines) + "\n")
    s = jnnp.read(path)[0]
    np.testing.assert_allclose(s.positions, box.positions, rtol=1e-15, atol=1e-13)
    _assert_matches_reference(jnnp.compute(water_pot, s, stress=False), reference)
