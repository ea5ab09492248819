"""Readers of jnnp.data on real files: shipped excerpts (tests/data) and the shared data sets."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from jnnp.data import Dataset, detect_format, read, read_deepmd, read_n2p2, read_npz, read_xsf
from jnnp.units import BOHR, HARTREE, KCAL_MOL

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
_skip_no_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data sets not found at {SHARED}")


def needs_shared(test):
    """Mark ``test`` as reading ../shared/data and skip it when that folder is missing."""
    return pytest.mark.shared_data(_skip_no_shared(test))
N2P2 = SHARED / "n2p2-examples"


def _raw_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- n2p2 input.data (shared files)
@needs_shared
def test_n2p2_h2o_bohr_hartree():
    path = N2P2 / "H2O_RPBE-D3" / "input.data"
    data = read(path, length_unit="bohr", energy_unit="hartree")
    assert isinstance(data, Dataset) and len(data) == 20
    s = data[0]
    assert s.n_atoms == 192 and s.periodic and s.pbc.all()
    assert sorted(set(s.numbers.tolist())) == [1, 8]
    raw = _raw_lines(path)
    energy_raw = next(float(t[1]) for t in raw if t and t[0] == "energy")
    assert s.energy == pytest.approx(energy_raw * 27.211386245988, rel=1e-14)
    atom = next(t for t in raw if t and t[0] == "atom")
    np.testing.assert_allclose(s.positions[0], np.array(atom[1:4], float) * BOHR, rtol=1e-14)
    np.testing.assert_allclose(s.forces[0], np.array(atom[7:10], float) * HARTREE / BOHR, rtol=1e-14)
    assert s.charges[0] == float(atom[5])
    np.testing.assert_allclose(np.diag(s.cell), 24.623508 * BOHR)
    assert s.total_charge == 0.0 and "RuNNer" in s.comment
    begins = [i + 1 for i, t in enumerate(raw) if t and t[0] == "begin"]
    assert [x.line for x in data] == begins
    assert [x.index for x in data] == list(range(20))
    assert all(x.source == str(path) for x in data)
    assert sorted({x.n_atoms for x in data}) == [48, 96, 192]


@needs_shared
def test_n2p2_cu2s_angstrom_ev():
    path = N2P2 / "Cu2S_PBE" / "input.data"
    data = read(path)  # Å / eV default
    assert len(data) == 20 and all(s.n_atoms == 144 for s in data)
    s = data[0]
    assert (s.numbers == 29).sum() == 96 and (s.numbers == 16).sum() == 48
    assert s.comment == "source_file_name=OUTCAR_3_1"
    np.testing.assert_array_equal(s.cell[1], [-0.444607, 11.968873, 0.0])
    np.testing.assert_array_equal(s.positions[0], [8.97740, 0.46815, 10.16037])
    np.testing.assert_array_equal(s.forces[0], [-0.222358, 0.152265, 0.200886])
    assert s.energy == pytest.approx(-571.723972)


@needs_shared
def test_n2p2_liquid_1080():
    path = N2P2 / "H2O_RPBE-D3" / "input.data.H2O_1080_liquid"
    assert detect_format(path) == "n2p2"
    (s,) = read_n2p2(path, length_unit="bohr", energy_unit="hartree")
    assert s.n_atoms == 1080 and (s.numbers == 8).sum() == 360
    np.testing.assert_allclose(s.cell[0, 0], 4.2888632301285426e01 * BOHR, rtol=1e-15)
    np.testing.assert_allclose(s.positions[0], np.array(
        [3.3161137848673654e01, 1.3927124396757034e01, 1.0505195708760620e00]) * BOHR, rtol=1e-15)


@needs_shared
def test_n2p2_free_structures_and_index():
    path = N2P2 / "Carbon_chain_4G" / "input.data"
    data = read(path, index="10:20:2")
    assert [s.index for s in data] == [10, 12, 14, 16, 18]
    assert not any(s.periodic for s in data) and data[0].volume == 0.0
    assert len(read(path, index=-1)) == 1 and read(path, index=-1)[0].index == 127
    assert [s.index for s in read(path, index=[3, 1])] == [3, 1]


# ---------------------------------------------------------------- DeePMD
def test_deepmd_excerpt():
    path = DATA / "deepmd_mica_bulk"
    assert detect_format(path) == "deepmd"
    data = read(path)
    assert len(data) == 3
    types = np.array((path / "type.raw").read_text().split(), int)
    zmap = np.array([13, 1, 19, 8, 14])  # Al H K O Si
    for i, s in enumerate(data):
        np.testing.assert_array_equal(s.numbers, zmap[types])
        coord = np.load(path / "set.000" / "coord.npy")[i].astype(float)
        np.testing.assert_array_equal(s.positions, coord.reshape(-1, 3))
        np.testing.assert_array_equal(s.cell.ravel(), np.load(path / "set.000" / "box.npy")[i])
        np.testing.assert_array_equal(s.forces.ravel(), np.load(path / "set.000" / "force.npy")[i])
        assert s.energy == float(np.load(path / "set.000" / "energy.npy")[i])
        assert s.pbc.all() and s.stress is None and s.index == i
        assert s.source == str(path / "set.000")


@needs_shared
def test_deepmd_real_system_matches_excerpt():
    path = SHARED / "mica-water-scan-2024" / "bulk"
    data = read_deepmd(path)
    assert len(data) == 750 and data[0].n_atoms == 84  # test/ subfolder is not mixed in
    ref = read(DATA / "deepmd_mica_bulk")
    for a, b in zip(data[:3], ref):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.energy == b.energy


def test_deepmd_virial_nopbc_two_sets(tmp_path):
    sysdir = tmp_path / "sys"
    for k, nf in (("set.000", 2), ("set.001", 1)):
        d = sysdir / k
        d.mkdir(parents=True)
        np.save(d / "coord.npy", np.arange(nf * 6, dtype=float).reshape(nf, 6))
        np.save(d / "box.npy", np.tile(np.diag([2.0, 3.0, 4.0]).ravel(), (nf, 1)))
        np.save(d / "energy.npy", -np.arange(1.0, nf + 1).reshape(nf, 1))
        np.save(d / "virial.npy", np.tile(np.arange(9.0), (nf, 1)))
    (sysdir / "type.raw").write_text("1 0\n")
    (sysdir / "type_map.raw").write_text("O\nH\n")
    data = read(sysdir)
    assert len(data) == 3 and [s.index for s in data] == [0, 1, 0]
    np.testing.assert_array_equal(data[0].numbers, [1, 8])
    np.testing.assert_allclose(data[1].stress, -np.arange(9.0).reshape(3, 3) / 24.0)
    assert data[1].energy == -2.0 and data[0].forces is None
    for k in ("set.000", "set.001"):
        (sysdir / k / "virial.npy").unlink()
        (sysdir / k / "box.npy").unlink()
    (sysdir / "nopbc").touch()
    free = read(sysdir, energy_unit="hartree")
    assert not any(s.periodic for s in free) and free[1].energy == -2.0 * HARTREE


# ---------------------------------------------------------------- rMD17 npz
def test_npz_excerpt():
    path = DATA / "rmd17_ethanol_100.npz"
    raw = np.load(path)
    data = read(path)
    assert len(data) == 100 and data[0].n_atoms == 9
    s = data[7]
    np.testing.assert_array_equal(s.numbers, raw["nuclear_charges"])
    np.testing.assert_array_equal(s.positions, raw["coords"][7])
    assert s.energy == pytest.approx(raw["energies"][7] * KCAL_MOL, rel=1e-15)
    np.testing.assert_allclose(s.forces, raw["forces"][7] * KCAL_MOL, rtol=1e-15)
    assert not s.periodic and s.index == 7 and s.source == str(path)
    ev = read(path, energy_unit="eV", index=0)[0]
    assert ev.energy == raw["energies"][0]


@needs_shared
def test_npz_real_file_matches_excerpt():
    full = read_npz(SHARED / "rmd17" / "rmd17_ethanol_train_01.npz")
    assert len(full) == 1000
    small = read(DATA / "rmd17_ethanol_100.npz")
    np.testing.assert_array_equal(full[99].forces, small[99].forces)


# ---------------------------------------------------------------- aenet XSF
def test_xsf_single_file():
    path = DATA / "xsf_tio2" / "structure7262.xsf"
    (s,) = read(path)
    assert s.n_atoms == 6 and s.energy == -4990.55173909 and s.pbc.all()
    np.testing.assert_array_equal(s.numbers, [22, 22, 8, 8, 8, 8])
    np.testing.assert_array_equal(s.cell[2], [-1.87307987, -1.87308404, 4.78085801])
    np.testing.assert_array_equal(s.positions[2], [0.00003742, 0.93651888, 0.77876265])
    np.testing.assert_array_equal(s.forces[3], [0.00007533, -0.00033064, -0.25724565])
    assert s.source == str(path)


def test_xsf_directory_and_archive(tmp_path):
    folder = DATA / "xsf_tio2"
    assert detect_format(folder) == "xsf"
    data = read(folder)
    assert [Path(s.source).name for s in data] == [
        "structure0001.xsf", "structure3000.xsf", "structure7262.xsf"]
    assert [s.n_atoms for s in data] == [24, 24, 6]
    archive = tmp_path / "xsf.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("structure7262.xsf", "structure0001.xsf", "structure3000.xsf"):
            tar.add(folder / name, arcname=f"xsf/{name}")
    packed = read(archive)
    assert [s.source for s in packed] == [f"{archive}:xsf/{n}" for n in (
        "structure0001.xsf", "structure3000.xsf", "structure7262.xsf")]
    for a, b in zip(packed, data):
        np.testing.assert_array_equal(a.forces, b.forces)


def test_xsf_atoms_block_without_forces(tmp_path):
    path = tmp_path / "mol.xsf"
    path.write_text("# total energy = -1.5 Ha\nATOMS\n8 0.0 0.0 0.0\nH 0.0 0.0 0.96\n")
    (s,) = read_xsf(path)
    assert not s.periodic and s.forces is None and s.energy == pytest.approx(-1.5 * HARTREE)
    np.testing.assert_array_equal(s.numbers, [8, 1])


@needs_shared
def test_xsf_limonitio_archive():
    data = read(SHARED / "li8mo2ni7ti7o32-cooper-2020" / "LiMoNiTiO-xsf.tar.xz")
    assert len(data) == 824 and all(s.n_atoms == 56 and s.forces is not None for s in data)
    assert data[0].source.endswith("LiMoNiTiO-xsf.tar.xz:xsf/structure001.xsf")
    assert data[0].energy == -630.63081206


@pytest.mark.slow
@needs_shared
def test_xsf_tio2_archive():
    data = read(SHARED / "tio2-artrith-urban-2016" / "TiO2-xsf.tar.xz")
    assert len(data) == 7815 and sum(s.n_atoms for s in data) == 165229
    ref = read(DATA / "xsf_tio2" / "structure3000.xsf")[0]
    np.testing.assert_array_equal(data[2999].positions, ref.positions)


# ---------------------------------------------------------------- dispatch
def test_detect_format(tmp_path):
    for name, fmt in (("input.data", "n2p2"), ("input.data.H2O", "n2p2"), ("train.data", "n2p2"),
                      ("a.npz", "npz"), ("a.xsf", "xsf"), ("a.tar.xz", "xsf"), ("a.extxyz", "ase"),
                      ("POSCAR", "ase")):
        (tmp_path / name).write_text("")
        assert detect_format(tmp_path / name) == fmt
