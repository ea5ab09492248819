"""Gradients of MD trajectory observables w.r.t. potential parameters, by backprop through MD.

The whole trajectory is one jitted ``lax.scan`` that is a pure function of the potential's
parameter pytree (network weights, scaling statistics, energy scale/shift and — when the
descriptor spec marks them trainable — symmetry-function parameters), so ``jax.grad`` of any
function of the sampled observables gives the exact derivative *of that finite trajectory*
(same initial state, same thermostat noise):

    md = make_diff_md(potential.spec, Ensemble("nve", 0.5, 300.0))
    gstate = host_fns.allocate(R0)                  # or a jit graph (jnnp.geometry.neighbors)
    state0 = md.init(params, key, R0, masses, gstate.graph, cell)
    traj = make_trajectory_fn(md, cell, n_samples=100, sample_every=5,
                              observables={"e_pot": potential_energy_observable(md),
                                           "g_oo": rdf_observable(numbers, (8, 8), cell, 6.0, 60, 0.05)},
                              graph_update=host_fns.update)
    loss = lambda p: jnp.mean(traj(p, state0, gstate).samples["e_pot"])
    value, grad = jax.value_and_grad(loss)(params)  # check traj(...).invalid is False

Memory: without checkpointing reverse mode stores the residuals of every force evaluation
(∝ steps). With ``checkpoint=True`` the scan runs over chunks of ``samples_per_chunk`` samples,
each chunk under ``jax.checkpoint``: only the chunk-boundary states are kept, and one chunk is
recomputed at a time in the backward pass, so memory ∝ n_chunks + chunk_length (≈ 2√steps for
chunk ≈ √steps) at ≈ 1 extra forward pass of compute.

Limits (why reweighting, `jnnp.md.reweight`, is the default for equilibrium observables): MD is
chaotic, so the pathwise gradient of a long trajectory grows exponentially with its length
(Metz et al., arXiv:2111.05803); use short windows here. (Only contracting dynamics — e.g. a
strongly damped Langevin run of a small bound system, as in the tests — gives a pathwise
derivative of a long time average that converges to d⟨O⟩/dθ.) Check ``invalid``: a neighbour
graph that was not exact somewhere along the trajectory makes value and gradient wrong.

NPT (``npt_nose_hoover``): the cell is part of the state; observables and the graph update get
the current cell, so `volume_observable` / `density_observable` are differentiable too.

Units: eV, Å, amu, time Å·sqrt(amu/eV); configs speak fs and K (`Ensemble`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.geometry.edges import safe_norm
from jnnp.geometry.neighbors import JitGraphState
from jnnp.md.integrate import Ensemble, make_integrator, state_cell
from jnnp.model.potential import make_energy_fn
from jnnp.units import AMU_KG

__all__ = [
    "DiffMD",
    "Trajectory",
    "default_samples_per_chunk",
    "density_observable",
    "make_diff_md",
    "make_trajectory_fn",
    "potential_energy_observable",
    "rdf_observable",
    "smoothed_pair_histogram",
    "smoothed_rdf",
    "volume_observable",
]


class DiffMD(NamedTuple):
    """Integrator whose energy takes the parameters as an argument (from `make_diff_md`).

    Attributes:
        energy_fn: ``energy_fn(R, *, params, graph, cell) -> ()`` [eV] (jax-md keyword style).
        init: ``init(params, key, R, masses, graph, cell, momenta=None) -> state``: jax-md state
            with Maxwell–Boltzmann momenta at the ensemble temperature (zero total momentum), or
            the given momenta (N, 3) [amu·Å/time unit]. masses: (N,) [amu].
        apply: jax-md step ``apply(state, *, params, graph, cell) -> state``.
        force: ``force(R, *, params, graph, cell) -> (N, 3)`` [eV/Å].
        ensemble: the `Ensemble`.
    """

    energy_fn: Callable
    init: Callable
    apply: Callable
    force: Callable
    ensemble: Ensemble


def make_diff_md(spec, ensemble: Ensemble) -> DiffMD:
    """A jax-md integrator for ``spec`` (a `PotentialSpec`) with the parameters as a traced input.

    The ensemble is any of `Ensemble`'s kinds (NVE, Nosé–Hoover or Langevin NVT, Nosé–Hoover
    NPT); with Langevin the noise comes from the key stored in the state, so a fixed initial
    state gives a fixed noise sequence and the trajectory is a deterministic, differentiable
    function of params. In NPT the cell is part of the state (`jnnp.md.integrate.state_cell`).
    """
    efn = make_energy_fn(spec)

    def energy_fn(R, params, graph, cell=None, box=None, perturbation=None, **unused):
        # jax-md's NPT calls energy_fn(R, box=cell.T, perturbation=1 + ε) (isotropic strain ε of
        # positions and cell, differentiated for the barostat's virial); the others pass cell.
        if cell is None:
            cell = box.T
        if perturbation is not None:
            R, cell = R * perturbation, cell * perturbation
        return efn(params, R, cell, graph)

    init_fn, apply_fn = make_integrator(energy_fn, ensemble)
    force_fn = jax.grad(lambda R, **kw: -energy_fn(R, **kw))

    def init(params, key, R, masses, graph, cell, momenta=None):
        extra = {} if momenta is None else {"momenta": momenta}
        return init_fn(key, R, kT=ensemble.kT, mass=masses, params=params, graph=graph, cell=cell, **extra)

    return DiffMD(energy_fn, init, apply_fn, force_fn, ensemble)


class Trajectory(NamedTuple):
    """Output of a trajectory function.

    Attributes:
        samples: the observables' pytree with a leading (n_samples,) axis; sample k is taken
            after step (k + 1)·sample_every.
        state: final integrator state.
        graph_state: final neighbour state (or the fixed graph when ``graph_update`` is None).
        invalid: () bool: the neighbour graph overflowed or went stale (an atom moved more than
            skin/2 from the graph's reference) at some step; samples and gradients are then wrong.
    """

    samples: object
    state: object
    graph_state: object
    invalid: jnp.ndarray


def default_samples_per_chunk(n_samples: int) -> int:
    """The largest divisor of ``n_samples`` not above ⌈√n_samples⌉ (≈ √N memory for the scan)."""
    target = max(1, math.ceil(math.sqrt(n_samples)))
    return max(d for d in range(1, target + 1) if n_samples % d == 0)


def make_trajectory_fn(md: DiffMD, cell, n_samples: int, *, sample_every: int = 1, observables=None,
                       graph_update: Callable | None = None, checkpoint: bool = True,
                       samples_per_chunk: int | None = None, checkpoint_policy=None) -> Callable:
    """Jitted ``trajectory(params, state, graph_state) -> Trajectory``, differentiable in params.

    Args:
        md: from `make_diff_md`.
        cell: (3, 3) lattice rows [Å] (zeros for free space); a static constant of the program.
        n_samples: number of samples; the run has ``n_samples × sample_every`` steps.
        sample_every: steps between samples.
        observables: ``fn(params, positions, graph, cell) -> pytree`` or a dict of such
            functions (positions (N, 3) [Å], unwrapped), evaluated on the state after every
            ``sample_every`` steps; default: the potential energy [eV]
            (`potential_energy_observable`).
        graph_update: ``update(positions, graph_state) -> graph_state`` from a `GraphFns`
            (`jnnp.md.host_graph.make_host_graph_fns`: fixed graph with a skin, validity check
            only; `jnnp.geometry.neighbors.make_graph_fns`: rebuilt inside jit). It is called
            before every step and after the last; ``graph_state.overflow`` becomes
            `Trajectory.invalid`. None: ``graph_state`` is used unchanged at every step (a
            `Graph`, or a state with ``.graph``) — exact only for a complete graph, e.g. all
            pairs of a small free cluster that stays within the cutoff.
        checkpoint: scan over chunks of ``samples_per_chunk`` samples, each under
            ``jax.checkpoint`` (memory ∝ √steps); False: one plain scan (memory ∝ steps). The
            results are identical; only memory and compute differ.
        samples_per_chunk: must divide ``n_samples``; default `default_samples_per_chunk`.
        checkpoint_policy: optional ``jax.checkpoint_policies`` entry for the chunk body.

    The initial force is recomputed from ``params`` (the state's stored force is ignored), so the
    first half-kick is differentiable too. Initial positions, momenta, thermostat variables and
    the Langevin key are inputs and not differentiated (pass them as constants).
    """
    if n_samples < 1 or sample_every < 1:
        raise ValueError(f"n_samples and sample_every must be ≥ 1, got {n_samples}, {sample_every}")
    if samples_per_chunk is None:
        samples_per_chunk = default_samples_per_chunk(n_samples) if checkpoint else n_samples
    if n_samples % samples_per_chunk:
        raise ValueError(f"samples_per_chunk = {samples_per_chunk} must divide n_samples = {n_samples}")
    observe = _combine(observables if observables is not None else potential_energy_observable(md))
    cell = jnp.asarray(cell)
    n_chunks = n_samples // samples_per_chunk
    changes_cell = md.ensemble.changes_cell

    def run(params, state, graph_state):
        c0 = cell.astype(state.position.dtype)
        cell_of = (lambda st: state_cell(st, c0)) if changes_cell else (lambda st: c0)

        def graph_of(g):
            return g.graph if hasattr(g, "graph") else g

        def update(st, g):
            """(state, graph state) after checking/rebuilding the graph at the state's positions."""
            if graph_update is None:
                return st, g
            if changes_cell:  # the graph is checked (host) or rebuilt (jit) in the current cell
                g2 = graph_update(st.position, g, cell=cell_of(st))
            else:
                g2 = graph_update(st.position, g)
            if not rebuilds:
                return st, g2
            # jax-md took the state's force with the previous graph; after a rebuild (the atoms
            # had moved too far for it) take it again with the new one, so every force is exact.
            rebuilt = jnp.any(g2.reference != g.reference)
            st = jax.lax.cond(rebuilt, lambda s: s.set(force=md.force(
                s.position, params=params, graph=g2.graph, cell=cell_of(s))), lambda s: s, st)
            return st, g2

        def step(carry, _):
            st, g = update(*carry)
            st = md.apply(st, params=params, graph=graph_of(g), cell=c0)
            return (st, g), None

        def sample(carry, _):
            carry, _ = jax.lax.scan(step, carry, None, length=sample_every)
            st, g = update(*carry)  # validate the sampled (end) state too
            return (st, g), observe(params, st.position, graph_of(g), cell_of(st))

        def chunk(carry, _):
            return jax.lax.scan(sample, carry, None, length=samples_per_chunk)

        if checkpoint:
            chunk = jax.checkpoint(chunk, policy=checkpoint_policy)
        rebuilds = isinstance(graph_state, JitGraphState)
        if graph_update is not None:
            graph_state = (graph_update(state.position, graph_state, cell=cell_of(state)) if changes_cell
                           else graph_update(state.position, graph_state))
        force = md.force(state.position, params=params, graph=graph_of(graph_state), cell=cell_of(state))
        (st, g), ys = jax.lax.scan(chunk, (state.set(force=force), graph_state), None, length=n_chunks)
        samples = jax.tree.map(lambda y: y.reshape((n_samples,) + y.shape[2:]), ys)
        invalid = jnp.asarray(False) if graph_update is None else jnp.asarray(g.overflow, bool)
        return Trajectory(samples, st, g, invalid)

    return jax.jit(run)


def _combine(observables):
    if callable(observables):
        return observables
    if isinstance(observables, dict) and observables and all(callable(f) for f in observables.values()):
        return lambda *a: {k: f(*a) for k, f in observables.items()}
    raise TypeError("observables must be a function (params, positions, graph, cell) -> pytree "
                    f"or a non-empty dict of such functions, got {type(observables).__name__}")


# ----------------------------------------------------------------------------------------------
# Observables: fn(params, positions, graph, cell) -> pytree; smooth in positions and params.


def potential_energy_observable(md: DiffMD) -> Callable:
    """Potential energy [eV] (differentiable w.r.t. params and positions)."""

    def e_pot(params, positions, graph, cell):
        return md.energy_fn(positions, params=params, graph=graph, cell=cell)

    return e_pot


def volume_observable(params, positions, graph, cell):
    """Cell volume |det cell| [Å³] (constant unless the cell is a dynamical variable, NPT)."""
    return jnp.abs(jnp.linalg.det(cell))


def density_observable(masses) -> Callable:
    """Observable: mass density Σm / V [g/cm³] (masses (N,) [amu]); changes only in NPT."""
    total = float(np.sum(np.asarray(masses, dtype=np.float64))) * AMU_KG * 1e27  # amu/Å³ → g/cm³

    def density(params, positions, graph, cell):
        return total / jnp.abs(jnp.linalg.det(cell))

    return density


def _edges_and_centres(r_max: float, n_bins: int, dtype=np.float64):
    edges = np.linspace(0.0, r_max, n_bins + 1, dtype=dtype)
    return edges, 0.5 * (edges[1:] + edges[:-1])


def smoothed_pair_histogram(positions, index_a, index_b, edges, sigma: float, cell=None):
    """Gaussian-broadened pair-distance histogram: (K,) number of A–B pairs per bin.

    Each pair distance r contributes the mass of a Gaussian N(r, σ²) inside each bin
    [e_k, e_{k+1}) (difference of error functions), so the result is smooth in the positions
    and tends to the plain histogram as σ → 0.

    Args:
        positions: (N, 3) [Å] (unwrapped is fine).
        index_a, index_b: static integer index arrays of the A and B atoms; when equal (same
            array contents) every unordered pair is counted once, else every (a, b) pair with
            a ≠ b.
        edges: (K + 1,) static bin edges [Å], ascending.
        sigma: Gaussian width [Å], > 0.
        cell: (3, 3) lattice rows [Å] for the minimum image (valid for distances below half
            the smallest perpendicular width), or None for free space.

    Cost: O(N_A · N_B · K) memory and time (meant for small to medium systems).
    Differentiable w.r.t.: positions, cell.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    ia, ib = np.asarray(index_a, dtype=np.int64), np.asarray(index_b, dtype=np.int64)
    same = ia.shape == ib.shape and np.array_equal(ia, ib)
    d = positions[ib][None, :, :] - positions[ia][:, None, :]
    if cell is not None:
        cell = jnp.asarray(cell, positions.dtype)
        s = d @ jnp.linalg.inv(cell)
        d = (s - jax.lax.stop_gradient(jnp.round(s))) @ cell
    r = safe_norm(d)
    pair = (np.triu(np.ones((len(ia), len(ib)), bool), 1) if same
            else ia[:, None] != ib[None, :])
    e = jnp.asarray(edges, positions.dtype)
    cdf = jax.scipy.special.erf((e - r[..., None]) / (np.sqrt(2.0) * sigma))
    mass = 0.5 * (cdf[..., 1:] - cdf[..., :-1])
    return jnp.sum(jnp.where(pair[..., None], mass, 0.0), axis=(0, 1))


def smoothed_rdf(positions, cell, index_a, index_b, r_max: float, n_bins: int, sigma: float):
    """Gaussian-broadened partial RDF g_AB on n_bins bins of [0, r_max] (periodic cell).

    Normalised as `jnnp.md.analysis.rdf` (ideal gas → 1): counts / (n_pairs · shell volume / V),
    with n_pairs = N_A(N_A − 1)/2 for A = B, else N_A·N_B. As σ → 0 it equals the histogram RDF
    of `analysis.rdf` with the same bins. r_max must not exceed half the smallest perpendicular
    cell width (minimum image).

    Returns:
        (r, g): (n_bins,) bin centres [Å] (numpy) and g (jax array). Differentiable w.r.t.:
        positions, cell.
    """
    ia, ib = np.asarray(index_a), np.asarray(index_b)
    same = ia.shape == ib.shape and np.array_equal(ia, ib)
    n_pairs = len(ia) * (len(ia) - 1) / 2 if same else float(len(ia) * len(ib) - np.sum(ia[:, None] == ib[None, :]))
    if n_pairs <= 0:
        raise ValueError("smoothed_rdf needs at least one A–B pair")
    edges, centres = _edges_and_centres(r_max, n_bins)
    counts = smoothed_pair_histogram(positions, ia, ib, edges, sigma, cell)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volume = jnp.abs(jnp.linalg.det(jnp.asarray(cell, positions.dtype)))
    return centres, counts * volume / (n_pairs * shell)


def rdf_observable(numbers, pair, cell, r_max: float, n_bins: int, sigma: float) -> Callable:
    """Observable ``fn(params, positions, graph, cell) -> (n_bins,)`` smoothed g_AB(r).

    Args:
        numbers: (N,) atomic numbers; pair: (Z_A, Z_B), e.g. (8, 8) for O–O.
        cell: (3, 3) lattice rows [Å] of the (initial) cell, used to check r_max against half
            its smallest perpendicular width.
        r_max, n_bins, sigma: bins of [0, r_max] [Å], Gaussian width [Å].

    Bin centres: ``np.linspace(0, r_max, n_bins + 1)`` midpoints.
    """
    from jnnp.md.analysis import perpendicular_widths

    numbers = np.asarray(numbers)
    ia, ib = np.flatnonzero(numbers == pair[0]), np.flatnonzero(numbers == pair[1])
    if not len(ia) or not len(ib):
        raise ValueError(f"no atoms of pair {tuple(pair)} among atomic numbers {sorted(set(numbers.tolist()))}")
    half = 0.5 * perpendicular_widths(np.asarray(cell, dtype=np.float64)).min()
    if r_max > half * (1 + 1e-12):
        raise ValueError(f"r_max = {r_max} Å exceeds half the smallest perpendicular cell width ({half:.4f} Å)")

    def g(params, positions, graph, cell):
        return smoothed_rdf(positions, cell, ia, ib, r_max, n_bins, sigma)[1]

    return g
