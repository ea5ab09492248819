"""A tiny, smooth, single-element problem for the hypergradient tests (cheap to compile).

Free clusters of 5 argon-like atoms (Z = 18) at random positions (pair distances ≥ 2.2 Å), with
energies and forces from a Morse "teacher" E = D Σ_{i<j} [(1 − e^{−a (r − r0)})² − 1]
(D = 0.2 eV, a = 1.3 Å⁻¹, r0 = 2.8 Å), so the labels are smooth functions of the geometry.
The descriptor: three radial functions (type 2) on one shifted grid and two angular functions
(type 9, λ = ±1), r_c = 4.5 Å, poly2 cutoff.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from md._models import fast_compiles  # noqa: F401  (used as P.fast_compiles by the hyper tests)

from jnnp.data.structure import Structure
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.model import PotentialSpec, init_potential

AR = 18
RC = 4.5
D, A, R0 = 0.2, 1.3, 2.8


def morse(positions):
    """(energy [eV], forces (N, 3) [eV/Å]) of the Morse teacher."""
    d = positions[:, None] - positions[None]
    r = np.linalg.norm(d, axis=-1)
    iu = np.triu_indices(len(positions), 1)
    x = np.exp(-A * (r - R0))
    energy = D * np.sum(((1 - x) ** 2 - 1)[iu])
    dEdr = 2 * D * A * (1 - x) * x
    np.fill_diagonal(dEdr, 0.0)
    np.fill_diagonal(r, 1.0)
    forces = -np.sum((dEdr / r)[..., None] * d, axis=1)
    return energy, forces


@functools.lru_cache(maxsize=4)
def clusters(n: int = 6, n_atoms: int = 5, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        pos = rng.uniform(0.0, 4.0, (n_atoms, 3))
        r = np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(n_atoms, 1)]
        if r.min() < 2.2:
            continue
        e, f = morse(pos)
        out.append(Structure(positions=pos, numbers=np.full(n_atoms, AR), energy=e, forces=f))
    return tuple(out)


def descriptor(angular: bool = True) -> DescriptorSpec:
    funcs = [SymFunc(2, AR, (AR,), RC, eta=eta, rs=rs) for eta, rs in ((0.8, 2.0), (0.8, 3.0), (0.8, 4.0))]
    if angular:
        funcs += [SymFunc(9, AR, (AR, AR), RC, eta=0.1, zeta=z, lam=lam) for z, lam in ((1.5, 1.0), (2.0, -1.0))]
    return DescriptorSpec.from_functions((AR,), funcs, cutoff_type=6)


def potential(hidden=(4,), angular: bool = True, seed: int = 0):
    acts = ("t",) * len(hidden) + ("l",)
    return init_potential(PotentialSpec(descriptor(angular), hidden=tuple(hidden), activations=acts),
                          jax.random.PRNGKey(seed))


def fd_gradient(f, raw, h: float = 1e-5) -> np.ndarray:
    """Central finite differences of scalar f(raw) w.r.t. every raw entry (flat, float64)."""
    flat, unravel = jax.flatten_util.ravel_pytree(raw)
    flat = np.asarray(flat, np.float64)
    out = np.zeros_like(flat)
    for k in range(flat.size):
        e = np.zeros_like(flat)
        e[k] = h
        out[k] = (float(f(unravel(flat + e))) - float(f(unravel(flat - e)))) / (2 * h)
    return out


def flat(tree) -> np.ndarray:
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], np.float64)
