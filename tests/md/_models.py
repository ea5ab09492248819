"""Cheap, deterministic test potential and structures shared by the MD / ASE tests.

* `cheap_potential()`: a Si/Cu potential with a handful of symmetry functions (radial type 2 for
  every element pair, narrow angular type 3 for two centre/neighbour combinations; r_c = 4 Å,
  smooth poly2 cutoff = n2p2 cutoff type 6), a tiny (8, 8) tanh network with random but fixed
  weights (``init_potential(spec, PRNGKey(0))``), fixed non-trivial scaling statistics
  (min/max/mean/σ ≠ identity), non-zero energy shifts, and an energy scale chosen so that the
  RMS force on `random_box` is `FORCE_RMS` eV/Å.
* `random_box()`: 24 atoms (8 Cu, 16 Si) at random positions (all distances ≥ `MIN_DISTANCE`
  and ≥ `CUTOFF_MARGIN` away from r_c, every image) in a cubic `BOX_L` Å periodic cell —
  narrower than 2·r_c, so atoms see their own images; ≈ 20 neighbours per atom within r_c.
* `cluster()`: 8 atoms (3 Cu, 5 Si) in free space, every pair well inside r_c.

Why heavy elements and small forces: a random network has no minimum near a random structure,
so potential energy turns into heat. With FORCE_RMS = 0.05 eV/Å and masses 28/64 amu the
system warms by only ≈ 100 K per 100 fs, and started at ≈ 100 K atoms move ≲ 0.5 Å in 150 fs,
so a 1 Å skin lasts a whole test run (no rebuild, hence no re-compilation) while a 0.05 Å skin
needs a rebuild every few steps. Velocity Verlet at 0.5 fs is far inside its stability range.

Everything is cached, so all test modules share one potential and one size per structure (and
therefore the compiled programs). `fast_compiles` lowers XLA's optimisation effort (compile
time dominates these tests). Units: Å, eV, amu.
"""

from __future__ import annotations

import contextlib
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
MIN_DISTANCE = 1.7  # Å
CUTOFF_MARGIN = 0.03  # Å
# Network seed whose landscape has a minimum close to `cluster()` (BFGS converges within ≈ 0.6 Å,
# all pairs stay inside r_c). With seed 0 the cube expands until pairs leave the cutoff, so the
# graph changes size bucket after bucket and every bucket compiles a new program.
BOUND_CLUSTER_SEED = 2


@contextlib.contextmanager
def fast_compiles():
    """XLA optimisation level O0 inside the block: compiles ≈ 2× faster, these tiny programs run
    as fast. The level is part of jax.jit's cache key, so programs compiled here are never
    reused outside (and vice versa); the previous level is restored on exit."""
    old = getattr(jax.config, "jax_optimization_level", None)
    if old is None:  # a JAX without this option: compile as usual
        yield
        return
    jax.config.update("jax_optimization_level", "O0")
    try:
        yield
    finally:
        jax.config.update("jax_optimization_level", old)


def descriptor_spec(angular: bool = True) -> DescriptorSpec:
    funcs = []
    for c in (SI, CU):
        for e in (SI, CU):
            funcs += [SymFunc(2, c, (e,), RC, eta=0.5), SymFunc(2, c, (e,), RC, eta=1.5, rs=2.2)]
    if angular:
        funcs += [SymFunc(3, CU, (SI, SI), RC, eta=0.1, lam=1.0, zeta=1.0),
                  SymFunc(3, CU, (SI, SI), RC, eta=0.05, lam=-1.0, zeta=2.0),
                  SymFunc(3, SI, (SI, CU), RC, eta=0.1, lam=-1.0, zeta=1.0)]
    return DescriptorSpec.from_functions((SI, CU), funcs, cutoff_type=6)


def _place(n_cu, n_si, rng, box):
    """Random sequential placement in a periodic cube: every distance (all images) ≥
    MIN_DISTANCE and at least CUTOFF_MARGIN away from r_c."""
    images = box * np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    pos = []
    while len(pos) < n_cu + n_si:
        x = rng.uniform(0.0, box, 3)
        if pos:
            d = np.linalg.norm((np.asarray(pos) - x)[:, None, :] + images[None], axis=-1)
            if d.min() < MIN_DISTANCE or np.abs(d - RC).min() < CUTOFF_MARGIN:
                continue
        pos.append(x)
    return np.asarray(pos), np.array([CU] * n_cu + [SI] * n_si)


@functools.cache
def random_box(seed: int = 0) -> Structure:
    """24 atoms (8 Cu, 16 Si) in a periodic cubic cell of side `BOX_L` Å; no distance within
    CUTOFF_MARGIN of r_c (so tiny displacements/strains keep the neighbour graph)."""
    pos, numbers = _place(*N_BOX, np.random.default_rng(seed), BOX_L)
    return Structure(positions=pos, numbers=numbers, cell=np.eye(3) * BOX_L, pbc=True)


@functools.cache
def cluster(seed: int = 1) -> Structure:
    """8 atoms (3 Cu, 5 Si) in free space: a randomly distorted cube of edge 2 Å, so that all
    distances lie in ≈ [1.8, 3.6] Å, well inside r_c — relaxing or moving it a little never
    changes the neighbour graph (one compiled program for the whole run)."""
    rng = np.random.default_rng(seed)
    corners = np.array([(a, b, c) for a in (-1.0, 1.0) for b in (-1.0, 1.0) for c in (-1.0, 1.0)])
    pos = corners + rng.normal(scale=0.08, size=corners.shape)
    return Structure(positions=pos - pos.mean(0), numbers=[CU, SI, SI, CU, SI, CU, SI, SI])


def _statistics(spec: DescriptorSpec, rng) -> tuple:
    """Fixed, non-trivial scaling statistics (ranges of the order of the descriptor values)."""
    stats = []
    for n in spec.n_features:
        lo = rng.uniform(0.0, 0.5, n)
        hi = lo + rng.uniform(2.0, 6.0, n)
        stats.append({"min": lo, "max": hi, "mean": lo + rng.uniform(0.3, 0.7, n) * (hi - lo),
                      "sigma": rng.uniform(0.2, 0.5, n) * (hi - lo)})
    return tuple(stats)


@functools.cache
def cheap_potential(angular: bool = True, seed: int = 0):
    """The shared float64 test potential (see the module docstring).

    ``angular=False`` drops the type-3 functions: for tests of the MD driver machinery (files,
    restarts, thermostats) that compile many programs, since the angular blocks dominate XLA
    compile time (≈ 5× a radial-only program) and add nothing there.
    ``seed``: network weights from ``PRNGKey(seed)``; another seed gives another energy landscape
    with the same spec, hence the same compiled programs (see `BOUND_CLUSTER_SEED`).
    """
    spec = PotentialSpec(descriptor=descriptor_spec(angular), hidden=(8, 8), activations=("t", "t", "l"),
                         scaling="scale_center")
    pot = init_potential(spec, jax.random.PRNGKey(seed))
    params = dict(pot.params)
    params["scaling"] = _statistics(spec.descriptor, np.random.default_rng(0))
    shift = np.asarray([-1.7, -3.1])
    params["energy"] = {"scale": np.asarray(1.0), "shift": shift}
    f = compute(pot.replace(params=params), random_box())["forces"]
    scale = FORCE_RMS / float(np.sqrt(np.mean(np.sum(f**2, axis=-1))))
    params["energy"] = {"scale": np.asarray(scale), "shift": shift}
    return pot.replace(params=params)
