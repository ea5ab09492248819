"""Tiny ethanol potentials and data shared by the ensemble tests (cached: compile once).

* `tiny_spec()`: two radial symmetry functions per element, each counting neighbours of the
  centre's own element (r_c = 4 Å; only 3 pair blocks, which keeps XLA compile times low), one
  hidden layer of 4 tanh neurons — the cheapest model that still has every element network.
* `ethanol(n)`: the first n of the 100 rMD17 ethanol frames (eV, Å).
"""

from __future__ import annotations

import functools

from _shared import TEST_DATA
from jnnp.data import read
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.model import PotentialSpec

ELEMENTS = (1, 6, 8)
RC = 4.0


@functools.cache
def tiny_spec(hidden=(4,)) -> PotentialSpec:
    funcs = [SymFunc(2, c, (c,), RC, eta=eta, rs=rs) for c in ELEMENTS for eta, rs in ((0.5, 0.0), (2.0, 1.2))]
    desc = DescriptorSpec.from_functions(ELEMENTS, funcs, cutoff_type=6)
    return PotentialSpec(desc, hidden=tuple(hidden), activations=("t",) * len(hidden) + ("l",))


@functools.cache
def _all():
    return tuple(read(TEST_DATA / "rmd17_ethanol_100.npz"))


def ethanol(start: int, stop: int) -> list:
    return list(_all()[start:stop])
