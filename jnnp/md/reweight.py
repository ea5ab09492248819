"""Ensemble-average derivatives by trajectory reweighting (DiffTRe-style), no backprop through MD.

Setting. Frames x_1..x_F are sampled (e.g. by Langevin MD, `jnnp.md.gradients`) from the
canonical ensemble of the potential U_θ0 at temperature T (β = 1/kT). For parameters θ near θ0 the
canonical average of an observable O_θ(x) is estimated by importance weights

    w_i(θ) = exp(−β[U_θ(x_i) − U_θ0(x_i)]) / Σ_j exp(−β[U_θ(x_j) − U_θ0(x_j)]),
    ⟨O⟩_θ ≈ Σ_i w_i(θ) O_θ(x_i),

and its derivative at θ = θ0 (where every w_i = 1/F) is the fluctuation formula

    d⟨O⟩/dθ = −β (⟨O ∂U/∂θ⟩ − ⟨O⟩⟨∂U/∂θ⟩) + ⟨∂O/∂θ⟩.

``jax.grad`` of `reweighted_average` returns exactly this at θ0 (and its reweighted version
elsewhere), which is how DiffTRe trains on time-independent observables (Thaler & Zavadlav,
Nat. Commun. 12, 6884 (2021); tummfm/difftre ``difftre.py``); `fluctuation_gradient` spells the
formula out with per-frame arrays.

Assumptions (they are not checked, except the sample size):
  * the frames are (correlated) samples of the canonical Boltzmann distribution of U_θ0 at the
    given kT — configurational part only: Langevin or a correct Nosé–Hoover chain, equilibrated,
    not NVE (microcanonical) and not a biased/thermostatted-incorrectly run;
  * the volume and N are fixed (NVT); for NPT the weights would need the pV term;
  * θ only changes the potential (kT, masses and the ensemble are the same), and O_θ(x) depends on
    the configuration only (no momenta, no time correlations — use backprop through MD for those);
  * θ is close enough to θ0 that the weights are not degenerate. DiffTRe re-samples when its
    n_eff = exp(−Σ w ln w) drops below 0.9·F. The entropy n_eff can look healthy while the
    estimate is already biased — in the tests' dimer, n_eff = 0.25·F went with a 10σ error,
    when Kish's 1/Σw² was 0.04·F — so watch `Weights.kish` too (it was 0.27·F where the
    reweighted average was still right);
  * statistical errors come from correlated frames: use `blocked` (block averages over blocks
    longer than the correlation time) for error bars.

Units: energies eV, kT eV, positions Å.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.geometry.graph import build_graph, pad_graph

__all__ = [
    "Weights",
    "blocked",
    "fluctuation_gradient",
    "frame_energies",
    "frame_energy_grads",
    "frame_graphs",
    "frame_observables",
    "reweighted_average",
    "reweighting_weights",
]


class Weights(NamedTuple):
    """Normalised importance weights.

    Attributes:
        weights: (F,) w_i ≥ 0, Σ w_i = 1.
        n_eff: () effective sample size exp(−Σ w_i ln w_i) (DiffTRe's choice; F for equal weights).
        kish: () Kish's effective sample size 1 / Σ w_i² (≤ n_eff; F for equal weights).
    """

    weights: jnp.ndarray
    n_eff: jnp.ndarray
    kish: jnp.ndarray


def reweighting_weights(u, u_ref, kT) -> Weights:
    """Weights w_i ∝ exp(−(u_i − u_ref_i)/kT), computed stably (log-sum-exp).

    Args:
        u: (F,) potential energies of the frames under the new parameters [eV].
        u_ref: (F,) energies under the sampling parameters [eV] (a constant: not differentiated).
        kT: thermal energy of the sampling run [eV].

    Differentiable w.r.t. ``u`` (hence the new parameters).
    """
    u = jnp.asarray(u)
    log_w = -(u - jax.lax.stop_gradient(jnp.asarray(u_ref, u.dtype))) / kT
    log_w = log_w - jax.scipy.special.logsumexp(log_w)
    w = jnp.exp(log_w)
    return Weights(w, jnp.exp(-jnp.sum(w * log_w)), 1.0 / jnp.sum(w * w))


def _frame_graph(graphs, i):
    """Frame i's graph from a stacked graph (leading frame axis), or the shared graph."""
    if graphs.pair_i.ndim == 1:
        return graphs
    return jax.tree.map(lambda a: a[i], graphs)


def _map_frames(fn, positions, graphs, batch_size):
    """lax.map of fn(R, graph) over frames (graphs shared or stacked), checkpointed per frame so
    that reverse mode stores only the frame inputs, not every residual of every frame."""
    fn = jax.checkpoint(fn)
    if graphs.pair_i.ndim == 1:
        return jax.lax.map(lambda R: fn(R, graphs), positions, batch_size=batch_size)
    return jax.lax.map(lambda a: fn(*a), (positions, graphs), batch_size=batch_size)


def frame_energies(energy_fn, params, positions, graphs, cell, *, batch_size: int | None = None):
    """(F,) potential energies [eV] of frames.

    Args:
        energy_fn: ``energy_fn(params, positions, cell, graph)`` (`jnnp.model.make_energy_fn`).
        params: the potential's parameter pytree.
        positions: (F, N, 3) [Å].
        graphs: one `Graph` valid for every frame (e.g. the fixed graph of the run that produced
            them), or a stacked `Graph` with a leading (F,) axis (`frame_graphs`).
        cell: (3, 3) [Å] (zeros for free space).
        batch_size: frames evaluated together (``lax.map`` batch); default one at a time.

    Differentiable w.r.t. params and positions (per-frame ``jax.checkpoint`` bounds memory).
    """
    cell = jnp.asarray(cell, positions.dtype)
    return _map_frames(lambda R, g: energy_fn(params, R, cell, g), positions, graphs, batch_size)


def frame_energy_grads(energy_fn, params, positions, graphs, cell, *, batch_size: int | None = None):
    """Per-frame ∂U/∂θ: the params pytree with a leading (F,) axis on every leaf [eV / unit of θ]."""
    cell = jnp.asarray(cell, positions.dtype)
    grad = jax.grad(lambda p, R, g: energy_fn(p, R, cell, g))
    return _map_frames(lambda R, g: grad(params, R, g), positions, graphs, batch_size)


def frame_observables(observable: Callable, params, positions, graphs, cell, *, batch_size: int | None = None):
    """``observable(params, positions, graph, cell)`` (the `jnnp.md.gradients` signature) of every
    frame: its pytree with a leading (F,) axis."""
    cell = jnp.asarray(cell, positions.dtype)
    return _map_frames(lambda R, g: observable(params, R, g, cell), positions, graphs, batch_size)


def reweighted_average(params, observable: Callable, energy_fn, positions, graphs, cell, u_ref, kT, *,
                       batch_size: int | None = None):
    """⟨O⟩_θ ≈ Σ w_i(θ) O_θ(x_i) from frames sampled at θ0; returns (average pytree, `Weights`).

    Args:
        params: θ (the pytree to differentiate).
        observable: ``observable(params, positions, graph, cell) -> pytree`` (configurational).
        energy_fn: ``energy_fn(params, positions, cell, graph)`` [eV].
        positions, graphs, cell: frames as in `frame_energies`.
        u_ref: (F,) energies of the frames under θ0 [eV] (``frame_energies(..., params0, ...)``).
        kT: thermal energy of the sampling run [eV].

    ``jax.grad`` of a function of the average w.r.t. params is the DiffTRe gradient; at
    params = θ0 it equals `fluctuation_gradient` (module docstring for the assumptions). Check
    ``Weights.n_eff`` before trusting a value at θ ≠ θ0.
    """
    u = frame_energies(energy_fn, params, positions, graphs, cell, batch_size=batch_size)
    w = reweighting_weights(u, u_ref, kT)
    obs = frame_observables(observable, params, positions, graphs, cell, batch_size=batch_size)
    avg = jax.tree.map(lambda o: jnp.tensordot(w.weights, o, axes=(0, 0)), obs)
    return avg, w


def fluctuation_gradient(o, du, kT, do_mean=None, weights=None):
    """d⟨O⟩/dθ = −β(⟨O ∂U/∂θ⟩ − ⟨O⟩⟨∂U/∂θ⟩) + ⟨∂O/∂θ⟩ from per-frame arrays.

    Args:
        o: (F,) or (F, K) observable per frame.
        du: pytree of (F, ...) leaves, ∂U/∂θ per frame (`frame_energy_grads`) [eV / unit θ].
        kT: [eV].
        do_mean: optional pytree like one frame of ``du`` (or with a leading K axis for vector
            O): the average explicit derivative ⟨∂O/∂θ⟩; None for observables independent of θ.
        weights: optional (F,) normalised weights (default uniform, i.e. θ = θ0).

    Returns:
        pytree of ``du``'s structure with leaves (...) for scalar O, (K, ...) for vector O.
    """
    o = jnp.asarray(o)
    F = o.shape[0]
    w = jnp.full(F, 1.0 / F, o.dtype) if weights is None else jnp.asarray(weights)
    o2 = o.reshape(F, -1)
    dev = o2 - w @ o2  # (F, K)

    def cov(d):
        d2 = d.reshape(F, -1)
        c = -(dev * w[:, None]).T @ (d2 - w @ d2) / kT  # (K, P)
        return c.reshape(o.shape[1:] + d.shape[1:])

    g = jax.tree.map(cov, du)
    if do_mean is not None:
        g = jax.tree.map(jnp.add, g, do_mean)
    return g


def blocked(estimator: Callable, *arrays, n_blocks: int = 10):
    """Block estimate of a statistic of a correlated time series: (mean over blocks, standard error).

    ``estimator(*block_arrays) -> pytree`` is applied to ``n_blocks`` contiguous blocks of the
    frame axis (axis 0 of every array / pytree leaf; a trailing remainder is dropped); the
    standard error is ``std(block values, ddof=1) / √n_blocks``. Blocks must be longer than the
    correlation time for the error to be honest; nonlinear estimators (covariances) have an
    O(1/block length) bias.
    """
    if n_blocks < 2:
        raise ValueError(f"n_blocks must be ≥ 2, got {n_blocks}")
    F = jax.tree.leaves(arrays)[0].shape[0]
    size = F // n_blocks
    if size < 1:
        raise ValueError(f"{F} frames cannot form {n_blocks} blocks")
    vals = [estimator(*jax.tree.map(lambda a, b=b: a[b * size:(b + 1) * size], arrays)) for b in range(n_blocks)]
    stacked = jax.tree.map(lambda *v: np.stack([np.asarray(x) for x in v]), *vals)
    mean = jax.tree.map(lambda v: v.mean(0), stacked)
    err = jax.tree.map(lambda v: v.std(0, ddof=1) / np.sqrt(n_blocks), stacked)
    return mean, err


def frame_graphs(plan, positions, numbers, cell=None, pbc=False, *, chunk: int | None = None):
    """Host-built exact graphs of every frame, padded to common sizes and stacked (F leading).

    For frames whose run used several graphs (rebuilds). ``positions``: (F, N, 3) [Å]; cell,
    pbc as `jnnp.geometry.build_graph`. Returns a `Graph` whose array leaves have a leading (F,)
    axis (pass it as ``graphs`` above).
    """
    positions = np.asarray(positions, dtype=np.float64)
    graphs = [build_graph(plan, R, numbers, cell, pbc, chunk=chunk) for R in positions]
    if chunk is None and len({g.chunk for g in graphs}) > 1:
        graphs = [build_graph(plan, R, numbers, cell, pbc, chunk=graphs[0].chunk) for R in positions]
    sizes = {"atoms": positions.shape[1], "pairs": max(g.pair_i.shape[0] for g in graphs)}
    for k in ("elements", "pair_blocks", "triplet_blocks"):
        sizes[k] = tuple(max(s) for s in zip(*(g.sizes()[k] for g in graphs)))
    padded = [pad_graph(g, sizes, plan) for g in graphs]
    return jax.tree.map(lambda *a: np.stack(a), *padded)
