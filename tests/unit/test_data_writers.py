"""Writers of jnnp.data: extended XYZ and n2p2 input.data, each round-tripped through `read`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from jnnp.data import Structure, read, read_n2p2, write_extxyz, write_n2p2

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
_skip_no_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data sets not found at {SHARED}")


def needs_shared(test):
    """Mark ``test`` as reading ../shared/data and skip it when that folder is missing."""
    return pytest.mark.shared_data(_skip_no_shared(test))


def _structures():
    rng = np.random.default_rng(0)
    stress = rng.normal(size=(3, 3))
    periodic = Structure(positions=rng.uniform(0, 5, (3, 3)), numbers=[8, 1, 1],
                         cell=[[5.0, 0.0, 0.0], [0.3, 4.5, 0.0], [-0.2, 0.1, 6.0]], pbc=True,
                         energy=-471.123456789012345, forces=rng.normal(size=(3, 3)),
                         stress=stress + stress.T, charges=[-0.8, 0.4, 0.4], total_charge=0.0,
                         comment="periodic water")
    free = Structure(positions=rng.uniform(-3, 3, (4, 3)) * 1e3, numbers=[6, 1, 1, 29],
                     energy=-1.0e-7, forces=rng.normal(size=(4, 3)) * 1e-9)
    return [periodic, free] + list(read(DATA / "xsf_tio2"))


def _assert_same(a: Structure, b: Structure, rtol: float, atol: float = 0.0):
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    np.testing.assert_allclose(b.positions, a.positions, rtol=rtol, atol=atol)
    np.testing.assert_allclose(b.cell, a.cell, rtol=rtol, atol=atol)
    np.testing.assert_allclose(b.forces, a.forces, rtol=rtol, atol=atol)
    assert b.energy == pytest.approx(a.energy, rel=rtol)


# ---------------------------------------------------------------- extended XYZ
def test_extxyz_round_trip(tmp_path):
    structures = _structures()
    path = tmp_path / "out.extxyz"
    write_extxyz(path, structures)
    back = read(path)
    assert len(back) == len(structures)
    for i, (a, b) in enumerate(zip(structures, back)):
        _assert_same(a, b, rtol=0.0, atol=5e-9)  # ASE writes 8 decimals per atom column
        assert b.energy == a.energy and (b.source, b.index) == (str(path), i)
    np.testing.assert_array_equal(back[0].stress, structures[0].stress)
    np.testing.assert_allclose(back[0].charges, structures[0].charges, atol=5e-9)
    assert back[0].comment == "periodic water" and back[0].total_charge == 0.0
    assert back[1].stress is None and back[1].charges is None
    assert [s.line for s in back[:3]] == [1, 6, 12]  # 3 + 2 lines, then 4 + 2 lines
    assert len(read(path, format="extxyz", index="1:3")) == 2


# ---------------------------------------------------------------- n2p2 input.data
@pytest.mark.parametrize("length_unit, energy_unit", [("angstrom", "eV"), ("bohr", "hartree")])
def test_n2p2_round_trip(tmp_path, length_unit, energy_unit):
    structures = _structures()
    path = tmp_path / "input.data"
    write_n2p2(path, structures, length_unit=length_unit, energy_unit=energy_unit)
    back = read(path, length_unit=length_unit, energy_unit=energy_unit)
    assert len(back) == len(structures)
    for a, b in zip(structures, back):
        _assert_same(a, b, rtol=1e-12)
        assert b.line is not None and b.source == str(path)
    np.testing.assert_array_equal(back[0].charges, structures[0].charges)
    assert back[0].comment == "periodic water" and not back[1].periodic


def test_n2p2_number_format(tmp_path):
    path = tmp_path / "input.data"
    write_n2p2(path, _structures()[:1])
    lines = path.read_text().splitlines()
    assert lines[0] == "begin" and lines[1] == "comment periodic water" and lines[-1] == "end"
    sci = re.compile(r"^-?\d\.\d{16}e[+-]\d\d$")
    atom = lines[5].split()
    assert atom[0] == "atom" and len(atom) == 10 and atom[4] == "O"
    assert all(sci.match(t) for t in atom[1:4] + atom[5:])
    assert lines[-3].startswith("energy ") and sci.match(lines[-3].split()[1])


@needs_shared
def test_n2p2_rewrite_real_file_exact(tmp_path):
    src = SHARED / "n2p2-examples" / "H2O_RPBE-D3" / "input.data"
    data = read_n2p2(src, length_unit="bohr", energy_unit="hartree")
    path = tmp_path / "input.data"
    write_n2p2(path, data, length_unit="bohr", energy_unit="hartree")
    back = read_n2p2(path, length_unit="bohr", energy_unit="hartree")
    for a, b in zip(data, back):
        _assert_same(a, b, rtol=1e-12)
        np.testing.assert_array_equal(a.charges, b.charges)
    # The raw numbers in the file are reproduced too (Bohr in, Bohr out).
    first_atom = next(line for line in path.read_text().splitlines() if line.startswith("atom"))
    assert float(first_atom.split()[1]) == pytest.approx(3.735290838, rel=1e-15)


def test_n2p2_writer_errors(tmp_path):
    slab = Structure(positions=np.zeros((1, 3)), numbers=[1], cell=np.eye(3), pbc=[True, True, False],
                     energy=0.0, forces=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="fully periodic or non-periodic"):
        write_n2p2(tmp_path / "a.data", [slab])
    unlabelled = Structure(positions=np.zeros((1, 3)), numbers=[1])
    with pytest.raises(ValueError, match="allow_missing_labels"):
        write_n2p2(tmp_path / "b.data", [unlabelled])
    write_n2p2(tmp_path / "c.data", [unlabelled], allow_missing_labels=True)
    (s,) = read(tmp_path / "c.data")
    assert s.energy == 0.0 and not s.forces.any()
