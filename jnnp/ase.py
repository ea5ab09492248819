"""ASE calculator for jnnp potentials: ``atoms.calc = jnnp.ase.Calculator(potential)``."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes

from jnnp.data.structure import Structure
from jnnp.model.evaluate import compute

__all__ = ["Calculator"]


class Calculator(_AseCalculator):
    """Energy [eV], forces [eV/Å], stress [eV/Å³, Voigt xx yy zz yz xz xy] and per-atom energies.

    Neighbour arrays are padded to bucketed sizes, so the jitted program is compiled once per
    size bucket and reused across steps of an optimisation or MD run, also when the atom count
    changes a little. Results are float64 numpy arrays whatever the potential's dtype.

    Args:
        potential: a `jnnp.Potential` (its parameter dtype sets the precision).
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress", "energies")

    def __init__(self, potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        s = Structure(positions=a.get_positions(), numbers=a.get_atomic_numbers(), cell=np.asarray(a.cell),
                      pbc=a.pbc)
        out = compute(self.potential, s, stress=bool(a.pbc.any()))
        self.results = {"energy": float(out["energy"]), "free_energy": float(out["energy"]),
                        "forces": out["forces"], "energies": out["energies"]}
        if "stress" in out:
            st = out["stress"]
            self.results["stress"] = np.array([st[0, 0], st[1, 1], st[2, 2], st[1, 2], st[0, 2], st[0, 1]])
