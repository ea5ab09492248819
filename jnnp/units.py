"""Unit conversions used at jnnp's boundaries (readers, writers, configs).

Internal units are eV, Å, amu and the matching time unit Å·sqrt(amu/eV) ≈ 10.18 fs (jax-md's
metal units). Nothing inside the pure, jitted code converts units.
"""

from __future__ import annotations

import math

# CODATA 2018 values, as ASE 3.23+ uses them.
BOHR = 0.529177210903  # Å per Bohr
HARTREE = 27.211386245988  # eV per Hartree
KCAL_MOL = 0.0433641043  # eV per kcal/mol
KJ_MOL = 0.01036426965  # eV per kJ/mol
KB = 8.617333262e-5  # Boltzmann constant, eV/K
AMU_KG = 1.66053906660e-27
EV_J = 1.602176634e-19
# One internal time unit Å·sqrt(amu/eV) in fs.
TIME_UNIT_FS = 1e15 * 1e-10 * math.sqrt(AMU_KG / EV_J)
# Pressure: the internal unit eV/Å³ in GPa, and one bar in eV/Å³.
EV_PER_A3_GPA = EV_J * 1e30 * 1e-9
BAR_EV_PER_A3 = 1e5 / (EV_J * 1e30)

LENGTH_UNITS = {"angstrom": 1.0, "a": 1.0, "ang": 1.0, "bohr": BOHR, "nm": 10.0}
ENERGY_UNITS = {"ev": 1.0, "hartree": HARTREE, "ha": HARTREE, "kcal/mol": KCAL_MOL,
                "kj/mol": KJ_MOL, "mev": 1e-3}


def length_factor(unit: str) -> float:
    """Å per ``unit`` (``"angstrom"``, ``"bohr"``, ``"nm"``)."""
    try:
        return LENGTH_UNITS[unit.lower()]
    except KeyError:
        raise ValueError(f"unknown length unit {unit!r}; expected one of {sorted(LENGTH_UNITS)}") from None


def energy_factor(unit: str) -> float:
    """eV per ``unit`` (``"eV"``, ``"hartree"``/``"Ha"``, ``"kcal/mol"``, ``"kJ/mol"``, ``"meV"``)."""
    try:
        return ENERGY_UNITS[unit.lower()]
    except KeyError:
        raise ValueError(f"unknown energy unit {unit!r}; expected one of {sorted(ENERGY_UNITS)}") from None


def fs_to_internal(t_fs: float) -> float:
    """Convert a time in fs to the internal unit Å·sqrt(amu/eV)."""
    return t_fs / TIME_UNIT_FS


def bar_to_internal(p_bar: float) -> float:
    """Convert a pressure in bar to the internal unit eV/Å³."""
    return p_bar * BAR_EV_PER_A3
