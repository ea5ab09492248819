"""Data-derived normalisation of a potential: reference energies, energy unit, SF scaling.

* Reference (per-element) energies e_c by linear least squares on the composition,
  E_s ≈ Σ_c n_{s,c} e_c (minimum-norm solution when compositions are collinear, e.g. a single
  molecule), stored as ``params["energy"]["shift"]``.
* Energy unit of the network output, ``params["energy"]["scale"]``: the standard deviation of
  the per-atom residual energies (E_s − Σ_c n_{s,c} e_c)/N_s (``"energy_std"``), or the RMS of
  the force components (``"force_rms"``, in eV for a 1 Å length scale), or a number. The
  default ``"auto"`` takes force_rms when forces are available: with the per-atom energy spread
  as unit (often ~10 meV for molecules) the initial forces are tiny and training is slow.
* Optionally (default) the reference energies are refitted to E minus the energies of the
  initial networks, so that training starts without a systematic energy offset.
* Symmetry-function scaling statistics (min, max, mean, σ per function, n2p2 definitions) from
  the descriptors of the training structures, computed with the jitted, batched descriptor.

All statistics come from the structures passed in — pass the training split only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.scaling import identity_statistics

__all__ = ["composition_matrix", "fit_reference_energies", "residual_energies", "energy_scale",
           "descriptor_statistics", "normalize_potential"]


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


def energy_scale(structures, elements, shifts, kind="energy_std") -> float:
    """Energy unit of the network output [eV] (module docstring); falls back to 1 eV when the
    statistic is zero or unavailable."""
    if isinstance(kind, (int, float)):
        return float(kind)
    if kind == "auto":
        kind = "force_rms" if any(s.forces is not None for s in structures) else "energy_std"
    if kind == "energy_std":
        r = residual_energies(structures, elements, shifts)
        val = float(np.std(r)) if len(r) > 1 else 0.0
    elif kind == "force_rms":
        f = [s.forces.ravel() for s in structures if s.forces is not None]
        val = float(np.sqrt(np.mean(np.concatenate(f) ** 2))) if f else 0.0
    else:
        raise ValueError(f"unknown energy scale kind {kind!r}; expected 'auto', 'energy_std', 'force_rms' "
                         "or a number")
    return val if np.isfinite(val) and val > 0 else 1.0


@functools.lru_cache(maxsize=8)
def _batch_descriptor_fn(desc, dtype_name: str):
    """Jitted descriptor of a `Batch` (cell = I, Cartesian image offsets), memoised per spec."""
    dfn = make_descriptor_fn(desc)
    dtype = jnp.dtype(dtype_name)

    @jax.jit
    def fn(dparams, batch):
        pos = jnp.asarray(batch.positions).astype(dtype)
        g = batch.graph.replace(pair_shift=jnp.asarray(batch.graph.pair_shift).astype(dtype))
        return dfn(dparams, pos, jnp.eye(3, dtype=dtype), g)

    return fn


def descriptor_statistics(spec, params, batcher) -> tuple:
    """Per element ``{"min", "max", "mean", "sigma"}`` (n2p2 definitions, σ the population
    standard deviation) of the unscaled symmetry functions over every atom of ``batcher``'s
    structures. Streams over batches (Chan's parallel mean/variance update).

    Args:
        spec: `PotentialSpec`; params: potential parameters (``params["descriptor"]`` is used);
        batcher: `jnnp.train.batch.Batcher` over the training structures.
    """
    desc = spec.descriptor
    dtype = jnp.asarray(params["energy"]["scale"]).dtype
    fn = _batch_descriptor_fn(desc, jnp.dtype(dtype).name)

    T = len(desc.elements)
    count = [0] * T
    mean = [np.zeros(n) for n in desc.n_features]
    m2 = [np.zeros(n) for n in desc.n_features]
    lo = [np.full(n, np.inf) for n in desc.n_features]
    hi = [np.full(n, -np.inf) for n in desc.n_features]
    for batch in batcher.batches():
        G = fn(params["descriptor"], batch)
        for c in range(T):
            rows = np.asarray(G[c], np.float64)[np.asarray(batch.graph.element_mask[c])]
            if len(rows) == 0:
                continue
            nb, mb = len(rows), rows.mean(0)
            m2b = ((rows - mb) ** 2).sum(0)
            n = count[c] + nb
            delta = mb - mean[c]
            mean[c] = mean[c] + delta * nb / n
            m2[c] = m2[c] + m2b + delta**2 * count[c] * nb / n
            count[c] = n
            lo[c], hi[c] = np.minimum(lo[c], rows.min(0)), np.maximum(hi[c], rows.max(0))
    stats = []
    for c, n in enumerate(desc.n_features):
        if count[c] == 0:
            stats.append(identity_statistics(n))
        else:
            stats.append({"min": lo[c], "max": hi[c], "mean": mean[c], "sigma": np.sqrt(m2[c] / count[c])})
    return tuple(stats)


def normalize_potential(potential, structures, *, batcher=None, scale="auto", shifts: bool = True,
                        scaling: bool = True, center_network: bool = True, batch_size: int = 32):
    """The potential with shifts, energy scale and SF scaling fitted to ``structures``.

    Args:
        potential: `Potential` (its network weights are kept).
        structures: the training structures (only these are looked at).
        batcher: a `Batcher` over ``structures`` (reuses its graphs); built if None.
        scale: ``"energy_std"``, ``"force_rms"``, ``"auto"`` (force_rms when the structures have
            forces, else energy_std), a number [eV], or None to keep the current one.
        shifts: fit the per-element reference energies (else keep them, and compute residuals
            with the current ones).
        scaling: fit the symmetry-function scaling statistics.
        center_network: with ``shifts``, fit the reference energies to E − (network energies of
            the initial weights) instead of E, so that the initial model has no systematic
            energy offset (one extra pass over the data).
        batch_size: structures per descriptor batch when ``batcher`` is None.
    """
    from jnnp.train.batch import Batcher

    if scale == "auto":
        scale = "force_rms" if any(s.forces is not None for s in structures) else "energy_std"

    spec = potential.spec
    params = dict(potential.params)
    dtype = np.asarray(params["energy"]["shift"]).dtype
    energy = dict(params["energy"])
    has_energy = any(s.energy is not None for s in structures)
    if shifts and has_energy:
        energy["shift"] = np.asarray(fit_reference_energies(structures, spec.elements), dtype)
    if scale is not None and has_energy:
        energy["scale"] = np.asarray(energy_scale(structures, spec.elements, np.asarray(energy["shift"]), scale),
                                     dtype)
    params["energy"] = energy
    if scaling:
        if batcher is None:
            batcher = Batcher(spec, structures, batch_size)
        stats = descriptor_statistics(spec, params, batcher)
        params["scaling"] = tuple({k: np.asarray(v, dtype) for k, v in st.items()} for st in stats)
    if shifts and center_network and has_energy:
        if batcher is None:
            batcher = Batcher(spec, structures, batch_size)
        energy["shift"] = np.asarray(_centered_shifts(spec, params, batcher), dtype)
    return potential.replace(params=params)


def _centered_shifts(spec, params, batcher) -> np.ndarray:
    """Reference energies fitted to E_s − Σ_i scale·NN(G_i) (network energies without shifts)."""
    from jnnp.train.step import cached_properties_fn

    fn = cached_properties_fn(spec, False, False)
    p0 = dict(params)
    p0["energy"] = {"scale": params["energy"]["scale"], "shift": np.zeros_like(params["energy"]["shift"])}
    e_net = np.zeros(len(batcher.structures))
    for batch in batcher.batches():
        e = np.asarray(fn(p0, batch)["energy"], np.float64)
        ok = batch.structure_mask
        e_net[batch.index[ok]] = e[ok]
    labelled = [i for i, s in enumerate(batcher.structures) if s.energy is not None]
    X = composition_matrix([batcher.structures[i] for i in labelled], spec.elements)
    y = np.array([batcher.structures[i].energy for i in labelled]) - e_net[labelled]
    return np.linalg.lstsq(X, y, rcond=None)[0]
