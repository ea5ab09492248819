"""Element symbols ⇄ atomic numbers (from ase.data)."""

from __future__ import annotations

from ase.data import atomic_masses, chemical_symbols

__all__ = ["atomic_number", "symbol", "mass"]

_Z = {s: z for z, s in enumerate(chemical_symbols) if z > 0}


def atomic_number(sym: str) -> int:
    """Atomic number of a symbol like ``"O"``; KeyError names the unknown symbol."""
    try:
        return _Z[sym]
    except KeyError:
        raise KeyError(f"unknown element symbol {sym!r}") from None


def symbol(z: int) -> str:
    return chemical_symbols[int(z)]


def mass(z: int) -> float:
    """Standard atomic mass [amu]."""
    return float(atomic_masses[int(z)])
