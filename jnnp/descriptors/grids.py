"""Automatic symmetry-function parameter grids, so that nobody has to hand-write an input.nn.

Radial functions (n2p2 type 2, G = Σ_j exp(−η (r_ij − r_s)²) f_c(r_ij)) are placed per
(centre, neighbour) element pair on a grid of n points r_k between ``r_min`` and the cutoff
r_c, in one of two ways (Gastegger et al., J. Chem. Phys. 148, 241709 (2018); Imbalzano et al.,
J. Chem. Phys. 148, 241730 (2018)):

* ``"shifted"``: r_s = r_k = r_min + k Δ (k = 0..n−1, Δ = (r_c − r_min)/n), all with one width
  η = 1 / (2 Δ²), so neighbouring Gaussians overlap at one standard deviation;
* ``"centered"``: r_s = 0 and η_k = 1 / (2 r_k²), i.e. Gaussians centred on the atom whose
  widths grow from r_min to r_c.

Angular functions (type 9 "wide" by default, or type 3 "narrow") are placed per (centre,
neighbour, neighbour) element triple for every combination of η ∈ ``angular_eta``,
ζ ∈ ``zeta`` and λ ∈ ``lambdas`` (r_s = 0), as in Behler's original sets.

All lengths in Å, η in Å⁻².
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from jnnp.descriptors.cutoff import cutoff_type_number
from jnnp.descriptors.spec import DescriptorSpec, SymFunc

__all__ = ["radial_grid", "angular_grid", "symmetry_function_grid"]


def radial_grid(n: int, r_min: float, r_cut: float, mode: str = "shifted") -> list[tuple[float, float]]:
    """(η [Å⁻²], r_s [Å]) of ``n`` radial functions between ``r_min`` and ``r_cut`` (module doc).

    Raises:
        ValueError: n < 1, r_min outside [0, r_cut), unknown mode.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"need at least one radial function, got n = {n}")
    if not 0.0 <= r_min < r_cut:
        raise ValueError(f"need 0 <= r_min < cutoff, got r_min = {r_min}, cutoff = {r_cut}")
    if mode not in ("shifted", "centered", "centred"):
        raise ValueError(f"unknown radial grid mode {mode!r}; expected 'shifted' or 'centered'")
    if mode == "shifted":
        # r_k = r_min + k Δ, k = 0..n−1, Δ = (r_c − r_min)/n: no Gaussian sits at r_c (f_c = 0).
        delta = (r_cut - r_min) / n
        eta = 1.0 / (2.0 * delta**2)
        return [(float(eta), float(r_min + k * delta)) for k in range(n)]
    # centred: widths σ_k from r_min (at least 0.1 r_c) to r_c, r_s = 0
    lo = max(r_min, 0.1 * r_cut)
    widths = np.linspace(lo, r_cut, n) if n > 1 else np.array([r_cut])
    return [(float(1.0 / (2.0 * w**2)), 0.0) for w in widths]


def angular_grid(etas=(0.01, 0.05), zetas=(1.0, 2.0, 4.0, 16.0), lambdas=(-1.0, 1.0)) -> list[tuple]:
    """(η, ζ, λ) of every angular function of the grid, in a stable order."""
    for lam in lambdas:
        if lam not in (-1.0, 1.0, -1, 1):
            raise ValueError(f"lambda must be -1 or +1, got {lam}")
    for z in zetas:
        if not z >= 1.0:
            raise ValueError(f"zeta must be >= 1, got {z}")
    for e in etas:
        if not e >= 0.0:
            raise ValueError(f"angular eta must be >= 0, got {e}")
    return [(float(e), float(z), float(l)) for e, z, l in itertools.product(etas, zetas, lambdas)]


def symmetry_function_grid(elements, cutoff: float = 5.0, *, n_radial: int = 8,
                           radial_mode: str | Sequence[str] = "shifted", r_min: float = 0.5,
                           angular_eta=(0.01, 0.05), zeta=(1.0, 2.0, 4.0, 16.0), lambdas=(-1.0, 1.0),
                           angular_type: int = 9, angular_cutoff: float | None = None,
                           cutoff_type="poly2", cutoff_alpha: float = 0.0,
                           angular: bool = True) -> DescriptorSpec:
    """A `DescriptorSpec` with radial and angular grids for every element combination.

    Args:
        elements: atomic numbers (any order; the spec sorts them).
        cutoff: cutoff radius r_c of every function [Å].
        n_radial: radial functions per (centre, neighbour) element pair.
        radial_mode: ``"shifted"`` or ``"centered"`` (module docstring), or several of them: the
            union of their grids (each (η, r_s) once), e.g. a candidate pool
            for `jnnp.hyper.select`.
        r_min: innermost grid point [Å] (about the shortest bond length).
        angular_eta, zeta, lambdas: angular grid; one function per (e1 ≤ e2) neighbour pair and
            per combination (n_eta · n_zeta · n_lambda of them).
        angular_type: 9 (wide, r_ij and r_ik < r_c) or 3 (narrow, also r_jk < r_c).
        angular_cutoff: cutoff of the angular functions [Å] (default: ``cutoff``).
        cutoff_type: n2p2 cutoff type, number or name ("cos", "poly2", ...).
        cutoff_alpha: inner cutoff fraction α.
        angular: include angular functions.

    Returns:
        `DescriptorSpec` with per element n_el · n_radial + n_pairs · n_angular functions, where
        n_pairs = n_el (n_el + 1) / 2.
    """
    elements = sorted({int(z) for z in elements})
    if not elements:
        raise ValueError("need at least one element")
    if angular_type not in (3, 9):
        raise ValueError(f"angular_type must be 3 or 9, got {angular_type}")
    rc = float(cutoff)
    rca = rc if angular_cutoff is None else float(angular_cutoff)
    modes = [radial_mode] if isinstance(radial_mode, str) else list(radial_mode)
    radial = list(dict.fromkeys(p for mode in modes for p in radial_grid(n_radial, float(r_min), rc, mode))
                  ) if n_radial else []
    ang = angular_grid(angular_eta, zeta, lambdas) if angular else []
    funcs = []
    for c in elements:
        for e in elements:
            funcs += [SymFunc(2, c, (e,), rc, eta=eta, rs=rs) for eta, rs in radial]
        if ang:
            for e1, e2 in itertools.combinations_with_replacement(elements, 2):
                funcs += [SymFunc(angular_type, c, (e1, e2), rca, eta=eta, zeta=z, lam=lam)
                          for eta, z, lam in ang]
    return DescriptorSpec.from_functions(elements, funcs, cutoff_type=cutoff_type_number(cutoff_type),
                                         cutoff_alpha=float(cutoff_alpha))
