"""Malformed input: every case raises one DataFormatError naming file, line/frame and expectation."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from jnnp.data import read, read_deepmd
from jnnp.errors import DataFormatError

DATA = Path(__file__).resolve().parents[1] / "data"

# A valid two-frame input.data; the comments give the 1-based line numbers used below.
VALID = """\
begin
comment water
lattice 5.0 0.0 0.0
lattice 0.0 5.0 0.0
lattice 0.0 0.0 5.0
atom 0.0 0.0 0.0 O -0.8 0.0 0.1 0.2 0.3
atom 0.96 0.0 0.0 H 0.4 0.0 -0.1 0.0 0.0
atom -0.24 0.93 0.0 H 0.4 0.0 0.0 -0.2 -0.3
energy -14.2
charge 0.0
end
begin
atom 0.0 0.0 0.0 H 0.0 0.0 0.0 0.0 0.5
atom 0.74 0.0 0.0 H 0.0 0.0 0.0 0.0 -0.5
energy -1.0
charge 0.0
end
""".splitlines()


def _set(lineno: int, text: str):
    return lambda lines: lines[:lineno - 1] + [text] + lines[lineno:]


def _drop(lineno: int):
    return lambda lines: lines[:lineno - 1] + lines[lineno:]


def _insert(lineno: int, text: str):
    return lambda lines: lines[:lineno - 1] + [text] + lines[lineno - 1:]


# (id, edit of VALID, expected line, expected frame, text the expectation must contain)
N2P2_CASES = [
    ("missing_end_at_eof", _drop(17), 16, 1, "'end' of the frame begun at line 12"),
    ("truncated", lambda lines: lines[:13], 13, 1, "'end' of the frame begun at line 12"),
    ("missing_end_before_begin", _drop(11), 11, 0, "'end' of the frame begun at line 1"),
    ("two_lattice_lines", _drop(5), 10, 0, "0 or 3 'lattice' lines"),
    ("four_lattice_lines", _insert(6, "lattice 1.0 1.0 1.0"), 6, 0, "at most 3 'lattice' lines"),
    ("lattice_3_fields", _set(4, "lattice 0.0 5.0"), 4, 0, "4 fields 'lattice ax ay az'"),
    ("atom_8_fields", _set(7, "atom 0.96 0.0 0.0 H 0.4 0.0 -0.1 0.0"), 7, 0, "10 fields 'atom x y z"),
    ("atom_force_count_mismatch", _set(14, "atom 0.74 0.0 0.0 H 0.0 0.0"), 14, 1, "10 fields"),
    ("non_numeric_position", _set(6, "atom 0.0 abc 0.0 O -0.8 0.0 0.1 0.2 0.3"), 6, 0,
     "a number for an atom position"),
    ("non_numeric_energy", _set(15, "energy -1.0x"), 15, 1, "a number for the energy"),
    ("unknown_element", _set(8, "atom -0.24 0.93 0.0 Xy 0.4 0.0 0.0 -0.2 -0.3"), 8, 0,
     "a chemical element symbol"),
    ("nan_position", _set(6, "atom nan 0.0 0.0 O -0.8 0.0 0.1 0.2 0.3"), 6, 0,
     "a finite number for an atom position"),
    ("inf_force", _set(13, "atom 0.0 0.0 0.0 H 0.0 0.0 0.0 0.0 inf"), 13, 1,
     "a finite number for a force component"),
    ("nan_energy", _set(9, "energy NaN"), 9, 0, "a finite number for the energy"),
    ("missing_energy", _drop(9), 10, 0, "an 'energy' line"),
    ("duplicate_energy", _insert(10, "energy -14.2"), 10, 0, "one 'energy' line per frame"),
    ("zero_volume_cell", _set(5, "lattice 5.0 5.0 0.0"), 11, 0, "non-zero volume"),
    ("keyword_outside_block", _insert(12, "energy 3.0"), 12, 1, "'begin'"),
    ("unknown_keyword", _insert(9, "forces 0 0 0"), 9, 0, "one of begin, comment, lattice"),
    ("no_atoms", lambda lines: ["begin", "energy 1.0", "end"], 3, 0, "at least one 'atom' line"),
]


@pytest.mark.parametrize("edit, line, frame, expected", [c[1:] for c in N2P2_CASES],
                         ids=[c[0] for c in N2P2_CASES])
def test_n2p2_malformed(tmp_path, edit, line, frame, expected):
    path = tmp_path / "input.data"
    path.write_text("\n".join(edit(list(VALID))) + "\n")
    with pytest.raises(DataFormatError) as info:
        read(path)
    err, msg = info.value, str(info.value)
    assert str(path) in msg and f"line {line}," in msg and f"frame {frame}:" in msg
    assert expected in msg
    assert (err.line, err.frame) == (line, frame)


def test_n2p2_valid_base_and_empty(tmp_path):
    path = tmp_path / "input.data"
    path.write_text("\n".join(VALID) + "\n")
    assert len(read(path)) == 2
    path.write_text("\n\n")
    with pytest.raises(DataFormatError, match="at least one 'begin'"):
        read(path)


# ---------------------------------------------------------------- DeePMD shapes
def _deepmd(tmp_path) -> Path:
    sysdir = tmp_path / "sys"
    (sysdir / "set.000").mkdir(parents=True)
    (sysdir / "type.raw").write_text("0 1 1")
    (sysdir / "type_map.raw").write_text("O\nH\n")
    np.save(sysdir / "set.000" / "coord.npy", np.zeros((2, 9)) + np.arange(9))
    np.save(sysdir / "set.000" / "box.npy", np.tile(np.eye(3).ravel() * 10, (2, 1)))
    np.save(sysdir / "set.000" / "energy.npy", np.zeros(2))
    np.save(sysdir / "set.000" / "force.npy", np.zeros((2, 9)))
    return sysdir


DEEPMD_CASES = [
    ("coord_shape", "set.000/coord.npy", np.zeros((2, 8)), "shape (nframes, 9)"),
    ("coord_3d", "set.000/coord.npy", np.zeros((2, 3, 3)), "shape (nframes, 9)"),
    ("box_shape", "set.000/box.npy", np.zeros((2, 3, 3)), "shape (2, 9)"),
    ("box_frames", "set.000/box.npy", np.zeros((3, 9)), "shape (2, 9)"),
    ("energy_shape", "set.000/energy.npy", np.zeros(3), "shape (2,)"),
    ("force_shape", "set.000/force.npy", np.zeros((2, 6)), "shape (2, 9)"),
    ("virial_shape", "set.000/virial.npy", np.zeros((2, 6)), "shape (2, 9)"),
    ("nan_force", "set.000/force.npy", np.full((2, 9), np.nan), "finite force values"),
    ("singular_box", "set.000/box.npy", np.zeros((2, 9)), "non-zero volume"),
    ("bad_type", "type.raw", "0 1 2", "types in 0..1"),
    ("unknown_element", "type_map.raw", "O\nQq\n", "a chemical element symbol"),
]


@pytest.mark.parametrize("target, content, expected", [c[1:] for c in DEEPMD_CASES],
                         ids=[c[0] for c in DEEPMD_CASES])
def test_deepmd_malformed(tmp_path, target, content, expected):
    sysdir = _deepmd(tmp_path)
    if isinstance(content, str):
        (sysdir / target).write_text(content)
    else:
        np.save(sysdir / target, content)
    with pytest.raises(DataFormatError) as info:
        read_deepmd(sysdir)
    assert str(sysdir / target) in str(info.value) and expected in str(info.value)


def test_deepmd_missing_files(tmp_path):
    sysdir = _deepmd(tmp_path)
    (sysdir / "set.000" / "coord.npy").unlink()
    with pytest.raises(DataFormatError, match=r"coord\.npy: expected array of shape \(nframes, 9\)"):
        read(sysdir)
    (sysdir / "type_map.raw").unlink()
    with pytest.raises(DataFormatError, match="type_map.raw"):
        read(sysdir)
    with pytest.raises(DataFormatError, match="DeePMD system"):
        read(tmp_path)


# ---------------------------------------------------------------- npz
@pytest.mark.parametrize("change, expected", [
    (dict(coords=None), "key 'coords' or 'R'"),
    (dict(forces=np.zeros((100, 8, 3))), "'forces' of shape (100, 9, 3)"),
    (dict(energies=np.zeros(99)), "'energies' of shape (100,)"),
    (dict(energies=np.full(100, np.inf)), "finite 'energies'"),
    (dict(nuclear_charges=np.array([6, 0, 1, 1, 1, 1, 1, 8, 1])), "atomic numbers in 1..118"),
], ids=["missing_key", "forces_shape", "energies_frames", "inf_energy", "bad_number"])
def test_npz_malformed(tmp_path, change, expected):
    src = dict(np.load(DATA / "rmd17_ethanol_100.npz"))
    for key, value in change.items():
        src.pop(key) if value is None else src.__setitem__(key, value)
    path = tmp_path / "bad.npz"
    np.savez(path, **src)
    with pytest.raises(DataFormatError) as info:
        read(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(DataFormatError, match="readable .npz"):
        read(path)


# ---------------------------------------------------------------- XSF
GOOD_XSF = (DATA / "xsf_tio2" / "structure7262.xsf").read_text().splitlines()

XSF_CASES = [
    ("short_primvec", _set(7, "-1.87307987 -1.87308404"), 4, "3 lines of 3 numbers after PRIMVEC"),
    ("atom_count", _drop(15), 8, "6 atom lines after PRIMCOORD"),
    ("force_mismatch", _set(11, "Ti 1.87317764 -0.93670079 3.58564332"), 11,
     "forces on every atom line or on none"),
    ("bad_element", _set(12, "Zz 0.0 0.9 0.7 0.0 0.0 0.25"), 12, "a chemical element symbol"),
    ("nan_coordinate", _set(12, "O nan 0.9 0.7 0.0 0.0 0.25"), 12, "a finite number for an atom position"),
    ("bad_energy", _set(1, "# total energy = abc eV"), 1, "a number for the total energy"),
    ("singular_cell", _set(7, "0.0 0.0 0.0"), 4, "non-zero volume"),
    ("unknown_keyword", _insert(3, "FOO"), 3, "an XSF keyword"),
    ("six_fields", _set(13, "O 0.0 0.9 0.7 0.0 0.0"), 13, "4 or 7 fields"),
]


@pytest.mark.parametrize("edit, line, expected", [c[1:] for c in XSF_CASES],
                         ids=[c[0] for c in XSF_CASES])
def test_xsf_malformed(tmp_path, edit, line, expected):
    path = tmp_path / "bad.xsf"
    path.write_text("\n".join(edit(list(GOOD_XSF))) + "\n")
    with pytest.raises(DataFormatError) as info:
        read(path)
    msg = str(info.value)
    assert str(path) in msg and re.search(rf"line {line}\b", msg) and expected in msg


def test_xsf_archive_errors(tmp_path):
    path = tmp_path / "empty.tar.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(DataFormatError, match="readable tar archive"):
        read(path)


# ---------------------------------------------------------------- ASE fallback
def test_extxyz_unreadable(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text("3\nProperties=species:S:1:pos:R:3\nO 0 0 0\nH 0 0\n")
    with pytest.raises(DataFormatError) as info:
        read(path)
    assert str(path) in str(info.value) and "ase.io.read" in str(info.value)
