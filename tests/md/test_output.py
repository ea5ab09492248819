"""Thermo CSV, trajectory writers, resume truncation, progress line and atomic writes."""

import io

import ase.io
import numpy as np
import pytest

from jnnp.md.output import (
    THERMO_COLUMNS,
    ProgressMeter,
    ThermoLog,
    TrajectoryWriter,
    atomic_write_bytes,
    atomic_write_npz,
    read_thermo,
)
from jnnp.units import TIME_UNIT_FS

HEADER = "step,time_fs,temperature_K,e_pot_eV,e_kin_eV,e_tot_eV,pressure_GPa,volume_A3"
CELL = np.array([[9.87654321012, 0.0, 0.0], [1.2345678901, 8.7654321098, 0.0],
                 [-0.5432109876, 0.9876543210, 10.1234567891]])
NUMBERS = np.array([8, 1, 1, 8, 1, 1, 29])
PBC = (True, True, False)


def _frames(n_frames, seed=0):
    rng = np.random.default_rng(seed)
    n = len(NUMBERS)
    return dict(
        positions=rng.random((n_frames, n, 3)) @ CELL + rng.standard_normal((n_frames, n, 3)) * 3,
        forces=rng.standard_normal((n_frames, n, 3)) * 1.2345678901234,
        velocities=rng.standard_normal((n_frames, n, 3)) * 1e-2,
        energy=-1234.567890123456 + rng.standard_normal(n_frames),
    )


def _thermo_rows(steps, with_pv=False):
    s = np.asarray(steps)
    rows = {"step": s, "time_fs": s * 0.25, "temperature_K": 300.0 + np.sqrt(s + 0.1),
            "e_pot_eV": -5432.123456789 + 1e-3 * s / 7, "e_kin_eV": 12.3456789 + s / 13}
    if with_pv:
        rows["pressure_GPa"] = 0.1 * np.cos(s)
        rows["volume_A3"] = 1000.0 + s / 3
    return rows


# ------------------------------------------------------------------ thermo


def test_thermo_csv_header_and_numpy_roundtrip(tmp_path):
    path = tmp_path / "thermo.csv"
    rows = _thermo_rows([0, 10, 20])
    with ThermoLog(path) as log:
        assert log.append(rows) == 3
        # flushed after each call: readable while the log is open
        assert path.read_text().splitlines()[0] == HEADER
        log.append({**_thermo_rows([30], with_pv=True), "e_tot_eV": 1.5})
    data = np.genfromtxt(path, delimiter=",", names=True)
    assert data.dtype.names == THERMO_COLUMNS
    np.testing.assert_array_equal(data["step"], [0, 10, 20, 30])
    np.testing.assert_array_equal(data["e_pot_eV"][:3], rows["e_pot_eV"])  # exact round trip
    np.testing.assert_array_equal(data["e_tot_eV"][:3], rows["e_pot_eV"] + rows["e_kin_eV"])
    assert data["e_tot_eV"][3] == 1.5
    assert np.all(np.isnan(data["pressure_GPa"][:3])) and np.all(np.isnan(data["volume_A3"][:3]))
    assert data["pressure_GPa"][3] == pytest.approx(0.1 * np.cos(30))
    d = read_thermo(path)
    assert d["step"].dtype.kind == "i" and list(d["step"]) == [0, 10, 20, 30]


def test_thermo_rejects_bad_rows(tmp_path):
    log = ThermoLog(tmp_path / "t.csv")
    with pytest.raises(ValueError, match="unknown"):
        log.append({**_thermo_rows([0]), "temp": 1.0})
    with pytest.raises(ValueError, match="lack"):
        log.append({"step": 0, "time_fs": 0.0})
    log.close()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        ThermoLog(tmp_path / "other.csv", resume_from_step=0)


