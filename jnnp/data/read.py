"""`read`: one entry point for every supported structure-data format.

Formats and how they are recognised when ``format`` is None:

========  =====================================================================  ===============
format    recognised by                                                          default units
========  =====================================================================  ===============
n2p2      name contains ``input.data``, or extension ``.data``                   Å, eV
deepmd    directory holding ``type.raw`` and ``set.*/``                          Å, eV
npz       extension ``.npz`` (rMD17 / sGDML keys)                                Å, kcal/mol
xsf       extension ``.xsf``; ``.tar[.gz|.xz|.bz2]``/``.tgz``; directory of      Å, eV
          ``*.xsf`` files
ase       anything else (extended XYZ, POSCAR, OUTCAR, ...) via ``ase.io.read``  Å, eV
========  =====================================================================  ===============

Any other ``format`` string is passed to ``ase.io.read`` as its format name.
"""

from __future__ import annotations

from pathlib import Path

from jnnp.data.formats.ase_formats import read_ase
from jnnp.data.formats.deepmd import is_deepmd_system, read_deepmd
from jnnp.data.formats.n2p2 import read_n2p2
from jnnp.data.formats.npz import read_npz
from jnnp.data.formats.xsf import ARCHIVE_SUFFIXES, read_xsf
from jnnp.data.structure import Dataset
from jnnp.errors import DataFormatError

__all__ = ["read", "detect_format", "FORMATS"]

_ALIASES = {"n2p2": "n2p2", "runner": "n2p2", "input.data": "n2p2", "deepmd": "deepmd",
            "deepmd/npy": "deepmd", "npz": "npz", "rmd17": "npz", "xsf": "xsf", "aenet": "xsf",
            "ase": "ase"}
FORMATS = ("n2p2", "deepmd", "npz", "xsf", "ase")
_DEFAULT_UNITS = {"n2p2": ("angstrom", "eV"), "deepmd": ("angstrom", "eV"),
                  "npz": ("angstrom", "kcal/mol"), "xsf": ("angstrom", "eV"), "ase": ("angstrom", "eV")}
_READERS = {"n2p2": read_n2p2, "deepmd": read_deepmd, "npz": read_npz, "xsf": read_xsf}


def detect_format(path) -> str:
    """Guess the format of ``path``: one of `FORMATS` (see the module docstring).

    Raises:
        DataFormatError: ``path`` does not exist, or is a directory of no known kind.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if is_deepmd_system(path):
            return "deepmd"
        if any(path.glob("*.xsf")):
            return "xsf"
        raise DataFormatError(path, "a DeePMD system (type.raw + set.*/) or a directory of *.xsf "
                              "files", "a directory with neither")
    if not path.exists():
        raise DataFormatError(path, "an existing file or directory", "no such path")
    if "input.data" in name or name.endswith(".data"):
        return "n2p2"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".xsf") or name.endswith(ARCHIVE_SUFFIXES):
        return "xsf"
    return "ase"


def read(path, format: str | None = None, *, length_unit: str | None = None,
         energy_unit: str | None = None, index=None) -> Dataset:
    """Read structures with labels from ``path`` into a `Dataset` in eV and Å.

    Args:
        path: file or directory.
        format: one of ``"n2p2"`` (alias ``"runner"``), ``"deepmd"``, ``"npz"`` (``"rmd17"``),
            ``"xsf"`` (``"aenet"``), ``"ase"``, or any ``ase.io`` format name (e.g. ``"extxyz"``);
            None to detect it with `detect_format`.
        length_unit: length unit in the file (``"angstrom"``, ``"bohr"``, ``"nm"``); None for the
            format's default (table in the module docstring).
        energy_unit: energy unit in the file (``"eV"``, ``"hartree"``, ``"kcal/mol"``, ...); None
            for the format's default. Forces are converted as energy/length, stress as
            energy/length³.
        index: frames to keep after reading (the whole file is always validated): an int, a slice,
            a sequence of ints, or an ASE-style string (``":"``, ``"-1"``, ``"10:20:2"``).

    Returns:
        `Dataset` whose structures carry provenance (``source``, ``index`` in the source,
        ``line`` for line-based formats).

    Raises:
        DataFormatError: malformed or unrecognised input, with file, line/frame and expectation.
        ValueError: unknown unit names or a bad ``index``.
    """
    fmt = _ALIASES.get(format.lower(), None) if format else detect_format(path)
    ase_format = None
    if fmt is None:
        fmt, ase_format = "ase", format
    lu_default, eu_default = _DEFAULT_UNITS[fmt]
    units = dict(length_unit=length_unit or lu_default, energy_unit=energy_unit or eu_default)
    if fmt == "ase":
        data = read_ase(path, ase_format, **units)
    else:
        data = _READERS[fmt](path, **units)
    return data if index is None else _select(data, index)


def _select(data: Dataset, index) -> Dataset:
    """Apply ``index`` (int, slice, sequence of ints, or ASE-style string) to ``data``."""
    if isinstance(index, str):
        index = _parse_index(index)
    if isinstance(index, slice):
        return data[index]
    if isinstance(index, int):
        return Dataset([data[index]])
    return data[list(index)]


def _parse_index(text: str):
    """``"3"`` → 3, ``"-1"`` → -1, ``"2:10:2"`` → slice(2, 10, 2), ``":"`` → slice(None)."""
    try:
        if ":" not in text:
            return int(text)
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise ValueError(f"index string must be an int or 'start:stop:step', got {text!r}") from None
    if len(parts) > 3:
        raise ValueError(f"index string must be an int or 'start:stop:step', got {text!r}")
    return slice(*parts)
