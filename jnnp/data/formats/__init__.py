"""File-format readers of `jnnp.data` and the checks they share.

Each submodule reads one family of formats and returns a `Dataset` in eV and Å:

* `jnnp.data.formats.n2p2`: n2p2/RuNNer ``input.data``.
* `jnnp.data.formats.deepmd`: DeePMD npy systems (``type.raw`` + ``set.*/``).
* `jnnp.data.formats.npz`: rMD17 / sGDML ``.npz`` archives.
* `jnnp.data.formats.xsf`: aenet XSF files, directories and ``.tar.*`` archives of them.
* `jnnp.data.formats.ase_formats`: extended XYZ and everything else ``ase.io.read`` knows.

This module holds only helpers (it must not import the submodules, which import it).
"""

from __future__ import annotations

import math

import numpy as np

from jnnp.errors import DataFormatError

__all__ = ["parse_float", "parse_floats", "element_number", "check_cell", "check_finite",
           "CELL_TOL"]

# A cell is singular when |det| <= CELL_TOL * |a| |b| |c| (relative to a cube of the same edges).
CELL_TOL = 1e-10


def parse_float(token: str, path, what: str, *, line=None, frame=None) -> float:
    """Parse one finite float.

    Args:
        token: the text, e.g. ``"-1.5E+01"``.
        path: file named in the error.
        what: what the number is, for the message (e.g. ``"the x coordinate"``).
        line: 1-based line number for the message.
        frame: 0-based frame index for the message.

    Raises:
        DataFormatError: not a number, or NaN/inf.
    """
    try:
        value = float(token)
    except ValueError:
        raise DataFormatError(path, f"a number for {what}", token, line=line, frame=frame) from None
    if not math.isfinite(value):
        raise DataFormatError(path, f"a finite number for {what}", token, line=line, frame=frame)
    return value


def parse_floats(tokens, path, what: str, *, line=None, frame=None) -> list[float]:
    """`parse_float` on each token; ``what`` names the group (e.g. ``"atom position"``)."""
    return [parse_float(t, path, what, line=line, frame=frame) for t in tokens]


def element_number(symbol: str, path, *, line=None, frame=None, allow_number: bool = False) -> int:
    """Atomic number Z of a chemical symbol (``"O"`` → 8), case-sensitive as in the files.

    Args:
        symbol: element symbol, or (if ``allow_number``) an atomic number such as ``"22"``.
        path, line, frame: for the error message.
        allow_number: also accept a positive integer token (XSF allows it).

    Raises:
        DataFormatError: unknown symbol (the dummy ``X`` is rejected too).
    """
    from ase.data import atomic_numbers, chemical_symbols

    if allow_number and symbol.isdigit() and 0 < int(symbol) < len(chemical_symbols):
        return int(symbol)
    z = atomic_numbers.get(symbol, 0)
    if z <= 0:
        raise DataFormatError(path, "a chemical element symbol such as 'O' or 'Cu'", symbol,
                              line=line, frame=frame)
    return z


def check_cell(cell: np.ndarray, path, *, line=None, frame=None) -> None:
    """Raise `DataFormatError` for a (near) singular (3, 3) cell [any length unit]."""
    cell = np.asarray(cell, dtype=np.float64)
    scale = float(np.prod(np.linalg.norm(cell, axis=1)))
    det = float(np.linalg.det(cell))
    if scale == 0.0 or abs(det) <= CELL_TOL * scale:
        raise DataFormatError(path, "lattice vectors spanning a non-zero volume",
                              f"volume {det:.6g} for cell {cell.tolist()}", line=line, frame=frame)


def check_finite(array: np.ndarray, path, what: str, *, frame_axis: bool = True) -> None:
    """Raise `DataFormatError` naming the first frame of ``array`` holding NaN or inf.

    Args:
        array: (nframes, ...) values (or any shape if ``frame_axis`` is False).
        path: file named in the error.
        what: what the array holds, e.g. ``"forces"``.
        frame_axis: whether axis 0 indexes frames (then the frame is named).
    """
    bad = ~np.isfinite(array)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0]) if frame_axis and np.ndim(array) > 0 else None
        raise DataFormatError(path, f"finite {what}", "NaN or inf", frame=frame)