def test_thermo_resume_truncates(tmp_path):
    path = tmp_path / "thermo.csv"
    with ThermoLog(path) as log:
        log.append(_thermo_rows(np.arange(0, 60, 10)))
    with open(path, "a") as f:
        f.write("60,15.0,30")  # torn row from a crash
    with ThermoLog(path, resume_from_step=30) as log:
        assert list(read_thermo(path)["step"]) == [0, 10, 20, 30]
        log.append(_thermo_rows([40, 50]))
    assert list(read_thermo(path)["step"]) == [0, 10, 20, 30, 40, 50]
    # a fresh log (no resume) starts over
    ThermoLog(path).close()
    assert path.read_text() == HEADER + "\n"
    # resuming a missing file just creates it
    with ThermoLog(tmp_path / "new.csv", resume_from_step=5) as log:
        log.append(_thermo_rows([6]))
    assert list(read_thermo(tmp_path / "new.csv")["step"]) == [6]


# ------------------------------------------------------------------ trajectories


def test_extxyz_reads_back_exactly(tmp_path):
    path = tmp_path / "traj.xyz"
    fr = _frames(3)
    with TrajectoryWriter(path, NUMBERS, CELL, PBC) as w:
        w.append(fr["positions"][0], forces=fr["forces"][0], energy=fr["energy"][0],
                 velocities=fr["velocities"][0], step=0, time_fs=0.0)
        w.append(fr["positions"][1:], forces=fr["forces"][1:], energy=fr["energy"][1:],
                 velocities=fr["velocities"][1:], step=[5, 10], time_fs=[2.5, 5.0])
    images = ase.io.read(path, ":")
    assert len(images) == 3
    for i, atoms in enumerate(images):
        np.testing.assert_array_equal(atoms.numbers, NUMBERS)
        np.testing.assert_allclose(atoms.positions, fr["positions"][i], rtol=0, atol=1e-9)
        np.testing.assert_allclose(atoms.cell.array, CELL, rtol=0, atol=1e-12)
        assert tuple(atoms.pbc) == PBC
        np.testing.assert_allclose(atoms.get_forces(), fr["forces"][i], rtol=0, atol=1e-12)
        assert atoms.get_potential_energy() == pytest.approx(fr["energy"][i], abs=1e-12)
        np.testing.assert_allclose(atoms.arrays["velocities"], fr["velocities"][i], atol=1e-15)
        assert atoms.info["step"] == [0, 5, 10][i]
        assert atoms.info["time_fs"] == pytest.approx([0.0, 2.5, 5.0][i])
    # shortest-repr floats: the round trip is in fact bit exact
    np.testing.assert_array_equal(images[2].positions, fr["positions"][2])


def test_extxyz_minimal_frame_and_nonperiodic(tmp_path):
    path = tmp_path / "mol.extxyz"
    fr = _frames(1)
    with TrajectoryWriter(path, NUMBERS, np.zeros((3, 3)), False) as w:
        w.append(fr["positions"][0], step=7, time_fs=3.5)
    atoms = ase.io.read(path)
    assert not atoms.pbc.any()
    assert atoms.calc is None
    np.testing.assert_array_equal(atoms.positions, fr["positions"][0])
    assert "Properties=species:S:1:pos:R:3 " in path.read_text().splitlines()[1]


def test_traj_format_roundtrip(tmp_path):
    path = tmp_path / "md.traj"
    fr = _frames(2)
    with TrajectoryWriter(path, NUMBERS, CELL, PBC) as w:
        assert w.fmt == "traj"
        w.append(fr["positions"], forces=fr["forces"], energy=fr["energy"],
                 velocities=fr["velocities"], step=[0, 1], time_fs=[0.0, 0.5])
    images = ase.io.read(path, ":")
    assert len(images) == 2
    for i, atoms in enumerate(images):
        np.testing.assert_array_equal(atoms.positions, fr["positions"][i])
        np.testing.assert_array_equal(atoms.get_forces(), fr["forces"][i])
        assert atoms.get_potential_energy() == fr["energy"][i]
        np.testing.assert_allclose(atoms.get_velocities() / TIME_UNIT_FS, fr["velocities"][i],
                                   rtol=1e-12)
        assert atoms.info["step"] == i
        np.testing.assert_allclose(atoms.cell.array, CELL)
        assert tuple(atoms.pbc) == PBC


