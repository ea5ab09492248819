"""The in-memory representation of labelled structures: `Structure` and `Dataset`.

All arrays are numpy (host side), in eV and Å. Readers convert units at the boundary; nothing
downstream converts again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["Structure", "Dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """One atomic structure with optional DFT labels.

    Attributes:
        positions: (N, 3) float64 Cartesian positions [Å].
        numbers: (N,) int atomic numbers Z.
        cell: (3, 3) float64 lattice vectors as *rows* (ASE convention) [Å]; zeros if free.
        pbc: (3,) bool periodicity per lattice direction.
        energy: total energy [eV] or None.
        forces: (N, 3) float64 forces [eV/Å] or None.
        stress: (3, 3) float64 stress (1/V dE/dstrain, ASE sign) [eV/Å³] or None.
        charges: (N,) float64 atomic charges [e] or None.
        total_charge: total charge [e] or None.
        source: file the structure came from ("" if built in memory).
        index: 0-based frame index in ``source``.
        line: 1-based line where the frame starts, for line-based formats, else None.
        comment: free-text comment of the frame.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3, bool))
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    charges: np.ndarray | None = None
    total_charge: float | None = None
    source: str = ""
    index: int = 0
    line: int | None = None
    comment: str = ""

    def __post_init__(self):
        pos = np.asarray(self.positions, dtype=np.float64)
        num = np.asarray(self.numbers, dtype=np.int64)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3), got {pos.shape}")
        if num.shape != (pos.shape[0],):
            raise ValueError(f"numbers must have shape ({pos.shape[0]},), got {num.shape}")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "numbers", num)
        object.__setattr__(self, "cell", np.asarray(self.cell, dtype=np.float64).reshape(3, 3))
        pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        object.__setattr__(self, "pbc", pbc)
        for name, shape in (("forces", pos.shape), ("stress", (3, 3)), ("charges", num.shape)):
            val = getattr(self, name)
            if val is not None:
                val = np.asarray(val, dtype=np.float64)
                if val.shape != shape:
                    raise ValueError(f"{name} must have shape {shape}, got {val.shape}")
                object.__setattr__(self, name, val)
        if self.energy is not None:
            object.__setattr__(self, "energy", float(self.energy))

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[0]

    @property
    def periodic(self) -> bool:
        return bool(self.pbc.any())

    @property
    def volume(self) -> float:
        """Cell volume [Å³] (0 for free structures)."""
        return float(abs(np.linalg.det(self.cell))) if self.periodic else 0.0

    @property
    def provenance(self) -> str:
        where = f"{self.source or '<memory>'}, frame {self.index}"
        return where + (f" (line {self.line})" if self.line is not None else "")

    def replace(self, **changes) -> "Structure":
        return dataclasses.replace(self, **changes)

    def to_ase(self):
        """Return an ``ase.Atoms`` (with a SinglePointCalculator holding the labels, if any)."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            results["stress"] = self.stress
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        if self.charges is not None:
            atoms.set_initial_charges(self.charges)
        return atoms

    @classmethod
    def from_ase(cls, atoms, *, source: str = "", index: int = 0) -> "Structure":
        """Build from ``ase.Atoms``; labels are taken from an attached calculator if present."""
        energy = forces = stress = None
        if atoms.calc is not None:
            res = atoms.calc.results
            energy = res.get("energy", res.get("free_energy"))
            forces = res.get("forces")
            if "stress" in res:
                s = np.asarray(res["stress"])
                if s.shape == (6,):
                    xx, yy, zz, yz, xz, xy = s
                    s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
                stress = s
        charges = atoms.get_initial_charges() if atoms.has("initial_charges") else None
        return cls(positions=atoms.get_positions(), numbers=atoms.get_atomic_numbers(),
                   cell=np.asarray(atoms.cell), pbc=atoms.pbc, energy=energy, forces=forces,
                   stress=stress, charges=charges, source=source, index=index)


class Dataset(Sequence):
    """An ordered collection of `Structure` objects (eV, Å), with provenance per frame."""

    def __init__(self, structures: Sequence[Structure] = ()):
        self.structures = list(structures)

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Dataset(self.structures[idx])
        if isinstance(idx, (list, np.ndarray)):
            return Dataset([self.structures[int(i)] for i in idx])
        return self.structures[idx]

    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    def __add__(self, other: "Dataset") -> "Dataset":
        return Dataset(self.structures + list(other))

    def __repr__(self) -> str:
        return f"Dataset({len(self)} structures, elements {self.elements})"

    @property
    def elements(self) -> list[int]:
        """Sorted unique atomic numbers over all structures."""
        if not self.structures:
            return []
        return sorted(set(np.concatenate([s.numbers for s in self.structures]).tolist()))
