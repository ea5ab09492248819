"""Writers: extended XYZ (via ASE) and n2p2/RuNNer ``input.data``.

Both round-trip with `jnnp.data.read`: extended XYZ keeps energy, forces, stress and charges (ASE
writes per-atom columns with 8 decimals, so positions/forces/charges round-trip to 5e-9 absolute;
energy and stress are written exactly);
``input.data`` is written with 17 significant digits (``%.16e``), so a write/read cycle in the
same units reproduces every number to about 1e-16 relative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jnnp.data.structure import Structure
from jnnp.units import energy_factor, length_factor

__all__ = ["write_extxyz", "write_n2p2"]


def write_extxyz(path, structures) -> None:
    """Write structures to an extended XYZ file (Å, eV, eV/Å, stress eV/Å³) with ``ase.io.write``.

    Per-atom columns (positions, forces, ``initial_charges``) carry 8 decimals (ASE's format);
    ``energy``, ``stress``, ``charge`` (total) and ``comment`` go to the comment line exactly.

    Args:
        path: output file (overwritten).
        structures: iterable of `Structure` (e.g. a `Dataset`).
    """
    import ase.io

    images = []
    for s in structures:
        atoms = s.to_ase()
        if s.comment:
            atoms.info["comment"] = s.comment.replace("\n", " ")
        if s.total_charge is not None:
            atoms.info["charge"] = s.total_charge
        images.append(atoms)
    ase.io.write(str(path), images, format="extxyz")


def write_n2p2(path, structures, length_unit: str = "angstrom", energy_unit: str = "eV", *,
               allow_missing_labels: bool = False) -> None:
    """Write structures to an n2p2/RuNNer ``input.data`` file.

    Args:
        path: output file (overwritten).
        structures: iterable of `Structure` (Å, eV, eV/Å).
        length_unit: unit of lengths in the file (``"angstrom"`` or ``"bohr"``, ...).
        energy_unit: unit of energies in the file (``"eV"`` or ``"hartree"``, ...); forces are
            written in ``energy_unit``/``length_unit``.
        allow_missing_labels: write 0 for a missing energy or missing forces instead of raising
            (n2p2 needs both fields even for prediction-only structures).

    Raises:
        ValueError: partially periodic structure (n2p2 knows only fully periodic or free), or a
            missing energy/forces while ``allow_missing_labels`` is False.
    """
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    lines: list[str] = []
    for i, s in enumerate(structures):
        lines.extend(_frame_lines(s, i, lf, ef, allow_missing_labels))
    Path(path).write_text("\n".join(lines) + "\n")


def _num(x: float) -> str:
    return f"{x: .16e}"


def _frame_lines(s: Structure, i: int, lf: float, ef: float, allow_missing: bool) -> list[str]:
    from ase.data import chemical_symbols

    where = f"structure {i} ({s.provenance})"
    if s.pbc.any() and not s.pbc.all():
        raise ValueError(f"{where}: n2p2 supports fully periodic or non-periodic structures, "
                         f"got pbc={s.pbc.tolist()}")
    if not allow_missing and (s.energy is None or s.forces is None):
        raise ValueError(f"{where}: energy and forces are required by input.data; "
                         "pass allow_missing_labels=True to write zeros")
    out = ["begin"]
    out += [f"comment {c}" for c in s.comment.splitlines() if c.strip()]
    if s.pbc.all():
        out += ["lattice " + " ".join(_num(x) for x in row / lf) for row in s.cell]
    forces = s.forces / (ef / lf) if s.forces is not None else np.zeros_like(s.positions)
    charges = s.charges if s.charges is not None else np.zeros(s.n_atoms)
    for r, z, q, f in zip(s.positions / lf, s.numbers, charges, forces):
        out.append("atom " + " ".join(_num(x) for x in r) + f" {chemical_symbols[z]:<2s} "
                   + _num(q) + " " + _num(0.0) + " " + " ".join(_num(x) for x in f))
    energy = s.energy / ef if s.energy is not None else 0.0
    total = s.total_charge if s.total_charge is not None else float(np.sum(charges))
    out += [f"energy {_num(energy)}", f"charge {_num(total)}", "end"]
    return out