@pytest.mark.parametrize("fmt", ["extxyz", "traj"])
def test_trajectory_resume_truncates(tmp_path, fmt):
    path = tmp_path / ("t.xyz" if fmt == "extxyz" else "t.traj")
    fr = _frames(6)
    steps = [0, 10, 20, 30, 40]
    with TrajectoryWriter(path, NUMBERS, CELL, PBC, fmt=fmt) as w:
        for i, s in enumerate(steps):
            w.append(fr["positions"][i], forces=fr["forces"][i], energy=fr["energy"][i],
                     step=s, time_fs=s * 0.5)
    if fmt == "extxyz":
        with open(path, "a") as f:  # torn frame from a crash
            f.write(f"{len(NUMBERS)}\nProperties=species:S:1:pos:R:3 step=50\nO 1.0 2.0")
    with TrajectoryWriter(path, NUMBERS, CELL, PBC, fmt=fmt, resume_from_step=20) as w:
        assert [a.info["step"] for a in ase.io.read(path, ":")] == [0, 10, 20]
        w.append(fr["positions"][5], forces=fr["forces"][5], energy=fr["energy"][5],
                 step=30, time_fs=15.0)
    images = ase.io.read(path, ":")
    assert [a.info["step"] for a in images] == [0, 10, 20, 30]
    np.testing.assert_array_equal(images[3].positions, fr["positions"][5])
    np.testing.assert_array_equal(images[2].positions, fr["positions"][2])
    # no resume: start over
    TrajectoryWriter(path, NUMBERS, CELL, PBC, fmt=fmt).close()
    assert path.stat().st_size == 0 or len(ase.io.read(path, ":")) == 0


# ------------------------------------------------------------------ progress, atomic writes


def test_progress_meter_plain_line():
    buf = io.StringIO()
    with ProgressMeter(1000, 0.5, 64, file=buf, use_tqdm=False, min_interval_s=0) as pm:
        pm.update(100, temperature_K=301.25, e_tot_eV=-12.5)
        pm.update(1000, temperature_K=299.5, e_tot_eV=-12.25)
        r = pm.rates()
    out = buf.getvalue()
    assert out.startswith("\r") and out.endswith("\n")
    last = out.rstrip("\n").split("\r")[-1]
    for piece in ("step 1000/1000", "t 0.500 ps", "ns/day", "atom-steps/s", "T 299.5 K",
                  "E_tot -12.250000 eV"):
        assert piece in last
    assert r["atom_steps_per_s"] == pytest.approx(64 * r["steps_per_s"])
    assert r["ns_per_day"] == pytest.approx(r["steps_per_s"] * 0.5e-6 * 86400)


def test_progress_meter_tqdm():
    pytest.importorskip("tqdm")
    buf = io.StringIO()
    pm = ProgressMeter(200, 1.0, 10, start_step=50, file=buf, use_tqdm=True)
    pm.update(100, temperature_K=300.0, e_tot_eV=-1.0)
    pm.update(200)
    pm.close()
    out = buf.getvalue()
    assert "ns/day" in out and "atom-steps/s" in out and "T 300.0 K" in out


def test_atomic_writes(tmp_path):
    p = atomic_write_bytes(tmp_path / "a.bin", b"hello")
    assert p.read_bytes() == b"hello"
    atomic_write_bytes(p, b"world")
    assert p.read_bytes() == b"world"
    q = atomic_write_npz(tmp_path / "restart.npz.tmpname", x=np.arange(3), y=np.eye(2))
    assert q.name == "restart.npz.tmpname"
    with np.load(q) as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))
        np.testing.assert_array_equal(z["y"], np.eye(2))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.bin", "restart.npz.tmpname"]

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_npz(q, bad=Boom())
    with np.load(q) as z:  # old file intact, no tmp left behind
        np.testing.assert_array_equal(z["x"], np.arange(3))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.bin", "restart.npz.tmpname"]
