"""Cheap, deterministic test potential and structures shared by the MD / ASE tests.

* `cheap_potential()`: a Si/Cu potential with a handful of symmetry functions (radial type 2 for
  every element pair, narrow angular type 3 for two centre/neighbour combinations; r_c = 4 Å,
  smooth poly2 cutoff = n2p2 cutoff type 6), a tiny (8, 8) tanh network with random but fixed
  weights (``init_potential(spec, PRNGKey(0))``), fixed non-trivial scaling statistics
  (min/max/mean/σ ≠ identity), non-zero energy shifts, and an energy scale chosen so that the
  RMS force on `random_box` is `FORCE_RMS` eV/Å.
* `random_box()`: 24 atoms (8 Cu, 16 Si) at random positions (all distances ≥ `MIN_DISTANCE`,
  every image) in a cubic `BOX_L` Å periodic cell — narrower than 2·r_c, so atoms see their own
  images, ≈ 20 neighbours per atom within r_c.
* `cluster()`: 12 atoms (4 Cu, 8 Si) in free space.

Why heavy elements and small forces: a random network has no minimum near a random structure,
so potential energy turns into heat. With FORCE_RMS = 0.05 eV/Å and masses 28/64 amu the
system warms by only ≈ 100 K per 100 fs, and started at ≈ 100 K atoms move ≲ 0.5 Å in 150 fs,
so a 1 Å skin lasts a whole test run (no rebuild, hence no re-compilation) while a 0.05 Å skin
needs a rebuild every few steps. Velocity Verlet at 0.5 fs is far inside its stability range.

Everything is cached, so all test modules share one potential and one size per structure (and
therefore the compiled programs). Units: Å, eV, amu.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jnnp.data.structure import Structure
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.model import PotentialSpec, compute, init_potential

SI, CU = 14, 29
RC = 4.0
FORCE_RMS = 0.05  # eV/Å on random_box
BOX_L = 6.6  # Å
N_BOX = (8, 16)  # (Cu, Si)
N_CLUSTER = (4, 8)
MIN_DISTANCE = 1.7  # Å


def descriptor_spec() -> DescriptorSpec:
    funcs = []
    for c in (SI, CU):
        for e in (SI, CU):
            funcs += [SymFunc(2, c, (e,), RC, eta=0.5), SymFunc(2, c, (e,), RC, eta=1.5, rs=2.2)]
    funcs += [SymFunc(3, CU, (SI, SI), RC, eta=0.1, lam=1.0, zeta=1.0),
              SymFunc(3, CU, (SI, SI), RC, eta=0.05, lam=-1.0, zeta=2.0),
              SymFunc(3, SI, (SI, CU), RC, eta=0.1, lam=-1.0, zeta=1.0)]
    return DescriptorSpec.from_functions((SI, CU), funcs, cutoff_type=6)


def _place(n_cu, n_si, rng, box, periodic):
    pos = []
    while len(pos) < n_cu + n_si:
        x = rng.uniform(0.0, box, 3)
        if pos:
            d = np.asarray(pos) - x
            if periodic:
                d -= box * np.round(d / box)
            if np.linalg.norm(d, axis=-1).min() < MIN_DISTANCE:
                continue
        pos.append(x)
    return np.asarray(pos), np.array([CU] * n_cu + [SI] * n_si)


@functools.lru_cache(maxsize=None)
def random_box(seed: int = 0) -> Structure:
    """24 atoms (8 Cu, 16 Si) in a periodic cubic cell of side `BOX_L` Å."""
    pos, numbers = _place(*N_BOX, np.random.default_rng(seed), BOX_L, periodic=True)
    return Structure(positions=pos, numbers=numbers, cell=np.eye(3) * BOX_L, pbc=True)


@functools.lru_cache(maxsize=None)
def cluster(seed: int = 1) -> Structure:
    """12 atoms (4 Cu, 8 Si) in free space (no cell), centred at the origin."""
    pos, numbers = _place(*N_CLUSTER, np.random.default_rng(seed), 4.5, periodic=False)
    return Structure(positions=pos - pos.mean(0), numbers=numbers)


def _statistics(spec: DescriptorSpec, rng) -> tuple:
    """Fixed, non-trivial scaling statistics (ranges of the order of the descriptor values)."""
    stats = []
    for n in spec.n_features:
        lo = rng.uniform(0.0, 0.5, n)
        hi = lo + rng.uniform(2.0, 6.0, n)
        stats.append({"min": lo, "max": hi, "mean": lo + rng.uniform(0.3, 0.7, n) * (hi - lo),
                      "sigma": rng.uniform(0.2, 0.5, n) * (hi - lo)})
    return tuple(stats)


@functools.lru_cache(maxsize=None)
def cheap_potential():
    """The shared float64 test potential (see the module docstring)."""
    spec = PotentialSpec(descriptor=descriptor_spec(), hidden=(8, 8), activations=("t", "t", "l"),
                         scaling="scale_center")
    pot = init_potential(spec, jax.random.PRNGKey(0))
    params = dict(pot.params)
    params["scaling"] = _statistics(spec.descriptor, np.random.default_rng(0))
    shift = np.asarray([-1.7, -3.1])
    params["energy"] = {"scale": np.asarray(1.0), "shift": shift}
    f = compute(pot.replace(params=params), random_box())["forces"]
    scale = FORCE_RMS / float(np.sqrt(np.mean(np.sum(f**2, axis=-1))))
    params["energy"] = {"scale": np.asarray(scale), "shift": shift}
    return pot.replace(params=params)
