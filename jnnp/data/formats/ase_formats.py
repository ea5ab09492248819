"""Extended XYZ and every other format ``ase.io.read`` understands.

ASE converts most formats to Å and eV itself; ``length_unit``/``energy_unit`` only rescale
further (for files whose numbers ASE takes at face value, such as extended XYZ in other units).
"""

from __future__ import annotations

import numpy as np

from jnnp.data.structure import Dataset, Structure
from jnnp.errors import DataFormatError
from jnnp.units import energy_factor, length_factor

__all__ = ["read_ase", "scale_units"]

_XYZ_FORMATS = ("extxyz", "xyz")
_XYZ_SUFFIXES = (".xyz", ".extxyz")


def read_ase(path, format: str | None = None, *, length_unit: str = "angstrom",
             energy_unit: str = "eV") -> Dataset:
    """Read all frames of ``path`` with ``ase.io.read(path, index=':', format=format)``.

    Args:
        path: the file.
        format: ASE format name (None: ASE guesses from the name and content).
        length_unit: unit of the lengths ASE returns (normally Å).
        energy_unit: unit of the energies ASE returns (normally eV).

    Returns:
        `Dataset`; labels come from the calculator ASE attaches (energy eV, forces (N, 3) eV/Å,
        stress (3, 3) eV/Å³). ``source`` = path, ``index`` = frame; for (extended) XYZ files
        ``line`` = the 1-based line of the frame's atom-count line, and ``comment`` = ``info['comment']``.

    Raises:
        DataFormatError: ASE could not read the file (its message is quoted) or it has no frames.
    """
    import ase.io

    path = str(path)
    try:
        frames = ase.io.read(path, index=":", format=format)
    except Exception as exc:  # ASE raises many types (ValueError, KeyError, StopIteration, ...)
        what = f"a file ase.io.read can read as {format or 'its guessed format'}"
        raise DataFormatError(path, what, f"{type(exc).__name__}: {exc}") from None
    if not frames:
        raise DataFormatError(path, "at least one frame", "no frames")
    is_xyz = format in _XYZ_FORMATS or (format is None and path.lower().endswith(_XYZ_SUFFIXES))
    line = 1
    structures = []
    for i, atoms in enumerate(frames):
        s = Structure.from_ase(atoms, source=path, index=i)
        comment = atoms.info.get("comment", "")
        charge = atoms.info.get("charge")
        s = s.replace(line=line if is_xyz else None, comment=str(comment),
                      total_charge=None if charge is None else float(charge))
        structures.append(s)
        line += len(atoms) + 2
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    return Dataset(scale_units(structures, lf, ef))


def scale_units(structures, lf: float, ef: float) -> list[Structure]:
    """Rescale structures: lengths × ``lf`` [Å/unit], energies × ``ef`` [eV/unit].

    Forces scale by ``ef / lf`` and stress by ``ef / lf**3``. Returns the input list unchanged
    when both factors are 1.
    """
    if lf == 1.0 and ef == 1.0:
        return list(structures)

    def mul(x, f):
        return None if x is None else np.asarray(x) * f

    return [s.replace(positions=s.positions * lf, cell=s.cell * lf, energy=mul(s.energy, ef),
                      forces=mul(s.forces, ef / lf), stress=mul(s.stress, ef / lf**3))
            for s in structures]
