"""Data-derived normalisation of a potential: reference energies, energy unit, SF scaling.

* Reference (per-element) energies e_c (`jnnp.train.reference`), stored as
  ``params["energy"]["shift"]``.
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
from jnnp.train.reference import composition_matrix, fit_reference_energies, residual_energies

__all__ = ["composition_matrix", "fit_reference_energies", "residual_energies", "energy_scale", "refit_shifts",
           "descriptor_statistics", "normalize_potential"]


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
def _descriptor_energy_fn(spec, dtype_name: str):
    """Jitted ``fn(params, batch) -> (G per element, (B,) energies)`` of a `Batch` (cell = I,
    Cartesian image offsets), memoised per spec: one program serves both normalisation passes
    (descriptor statistics, then network energies with the new scaling)."""
    from jnnp.train.batch import make_batch_energy_fn

    dfn = make_descriptor_fn(spec.descriptor)
    efn = make_batch_energy_fn(spec)
    dtype = jnp.dtype(dtype_name)

    @jax.jit
    def fn(params, batch):
        pos = jnp.asarray(batch.positions).astype(dtype)
        g = batch.graph.replace(pair_shift=jnp.asarray(batch.graph.pair_shift).astype(dtype))
        return dfn(params["descriptor"], pos, jnp.eye(3, dtype=dtype), g), efn(params, batch, pos)

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
    fn = _descriptor_energy_fn(spec, jnp.dtype(dtype).name)

    T = len(desc.elements)
    count = [0] * T
    mean = [np.zeros(n) for n in desc.n_features]
    m2 = [np.zeros(n) for n in desc.n_features]
    lo = [np.full(n, np.inf) for n in desc.n_features]
    hi = [np.full(n, -np.inf) for n in desc.n_features]
    for batch in batcher.batches():
        G, _ = fn(params, batch)
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
        unit = energy_scale(structures, spec.elements, np.asarray(energy["shift"]), scale)
        energy["scale"] = np.asarray(unit, dtype)
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


def refit_shifts(potential, batcher, include=None):
    """The potential with its reference energies refitted to its own residuals on ``batcher``'s
    structures: e_c → e_c + Δ_c with Δ the least-squares (minimum-norm, so compositions the data
    do not separate keep their split) fit of the per-atom energy errors (E_s − Ê_s)/N_s — weighted
    as the per-atom energy loss weighs them. Networks, energy unit and SF scaling unchanged, so
    forces are unchanged.

    Training weighted towards forces barely constrains the energy offset, and Adam moves weakly
    constrained parameters at the step size whatever their gradient, so the model chosen by the
    validation loss can carry a constant per-element energy error (rMD17 benzene: test energy MAE
    ≈ RMSE, one shift of every frame). Δ = 0 is a candidate of the fit, so the training energy
    error can only go down. ``include``: optional (len(batcher.structures),) bool, the structures
    to fit (e.g. a committee member's subset). Structures without a finite energy (or with a
    non-finite prediction) are ignored; without any, the potential is returned unchanged.
    """
    spec, params = potential.spec, dict(potential.params)
    X, y, rows = _network_residuals(spec, params, batcher)
    keep = np.isfinite(y) & (True if include is None else np.asarray(include, bool)[rows])
    X, y = X[keep], y[keep]
    if not len(y):
        return potential
    energy = dict(params["energy"])
    old = np.asarray(energy["shift"])
    n = X.sum(axis=1, keepdims=True)
    delta = np.linalg.lstsq(X / n, (y - X @ old) / n[:, 0], rcond=None)[0]
    energy["shift"] = (old + delta).astype(old.dtype)
    params["energy"] = energy
    return potential.replace(params=params)


def _network_residuals(spec, params, batcher):
    """(X, y, rows): composition matrix (S, T) and E_s − Σ_i scale·NN(G_i) (network energies
    without shifts) [eV] of the S structures of ``batcher`` that have an energy, and their indices."""
    dtype = jnp.asarray(params["energy"]["scale"]).dtype
    fn = _descriptor_energy_fn(spec, jnp.dtype(dtype).name)
    p0 = dict(params)
    p0["energy"] = {"scale": params["energy"]["scale"], "shift": np.zeros_like(params["energy"]["shift"])}
    e_net = np.zeros(len(batcher.structures))
    for batch in batcher.batches():
        e = np.asarray(fn(p0, batch)[1], np.float64)
        ok = batch.structure_mask
        e_net[batch.index[ok]] = e[ok]
    labelled = np.array([i for i, s in enumerate(batcher.structures) if s.energy is not None], int)
    X = composition_matrix([batcher.structures[i] for i in labelled], spec.elements)
    y = np.array([batcher.structures[i].energy for i in labelled]) - e_net[labelled]
    return X, y, labelled


def _centered_shifts(spec, params, batcher) -> np.ndarray:
    """Reference energies fitted to E_s − Σ_i scale·NN(G_i) (network energies without shifts)."""
    X, y, _ = _network_residuals(spec, params, batcher)
    return np.linalg.lstsq(X, y, rcond=None)[0]
