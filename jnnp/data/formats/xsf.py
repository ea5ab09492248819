"""Reader for aenet-style XSF files (one structure per file).

Layout (keywords are case-insensitive, ``#`` lines are comments)::

    # total energy = -19960.66173260 eV
    CRYSTAL                      (or SLAB / POLYMER / MOLECULE; or just ATOMS for a molecule)
    PRIMVEC
      ax ay az                   (3 lines, Å)
    PRIMCOORD
    N 1
    El x y z [fx fy fz]          (N lines; Å and eV/Å; El a symbol or an atomic number)

or ``ATOMS`` followed by atom lines up to the end of file. Forces must be on all atom lines or on
none. A single file, a directory of ``*.xsf`` files, or a ``.tar``/``.tar.gz``/``.tar.xz`` archive
of them can be read; directories and archives are read in sorted name order.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np

from jnnp.data.formats import check_cell, element_number, parse_float, parse_floats
from jnnp.data.structure import Dataset, Structure
from jnnp.errors import DataFormatError
from jnnp.units import energy_factor, length_factor

__all__ = ["read_xsf", "parse_xsf", "ARCHIVE_SUFFIXES"]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2")
_ENERGY = re.compile(r"total\s+energy\s*=\s*(\S+)\s*(\S+)?", re.IGNORECASE)
_PBC = {"CRYSTAL": (True, True, True), "SLAB": (True, True, False),
        "POLYMER": (True, False, False), "MOLECULE": (False, False, False)}
_SKIP3 = ("CONVVEC",)


def read_xsf(path, *, length_unit: str = "angstrom", energy_unit: str = "eV") -> Dataset:
    """Read an XSF file, a directory of ``*.xsf`` files, or a tar archive of them.

    Args:
        path: ``.xsf`` file, directory, or archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.xz``).
        length_unit: unit of lengths in the files (aenet: Å).
        energy_unit: default unit of the ``total energy`` comment (aenet: eV) when it names none;
            forces are read in ``energy_unit``/``length_unit``.

    Returns:
        `Dataset`, one structure per file: positions (N, 3) Å, cell (3, 3) Å, energy eV (None if
        the file has no ``total energy`` comment), forces (N, 3) eV/Å or None. ``source`` is the
        file, or ``'archive.tar.xz:member'``; ``index`` is 0 (one frame per file).

    Raises:
        DataFormatError: malformed file, naming file (and member) and line.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.xsf"))
        if not files:
            raise DataFormatError(path, "a directory holding *.xsf files", "no .xsf files")
        items = [(str(f), f.read_text(encoding="utf-8", errors="replace")) for f in files]
    elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
        items = _archive_members(path)
    else:
        items = [(str(path), path.read_text(encoding="utf-8", errors="replace"))]
    return Dataset([parse_xsf(text, name, length_unit=length_unit, energy_unit=energy_unit)
                    for name, text in items])


def _archive_members(path: Path) -> list[tuple[str, str]]:
    """``('archive:member', text)`` for every ``*.xsf`` member, sorted by member name."""
    members = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if info.isfile() and info.name.lower().endswith(".xsf"):
                    members[info.name] = tar.extractfile(info).read().decode("utf-8", "replace")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFormatError(path, "a readable tar archive of .xsf files", str(exc)) from None
    if not members:
        raise DataFormatError(path, "a tar archive holding *.xsf members", "no .xsf members")
    return [(f"{path}:{name}", members[name]) for name in sorted(members)]


