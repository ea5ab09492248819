"""Per-element reference energies by linear least squares on the composition.

    E_s ≈ Σ_c n_{s,c} e_c      (n_{s,c}: atoms of element c in structure s; e_c in eV/atom)

The minimum-norm solution is taken when the compositions are collinear (e.g. a single molecule
or a single stoichiometry), which still reproduces the mean energy. Fit it on the training split.
"""

from __future__ import annotations

import numpy as np

__all__ = ["composition_matrix", "fit_reference_energies", "residual_energies"]


def composition_matrix(structures, elements) -> np.ndarray:
    """(S, T) number of atoms of each element (columns in ``elements`` order) per structure."""
    index = {int(z): c for c, z in enumerate(elements)}
    X = np.zeros((len(structures), len(elements)))
    for s_idx, s in enumerate(structures):
        for z, n in zip(*np.unique(s.numbers, return_counts=True)):
            if int(z) not in index:
                raise ValueError(f"{s.provenance}: element Z={int(z)} not among {list(elements)}")
            X[s_idx, index[int(z)]] = n
    return X


def fit_reference_energies(structures, elements) -> np.ndarray:
    """(T,) per-element energies e_c [eV/atom] minimising Σ_s (E_s − Σ_c n_{s,c} e_c)².

    Structures without an energy are skipped. Rank-deficient compositions get the minimum-norm
    solution (exact sums are still reproduced in the least-squares sense).

    Raises:
        ValueError: no structure has an energy.
    """
    labelled = [s for s in structures if s.energy is not None]
    if not labelled:
        raise ValueError("no structure with an energy to fit reference energies to")
    X = composition_matrix(labelled, elements)
    y = np.array([s.energy for s in labelled])
    e, *_ = np.linalg.lstsq(X, y, rcond=None)
    return e


def residual_energies(structures, elements, shifts) -> np.ndarray:
    """Per-atom residual energies (E_s − Σ_c n_{s,c} e_c)/N_s [eV/atom] of labelled structures."""
    labelled = [s for s in structures if s.energy is not None]
    X = composition_matrix(labelled, elements)
    y = np.array([s.energy for s in labelled])
    return (y - X @ np.asarray(shifts)) / X.sum(1)
