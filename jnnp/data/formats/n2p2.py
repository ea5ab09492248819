"""Reader for n2p2/RuNNer ``input.data`` files.

Format (one block per structure, keywords first on the line, blank lines ignored)::

    begin
    comment free text                      (any number, optional)
    lattice ax ay az                       (0 or exactly 3 lines)
    atom x y z element q 0.0 fx fy fz      (exactly 10 fields; q atomic charge, 7th unused)
    energy E                               (required)
    charge Q                               (optional total charge)
    end

Lengths and energies are in the caller's units (n2p2 has no unit header); forces are in
energy/length. The reader converts to Å, eV and eV/Å. Any malformed line raises one
`DataFormatError` naming file, line and frame; no partial result is ever returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jnnp.data.formats import check_cell, element_number, parse_float, parse_floats
from jnnp.data.structure import Dataset, Structure
from jnnp.errors import DataFormatError
from jnnp.units import energy_factor, length_factor

__all__ = ["read_n2p2", "parse_n2p2"]

KEYWORDS = ("begin", "comment", "lattice", "atom", "energy", "charge", "end")


class _Frame:
    """Accumulates one ``begin`` … ``end`` block while parsing."""

    def __init__(self, line: int):
        self.line = line
        self.comments: list[str] = []
        self.lattice: list[list[float]] = []
        self.positions: list[list[float]] = []
        self.symbols: list[int] = []
        self.charges: list[float] = []
        self.forces: list[list[float]] = []
        self.energy: float | None = None
        self.total_charge: float | None = None


def read_n2p2(path, *, length_unit: str = "angstrom", energy_unit: str = "eV") -> Dataset:
    """Read an n2p2/RuNNer ``input.data`` file.

    Args:
        path: the file.
        length_unit: unit of positions and lattice vectors in the file (``"angstrom"``, ``"bohr"``).
        energy_unit: unit of energies in the file (``"eV"``, ``"hartree"``, ...); forces are read
            in ``energy_unit``/``length_unit``.

    Returns:
        `Dataset` of `Structure` (positions (N, 3) Å, energy eV, forces (N, 3) eV/Å, charges (N,) e,
        total_charge e); provenance: ``source`` = path, ``index`` = frame, ``line`` = ``begin`` line.

    Raises:
        DataFormatError: any malformed content (see module docstring).
    """
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataFormatError(path, "a readable n2p2 input.data file", str(exc)) from None
    return parse_n2p2(text, path, length_unit=length_unit, energy_unit=energy_unit)


def parse_n2p2(text: str, path: str = "<string>", *, length_unit: str = "angstrom",
               energy_unit: str = "eV") -> Dataset:
    """Parse the text of an ``input.data`` file; ``path`` is used for provenance and errors.

    See `read_n2p2` for arguments, return value and errors.
    """
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    structures: list[Structure] = []
    frame: _Frame | None = None
    lineno = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        key, nframe = tokens[0], len(structures)

        def fail(expected, got=raw.strip()):
            return DataFormatError(path, expected, got, line=lineno, frame=nframe)

        if key == "begin":
            if frame is not None:
                raise fail(f"'end' of the frame begun at line {frame.line} before the next 'begin'")
            if len(tokens) != 1:
                raise fail("'begin' alone on its line")
            frame = _Frame(lineno)
        elif frame is None:
            raise fail("'begin' (every keyword must lie inside a begin ... end block)")
        elif key == "comment":
            frame.comments.append(raw.strip()[len("comment"):].strip())
        elif key == "lattice":
            if len(tokens) != 4:
                raise fail("4 fields 'lattice ax ay az'")
            if len(frame.lattice) == 3:
                raise fail("at most 3 'lattice' lines per frame")
            frame.lattice.append(parse_floats(tokens[1:], path, "a lattice vector component",
                                              line=lineno, frame=nframe))
        elif key == "atom":
            _parse_atom(frame, tokens, path, lineno, nframe, raw)
        elif key in ("energy", "charge"):
            if len(tokens) != 2:
                raise fail(f"2 fields '{key} value'")
            attr = "energy" if key == "energy" else "total_charge"
            if getattr(frame, attr) is not None:
                raise fail(f"one '{key}' line per frame")
            setattr(frame, attr, parse_float(tokens[1], path, f"the {key}", line=lineno,
                                             frame=nframe))
        elif key == "end":
            if len(tokens) != 1:
                raise fail("'end' alone on its line")
            structures.append(_finish(frame, path, lineno, nframe, lf, ef))
            frame = None
        else:
            raise fail("a line starting with one of " + ", ".join(KEYWORDS))
    if frame is not None:
        raise DataFormatError(path, f"'end' of the frame begun at line {frame.line}",
                              "end of file (truncated?)", line=lineno, frame=len(structures))
    if not structures:
        raise DataFormatError(path, "at least one 'begin' ... 'end' frame", "no frames", line=lineno)
    return Dataset(structures)


def _parse_atom(frame: _Frame, tokens, path, lineno, nframe, raw) -> None:
    if len(tokens) != 10:
        raise DataFormatError(path, "10 fields 'atom x y z element charge 0.0 fx fy fz'",
                              f"{len(tokens)} fields: {raw.strip()}", line=lineno, frame=nframe)
    kw = dict(line=lineno, frame=nframe)
    frame.positions.append(parse_floats(tokens[1:4], path, "an atom position", **kw))
    frame.symbols.append(element_number(tokens[4], path, **kw))
    frame.charges.append(parse_float(tokens[5], path, "the atomic charge", **kw))
    parse_float(tokens[6], path, "the 7th (unused) atom field", **kw)
    frame.forces.append(parse_floats(tokens[7:10], path, "a force component", **kw))


def _finish(frame: _Frame, path, lineno, nframe, lf, ef) -> Structure:
    """Validate a complete frame (at its ``end`` line) and convert it to a `Structure`."""

    def fail(expected, got):
        return DataFormatError(path, f"{expected} in the frame begun at line {frame.line}", got,
                               line=lineno, frame=nframe)

    if len(frame.lattice) not in (0, 3):
        raise fail("0 or 3 'lattice' lines", f"{len(frame.lattice)} lattice lines")
    if not frame.positions:
        raise fail("at least one 'atom' line", "no atom lines")
    if frame.energy is None:
        raise fail("an 'energy' line", "no energy line")
    periodic = len(frame.lattice) == 3
    cell = np.array(frame.lattice) * lf if periodic else np.zeros((3, 3))
    if periodic:
        check_cell(cell, path, line=lineno, frame=nframe)
    return Structure(
        positions=np.array(frame.positions) * lf,
        numbers=np.array(frame.symbols),
        cell=cell,
        pbc=np.full(3, periodic),
        energy=frame.energy * ef,
        forces=np.array(frame.forces) * (ef / lf),
        charges=np.array(frame.charges),
        total_charge=frame.total_charge,
        source=path,
        index=nframe,
        line=frame.line,
        comment="\n".join(frame.comments),
    )
