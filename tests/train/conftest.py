"""Shared tiny data and model for the training tests (session-scoped: compile once)."""

from pathlib import Path

import jax
import pytest

import jnnp
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.model import PotentialSpec, init_potential

TEST_DATA = Path(__file__).resolve().parents[1] / "data"
ELEMENTS = (1, 6, 8)


def radial_descriptor(rc: float = 4.0) -> DescriptorSpec:
    """The radial part of `small_descriptor` (9 functions per element, no triplets)."""
    d = small_descriptor(rc)
    return DescriptorSpec.from_functions(ELEMENTS, [sf for fs in d.functions for sf in fs if sf.is_radial],
                                         cutoff_type=6)


def small_descriptor(rc: float = 4.0) -> DescriptorSpec:
    """9 radial functions per element (3 per neighbour element) and 4 angular (H–C neighbours):
    13 per element, pair blocks for every element pair and one triplet block per centre."""
    funcs = []
    for c in ELEMENTS:
        for e in ELEMENTS:
            funcs += [SymFunc(2, c, (e,), rc, eta=eta, rs=rs)
                      for eta, rs in ((0.2, 0.0), (1.0, 1.0), (3.0, 1.5))]
        funcs += [SymFunc(9, c, (1, 6), rc, eta=0.05, zeta=z, lam=lam)
                  for z in (1.0, 4.0) for lam in (1.0, -1.0)]
    return DescriptorSpec.from_functions(ELEMENTS, funcs, cutoff_type=6)


@pytest.fixture(scope="session")
def ethanol():
    """The 100 rMD17 ethanol frames (eV, Å)."""
    return jnnp.read(TEST_DATA / "rmd17_ethanol_100.npz")


@pytest.fixture(scope="session")
def spec():
    return PotentialSpec(small_descriptor(), hidden=(8, 8), activations=("t", "t", "l"))


@pytest.fixture(scope="session")
def potential(spec):
    return init_potential(spec, jax.random.PRNGKey(0))


@pytest.fixture(scope="session")
def radial_potential():
    """A tiny radial-only HDNNP (cheap to compile)."""
    spec = PotentialSpec(radial_descriptor(), hidden=(8, 8), activations=("t", "t", "l"))
    return init_potential(spec, jax.random.PRNGKey(0))