def parse_xsf(text: str, source: str = "<string>", *, length_unit: str = "angstrom",
              energy_unit: str = "eV") -> Structure:
    """Parse the text of one XSF file into a `Structure`; see `read_xsf`."""
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    lines = [(i, raw.split()) for i, raw in enumerate(text.splitlines(), start=1)]
    energy, pbc, cell, atoms, natoms_decl = None, None, None, None, None
    body = []
    for i, tokens in lines:
        raw = " ".join(tokens)
        if raw.startswith("#"):
            match = _ENERGY.search(raw)
            if match:
                unit = match.group(2) or energy_unit
                try:
                    factor = energy_factor(unit)
                except ValueError:
                    raise DataFormatError(source, "an energy unit such as 'eV'", unit,
                                          line=i) from None
                energy = parse_float(match.group(1), source, "the total energy", line=i) * factor
        elif tokens:
            body.append((i, tokens))
    pos = 0
    while pos < len(body):
        i, tokens = body[pos]
        key = tokens[0].upper()
        if key in _PBC:
            pbc = _PBC[key]
            pos += 1
        elif key == "PRIMVEC":
            vecs = body[pos + 1:pos + 4]
            if len(vecs) != 3 or any(len(t) != 3 for _, t in vecs):
                raise DataFormatError(source, "3 lines of 3 numbers after PRIMVEC",
                                      " / ".join(" ".join(t) for _, t in vecs), line=i)
            cell = np.array([parse_floats(t, source, "a lattice vector component", line=j)
                             for j, t in vecs]) * lf
            check_cell(cell, source, line=i)
            pos += 4
        elif key in _SKIP3:
            pos += 4
        elif key == "PRIMCOORD":
            if pos + 1 >= len(body) or not body[pos + 1][1][0].isdigit():
                raise DataFormatError(source, "a line 'N 1' after PRIMCOORD", None, line=i)
            natoms_decl = int(body[pos + 1][1][0])
            atoms = body[pos + 2:pos + 2 + natoms_decl]
            if len(atoms) != natoms_decl:
                raise DataFormatError(source, f"{natoms_decl} atom lines after PRIMCOORD",
                                      f"{len(atoms)} lines", line=i)
            pos += 2 + natoms_decl
        elif key == "ATOMS":
            atoms = body[pos + 1:]
            pos = len(body)
        elif key == "ANIMSTEPS":
            raise DataFormatError(source, "a single-structure XSF file", "ANIMSTEPS", line=i)
        else:
            raise DataFormatError(source, "an XSF keyword (CRYSTAL, PRIMVEC, PRIMCOORD, ATOMS, ...)",
                                  " ".join(tokens), line=i)
    if not atoms:
        raise DataFormatError(source, "a PRIMCOORD or ATOMS block with at least one atom",
                              "no atoms", line=len(lines))
    if pbc is None:
        pbc = (True, True, True) if cell is not None else (False, False, False)
    if any(pbc) and cell is None:
        raise DataFormatError(source, "a PRIMVEC block for a periodic structure", "none",
                              line=len(lines))
    positions, numbers, forces = _parse_atoms(atoms, source)
    return Structure(
        positions=positions * lf, numbers=numbers,
        cell=cell if cell is not None else np.zeros((3, 3)), pbc=pbc,
        energy=energy, forces=None if forces is None else forces * (ef / lf),
        source=source, index=0,
    )


def _parse_atoms(atoms, source):
    """Positions (N, 3), numbers (N,), forces (N, 3) or None from ``(line, tokens)`` atom lines."""
    ncols = len(atoms[0][1])
    positions, numbers, forces = [], [], []
    for i, tokens in atoms:
        if len(tokens) not in (4, 7):
            raise DataFormatError(source, "4 or 7 fields 'El x y z [fx fy fz]'",
                                  " ".join(tokens), line=i)
        if len(tokens) != ncols:
            raise DataFormatError(source, f"forces on every atom line or on none ({ncols} fields, "
                                  f"as on line {atoms[0][0]})", " ".join(tokens), line=i)
        numbers.append(element_number(tokens[0], source, line=i, allow_number=True))
        positions.append(parse_floats(tokens[1:4], source, "an atom position", line=i))
        if ncols == 7:
            forces.append(parse_floats(tokens[4:7], source, "a force component", line=i))
    return np.array(positions), np.array(numbers), (np.array(forces) if forces else None)
