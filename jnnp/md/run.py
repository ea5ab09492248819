"""The MD driver: jitted chunks of ``lax.scan`` steps with neighbour-overflow rollback.

Each chunk runs ``samples_per_chunk × thermo_every`` steps inside one jitted program
(neighbour update, energy, forces, integration, thermo sampling). After a chunk the overflow flag
is checked: on overflow the chunk is discarded, the neighbour data are rebuilt/reallocated from
the chunk's saved start state, and the chunk is re-run, so no trajectory step is ever computed
with missing neighbours.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.md.integrate import Ensemble, kinetic_energy, temperature_k

__all__ = ["MDRun", "make_chunk_fn", "run_chunks"]


@dataclasses.dataclass
class MDRun:
    """Result of `run_chunks`: host arrays of the sampled thermo data and frames.

    Attributes:
        steps: (S,) step index of each sample; time_fs: (S,) [fs].
        e_pot, e_kin: (S,) [eV]; temperature: (S,) [K].
        positions, momenta: (S, N, 3) sampled frames [Å], [amu·Å/time unit].
        state: final integrator state; graph_state: final neighbour state.
        rebuilds: number of neighbour rebuilds after an overflow/invalidation.
        wall_s: wall time of the production chunks (compilation excluded) [s].
    """

    steps: np.ndarray
    time_fs: np.ndarray
    e_pot: np.ndarray
    e_kin: np.ndarray
    temperature: np.ndarray
    positions: np.ndarray
    momenta: np.ndarray
    state: object
    graph_state: object
    rebuilds: int
    wall_s: float


def make_chunk_fn(energy_fn, apply_fn, graph_update, cell, thermo_every: int, samples: int):
    """Jitted ``chunk(state, graph_state) -> (state, graph_state, out)``.

    The chunk runs ``samples`` blocks of ``thermo_every`` steps. A block in which the neighbour
    data overflow (or become invalid) is discarded together with every later block of the chunk:
    the returned state is the last one reached with complete neighbours, and ``out`` holds per
    sample (valid, e_pot, e_kin, T, positions, momenta).
    """

    def step(_, carry):
        state, gstate, overflow = carry
        gstate = graph_update(state.position, gstate)
        state = apply_fn(state, graph=gstate.graph, cell=cell)
        return state, gstate, overflow | gstate.overflow

    def block(c):
        state, gstate, overflow = jax.lax.fori_loop(0, thermo_every, step, (c[0], c[1], jnp.asarray(False)))
        # The block's last step moved the atoms after the last check: validate the end state too.
        gstate = graph_update(state.position, gstate)
        return state, gstate, overflow | gstate.overflow

    def skip(c):
        return c[0], c[1], jnp.asarray(True)

    def sample(carry, i):
        state, gstate, stopped, n_max = carry
        stopped = stopped | (i >= n_max)
        new_state, new_g, overflow = jax.lax.cond(stopped, skip, block, (state, gstate))
        ok = ~overflow
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        state, gstate = keep(new_state, state), keep(new_g, gstate)
        e_pot = energy_fn(state.position, graph=gstate.graph, cell=cell)
        out = (ok, e_pot, kinetic_energy(state), temperature_k(state), state.position, state.momentum)
        return (state, gstate, stopped | overflow, n_max), out

    @jax.jit
    def chunk(state, gstate, n_max=samples):
        """Run at most ``n_max`` (≤ samples, dynamic) sampling blocks."""
        (state, gstate, _, _), out = jax.lax.scan(sample, (state, gstate, jnp.asarray(False), n_max),
                                                  jnp.arange(samples))
        return state, gstate, out

    return chunk


def run_chunks(chunk_fn, state, gstate, graph_fns, n_samples: int, thermo_every: int,
               timestep_fs: float, first_step: int = 0, on_chunk: Callable | None = None,
               max_retries: int = 5) -> MDRun:
    """Advance ``n_samples × thermo_every`` steps, rebuilding neighbours whenever a chunk stops
    early; ``on_chunk(step, state, graph_state, samples)`` is called with every accepted part of
    a chunk (samples: e_pot, e_kin, T, positions, momenta)."""
    rec = {k: [] for k in ("e_pot", "e_kin", "T", "R", "P")}
    rebuilds, wall, done, failures = 0, 0.0, 0, 0
    while done < n_samples:
        t0 = time.perf_counter()
        want = n_samples - done
        state, gstate, out = chunk_fn(state, gstate, want)
        ok = np.asarray(out[0])
        wall += time.perf_counter() - t0
        n_ok = int(ok.sum())  # valid samples form a prefix; the state stopped after the last one
        want = min(want, len(ok))
        if n_ok:
            for k, v in zip(("e_pot", "e_kin", "T", "R", "P"), out[1:]):
                rec[k].append(np.asarray(v)[:n_ok])
            done += n_ok
            if on_chunk is not None:
                on_chunk(first_step + done * thermo_every, state, gstate, [np.asarray(v)[:n_ok] for v in out[1:]])
        if n_ok < want and done < n_samples:
            # The rest of the chunk was discarded; rebuild neighbours at the last valid state.
            rebuilds += 1
            failures = failures + 1 if n_ok == 0 else 0
            if failures > max_retries:
                raise RuntimeError(f"neighbour data kept overflowing at step {first_step + done * thermo_every}; "
                                   f"increase the skin or neighbour capacity")
            gstate = graph_fns.reallocate(state.position, gstate)
    steps = first_step + thermo_every * (1 + np.arange(done))
    cat = lambda k: np.concatenate(rec[k]) if rec[k] else np.zeros(0)
    return MDRun(steps=steps, time_fs=steps * timestep_fs, e_pot=cat("e_pot"), e_kin=cat("e_kin"),
                 temperature=cat("T"), positions=cat("R"), momenta=cat("P"), state=state,
                 graph_state=gstate, rebuilds=rebuilds, wall_s=wall)


def init_state(init_fn, positions, masses, ensemble: Ensemble, key, graph, cell, momenta=None):
    """jax-md initial state with Maxwell–Boltzmann momenta at the ensemble temperature (zero
    total momentum), or the given momenta [amu·Å/time unit]."""
    return init_fn(key, positions, kT=ensemble.kT, mass=masses, graph=graph, cell=cell,
                   **({} if momenta is None else {"momenta": momenta}))
