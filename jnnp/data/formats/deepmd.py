"""Reader for DeePMD-kit npy systems.

A system directory holds::

    type.raw          N integers (whitespace separated): type of each atom
    type_map.raw      element symbol of each type, one per line
    nopbc             optional empty file: the system is not periodic
    set.000/          one or more sets, read in sorted order
        box.npy       (nframes, 9)   lattice vectors as rows [Å] (absent allowed with nopbc)
        coord.npy     (nframes, 3N)  positions [Å]
        energy.npy    (nframes,)     total energy [eV] (optional; (nframes, 1) accepted)
        force.npy     (nframes, 3N)  forces [eV/Å] (optional)
        virial.npy    (nframes, 9)   virial [eV] (optional) → stress = -virial / V [eV/Å³]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jnnp.data.formats import check_cell, check_finite, element_number
from jnnp.data.structure import Dataset, Structure
from jnnp.errors import DataFormatError
from jnnp.units import energy_factor, length_factor

__all__ = ["read_deepmd", "is_deepmd_system"]


def is_deepmd_system(path) -> bool:
    """True if ``path`` is a directory holding ``type.raw`` and at least one ``set.*`` folder."""
    path = Path(path)
    return path.is_dir() and (path / "type.raw").is_file() and any(
        p.is_dir() for p in path.glob("set.*"))


def read_deepmd(path, *, length_unit: str = "angstrom", energy_unit: str = "eV",
                type_map=None) -> Dataset:
    """Read one DeePMD npy system directory (all of its ``set.*`` folders, in sorted order).

    Args:
        path: the system directory (holding ``type.raw`` and ``set.*``).
        length_unit: unit of ``box``/``coord`` (DeePMD convention: Å).
        energy_unit: unit of ``energy``/``virial`` (DeePMD convention: eV); forces in
            ``energy_unit``/``length_unit``.
        type_map: element symbols per type; overrides / replaces ``type_map.raw``.

    Returns:
        `Dataset`; each `Structure` has ``source`` = the set folder and ``index`` = row in it.

    Raises:
        DataFormatError: missing files, wrong array shapes (the message names the file and the
            expected shape), NaN/inf values, unknown types or elements, singular boxes.
    """
    root = Path(path)
    if not is_deepmd_system(root):
        raise DataFormatError(root, "a DeePMD system directory with type.raw and set.*/ folders",
                              "neither" if not root.is_dir() else "missing type.raw or set.*")
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    numbers = _read_types(root, type_map)
    periodic = not (root / "nopbc").exists()
    structures: list[Structure] = []
    for set_dir in sorted(p for p in root.glob("set.*") if p.is_dir()):
        structures.extend(_read_set(set_dir, numbers, periodic, lf, ef))
    return Dataset(structures)


def _read_types(root: Path, type_map) -> np.ndarray:
    """Atomic numbers (N,) from ``type.raw`` and ``type_map.raw`` (or ``type_map``)."""
    type_file = root / "type.raw"
    tokens = type_file.read_text().split()
    try:
        types = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        raise DataFormatError(type_file, "integer atom types", " ".join(tokens[:10])) from None
    if types.size == 0:
        raise DataFormatError(type_file, "at least one atom type", "empty file")
    map_file = root / "type_map.raw"
    if type_map is None:
        if not map_file.is_file():
            raise DataFormatError(map_file, "a type_map.raw file with one element symbol per type "
                                  "(or pass type_map=[...])", "no such file")
        type_map = map_file.read_text().split()
    zs = np.array([element_number(s, map_file) for s in type_map], dtype=np.int64)
    if types.min() < 0 or types.max() >= len(zs):
        raise DataFormatError(type_file, f"types in 0..{len(zs) - 1} (type_map {list(type_map)})",
                              f"type {int(types.max() if types.max() >= len(zs) else types.min())}")
    return zs[types]


def _load(set_dir: Path, name: str, shape: tuple, *, required: bool) -> np.ndarray | None:
    """Load ``set_dir/name`` as float64 and check its shape (None entries match any size)."""
    file = set_dir / name
    if not file.is_file():
        if required:
            raise DataFormatError(file, f"array of shape {_fmt(shape)}", "no such file")
        return None
    try:
        arr = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataFormatError(file, "a numeric .npy array", str(exc)) from None
    if name == "energy.npy" and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        raise DataFormatError(file, f"array of shape {_fmt(shape)}", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataFormatError(file, "a numeric array", f"dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    check_finite(arr, file, name[:-4] + " values")
    return arr


def _fmt(shape) -> str:
    dims = ["nframes" if s is None else str(s) for s in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _read_set(set_dir: Path, numbers: np.ndarray, periodic: bool, lf: float, ef: float):
    n = numbers.size
    coord = _load(set_dir, "coord.npy", (None, 3 * n), required=True)
    nf = coord.shape[0]
    box = _load(set_dir, "box.npy", (nf, 9), required=periodic)
    energy = _load(set_dir, "energy.npy", (nf,), required=False)
    force = _load(set_dir, "force.npy", (nf, 3 * n), required=False)
    virial = _load(set_dir, "virial.npy", (nf, 9), required=False)
    if virial is not None and not periodic:
        raise DataFormatError(set_dir / "virial.npy", "no virial for a non-periodic (nopbc) system",
                              "virial.npy present")
    out = []
    for i in range(nf):
        cell = box[i].reshape(3, 3) * lf if periodic else np.zeros((3, 3))
        stress = None
        if periodic:
            check_cell(cell, set_dir / "box.npy", frame=i)
            if virial is not None:
                stress = -virial[i].reshape(3, 3) * ef / abs(np.linalg.det(cell))
        out.append(Structure(
            positions=coord[i].reshape(n, 3) * lf,
            numbers=numbers,
            cell=cell,
            pbc=np.full(3, periodic),
            energy=None if energy is None else energy[i] * ef,
            forces=None if force is None else force[i].reshape(n, 3) * (ef / lf),
            stress=stress,
            source=str(set_dir),
            index=i,
        ))
    return out
