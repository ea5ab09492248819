"""Cheap, deterministic test potential and structures shared by the MD / ASE tests.

* `cheap_potential()`: H/O potential with a handful of symmetry functions (radial type 2,
  narrow angular type 3; r_c = 4 Å, smooth poly2 cutoff), a tiny (8, 8) tanh network with random
  but fixed weights (``PRNGKey(0)``), scaling statistics taken from the descriptors of
  `water_box` (non-trivial min/max/mean/σ) and energy shifts ≠ 0. The energy scale is chosen so
  that the RMS force on `water_box` is `FORCE_RMS` (≈ 1 eV/Å): velocity Verlet at 0.5 fs is then
  far inside its stability range even for hydrogen.
* `water_box()`: 24 atoms (8 rigid-geometry water molecules at random orientations) in a cubic
  6.6 Å periodic cell (cell narrower than 2·r_c, so atoms see their own images).
* `water_cluster()`: 12 atoms (4 water molecules) in free space.

Everything is cached, so all test modules share one potential and one size per structure (and
therefore the compiled programs). Units: Å, eV, amu.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jnnp.data.structure import Structure
from jnnp.descriptors.plan import make_plan
from jnnp.descriptors.scaling import scaling_statistics
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.geometry.graph import build_graph
from jnnp.model import PotentialSpec, compute, init_potential

H, O = 1, 8
RC = 4.0
FORCE_RMS = 1.0  # eV/Å on water_box
BOX_L = 6.6  # Å; 8 molecules → ≈ 0.08 atoms/Å³
N_BOX_MOLECULES = 8
N_CLUSTER_MOLECULES = 4
MIN_DISTANCE = 0.9  # Å (the intramolecular O–H bond is 0.9572 Å)

_WATER = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.23999, 0.92663, 0.0]])  # O, H, H


def descriptor_spec() -> DescriptorSpec:
    funcs = []
    for c in (H, O):
        for e in (H, O):
            funcs += [SymFunc(2, c, (e,), RC, eta=0.5), SymFunc(2, c, (e,), RC, eta=1.5, rs=1.2)]
        for pair in ((H, H), (H, O), (O, O)):
            funcs.append(SymFunc(3, c, pair, RC, eta=0.1, lam=1.0, zeta=1.0))
        funcs.append(SymFunc(3, c, (H, O), RC, eta=0.05, lam=-1.0, zeta=2.0))
    return DescriptorSpec.from_functions((H, O), funcs, cutoff_type=6)


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _min_image_distance(a, b, L):
    d = a[:, None, :] - b[None, :, :]
    if L is not None:
        d -= L * np.round(d / L)
    return np.linalg.norm(d, axis=-1).min()


def _place_waters(n, rng, box, periodic, min_sep=1.6):
    L = box if periodic else None
    mols = []
    while len(mols) < n:
        xyz = _WATER @ _rotation(rng).T + rng.uniform(0.0, box, 3)
        if all(_min_image_distance(xyz, m, L) >= min_sep for m in mols):
            mols.append(xyz)
    return np.concatenate(mols), np.tile([O, H, H], n)


@functools.lru_cache(maxsize=None)
def water_box(seed: int = 0) -> Structure:
    """8 water molecules (24 atoms) in a periodic cubic cell of side `BOX_L`."""
    rng = np.random.default_rng(seed)
    pos, numbers = _place_waters(N_BOX_MOLECULES, rng, BOX_L, periodic=True)
    return Structure(positions=pos, numbers=numbers, cell=np.eye(3) * BOX_L, pbc=True)


@functools.lru_cache(maxsize=None)
def water_cluster(seed: int = 1) -> Structure:
    """4 water molecules (12 atoms) in free space (no cell)."""
    rng = np.random.default_rng(seed)
    pos, numbers = _place_waters(N_CLUSTER_MOLECULES, rng, 4.0, periodic=False)
    return Structure(positions=pos - pos.mean(0), numbers=numbers)


def _statistics(spec: DescriptorSpec, structure: Structure, params):
    """n2p2 scaling statistics of ``structure``'s descriptors, widened so none is constant."""
    from jnnp.descriptors.compute import make_descriptor_fn

    g = build_graph(make_plan(spec), structure.positions, structure.numbers, structure.cell, structure.pbc)
    G = jax.jit(make_descriptor_fn(spec))(params, structure.positions, structure.cell, g)
    stats = []
    for c, Gc in enumerate(G):
        Gc = np.asarray(Gc)[np.asarray(g.element_mask[c])]
        st = scaling_statistics(Gc)
        pad = 0.1 * (st["max"] - st["min"]) + 0.05
        stats.append({"min": st["min"] - pad, "max": st["max"] + pad, "mean": st["mean"],
                      "sigma": st["sigma"] + pad})
    return tuple(stats)


@functools.lru_cache(maxsize=None)
def cheap_potential():
    """The shared float64 test potential (see the module docstring)."""
    spec = PotentialSpec(descriptor=descriptor_spec(), hidden=(8, 8), activations=("t", "t", "l"),
                         scaling="scale_center")
    pot = init_potential(spec, jax.random.PRNGKey(0))
    box = water_box()
    params = dict(pot.params)
    params["scaling"] = _statistics(spec.descriptor, box, params["descriptor"])
    params["energy"] = {"scale": np.asarray(1.0), "shift": np.asarray([-13.6, -432.0])}
    pot = pot.replace(params=params)
    f = compute(pot, box)["forces"]
    scale = FORCE_RMS / float(np.sqrt(np.mean(np.sum(f**2, axis=-1))))
    params["energy"] = {"scale": np.asarray(scale), "shift": params["energy"]["shift"]}
    return pot.replace(params=params)
