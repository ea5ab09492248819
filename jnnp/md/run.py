"""The MD driver: jitted chunks of ``lax.scan`` steps with neighbour-overflow rollback.

Each chunk runs ``samples_per_chunk × thermo_every`` steps inside one jitted program
(integration, neighbour check/rebuild, energy, forces, thermo sampling, observables). A block of
``thermo_every`` steps in which the neighbour data overflow (or become invalid) is discarded
together with the rest of the chunk; the driver rebuilds/reallocates the neighbour data from the
last valid state and re-runs it, so no trajectory step is ever computed with missing neighbours.

Neighbour validity within a step: jax-md's ``apply_fn`` moves the atoms and then evaluates the
forces, so the graph is checked *after* the step at the new positions (where the forces were
taken). When the jit graph had to be rebuilt there, the step is redone from its start with the
new graph (one extra force evaluation per rebuild), so every force uses a graph that is valid
where it is evaluated. Given the time step, the chunk avoids most redos: before each step it
predicts each atom's move (velocity Verlet's drift dt·(p + dt/2·F)/m, with a safety factor
for thermostats) and rebuilds at the current positions if the graph would not stay valid
that far; the check after the step remains the guarantee. Host graphs are never rebuilt
inside jit: the check raises the overflow flag and the block is redone after ``reallocate``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.md.integrate import Ensemble, energy_and_pressure, kinetic_energy, temperature_k

__all__ = ["MDRun", "make_chunk_fn", "run_chunks", "init_state", "STANDARD_OUTPUTS"]

# Per-sample outputs of a chunk that observables may not shadow.
STANDARD_OUTPUTS = ("ok", "e_pot", "e_kin", "temperature", "positions", "momenta", "pressure", "volume",
                    "cell", "conserved", "graph_rebuilds", "graph_redos")


@dataclasses.dataclass
class MDRun:
    """Result of `run_chunks`: host arrays of the sampled thermo data and frames.

    Attributes:
        steps: (S,) step index of each sample; time_fs: (S,) [fs].
        e_pot, e_kin: (S,) [eV]; temperature: (S,) [K].
        positions, momenta: (S, N, 3) sampled frames [Å], [amu·Å/time unit].
        extras: the chunk's other per-sample outputs, e.g. ``pressure`` (S,) [eV/Å³],
            ``volume`` (S,) [Å³], ``cell`` (S, 3, 3) [Å], ``conserved`` (S,) [eV] and the
            observables by name.
        state: final integrator state; graph_state: final neighbour state.
        rebuilds: number of neighbour reallocations after an overflow/invalidation.
        wall_s: wall time of the chunks, compilation excluded [s]; compile_s: compilation [s].
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
    compile_s: float = 0.0
    extras: dict = dataclasses.field(default_factory=dict)


def make_chunk_fn(energy_fn, apply_fn, graph_update, cell, thermo_every: int, samples: int, *,
                  pressure: bool = False, conserved: Callable | None = None,
                  observables: Mapping[str, Callable] | None = None, dt: float | None = None,
                  mesh=None):
    """Jitted ``chunk(state, graph_state[, n_max]) -> (state, graph_state, out)``.

    Args:
        energy_fn: ``energy_fn(R, graph=, cell=) -> E`` [eV] (`make_md_energy_fn`).
        apply_fn: ``apply_fn(state, graph=, cell=) -> state`` (`make_integrator`).
        graph_update: ``update(R, graph_state[, cell=])`` of the neighbour graph fns.
        cell: (3, 3) fixed cell [Å] (rows; zeros for free space), or a callable
            ``cell(state) -> (3, 3)`` when the ensemble changes it (NPT:
            ``lambda s: state_cell(s, None)``); then the graph update is given the current cell.
        thermo_every: steps per sample; samples: samples per chunk.
        pressure: also sample P [eV/Å³] and V [Å³] (periodic cells only; one reverse pass per
            sample instead of an energy evaluation).
        conserved: ``conserved(state, e_pot) -> scalar`` [eV] sampled as ``conserved``
            (`jnnp.md.integrate.conserved_energy`), or None.
        observables: ``{name: fn(positions (N, 3) [Å], cell (3, 3) [Å], graph) -> scalar}``,
            evaluated inside the jitted chunk at every sample (positions unwrapped, the graph
            valid for them) and returned under ``name``.
        dt: the integrator's time step [Å·sqrt(amu/eV)]: enables the rebuild before a step that
            could leave the graph's validity (module docstring); None: rebuild only after.
        mesh: run the chunk under ``shard_map`` over this one-axis mesh (`jnnp.md.parallel`):
            ``graph_state`` is then stacked with one part per device (``make_graph_fns(parts=)``),
            and ``energy_fn``/``apply_fn`` must sum the parts (`jnnp.md.parallel.split_energy_fn`);
            each observable then sees its part's graph and the parts' values are added up, so
            observables must be sums over centre atoms (extrapolation counts are).

    The chunk runs ``samples`` blocks of ``thermo_every`` steps (at most ``n_max``, a traced
    integer). A block in which the neighbour data overflow (or become invalid) is discarded
    together with every later block of the chunk: the returned state is the last one reached
    with complete neighbours, and ``out`` is a dict of per-sample arrays: ``ok`` (bool),
    ``e_pot``, ``e_kin`` [eV], ``temperature`` [K], ``positions``, ``momenta``,
    ``graph_rebuilds`` (jit graph rebuilds in the block), ``graph_redos`` (steps of the block
    redone because the graph was rebuilt after them), and as requested
    ``pressure``, ``volume``, ``cell`` (changing cells), ``conserved`` and the observables.
    """
    observables = dict(observables or {})
    clash = sorted(set(observables) & set(STANDARD_OUTPUTS))
    if clash:
        raise ValueError(f"observable names {clash} clash with the chunk's own outputs {STANDARD_OUTPUTS}")
    moving = callable(cell)
    cell_of = cell if moving else (lambda state: cell)

    def update(R, gstate, state, margin=0.0):
        return graph_update(R, gstate, cell=cell_of(state) if moving else None, margin=margin)

    def rebuilt(new, old):
        return jnp.any(new.reference != old.reference)

    def step(_, carry):
        state, gstate, failed, rebuilds, redos = carry
        if dt is not None:  # per-atom margin: 1.5 × this step's velocity-Verlet drift
            drift = dt * (state.momentum + 0.5 * dt * state.force) / state.mass
            g0 = update(state.position, gstate, state, 1.5 * jnp.sqrt(jnp.sum(drift * drift, -1)))
            rebuilds, gstate = rebuilds + rebuilt(g0, gstate), g0

        def attempt(c):
            _, g, _, tries = c
            new = apply_fn(state, graph=g.graph, cell=cell_of(state))
            g_new = update(new.position, g, new)
            return new, g_new, rebuilt(g_new, g), tries + 1  # rebuilt: the forces used a stale graph

        new, gstate, stale, tries = jax.lax.while_loop(lambda c: c[2] & (c[3] < 2), attempt,
                                                       (state, gstate, jnp.asarray(True), 0))
        # still rebuilding after a redo: one step moved an atom by more than skin/2
        return new, gstate, failed | stale, rebuilds + tries - 1, redos + tries - 1

    def block(c):
        zero = jnp.asarray(0, jnp.int32)
        state, gstate, failed, rebuilds, redos = jax.lax.fori_loop(
            0, thermo_every, step, (c[0], c[1], jnp.asarray(False), zero, zero))
        return state, gstate, failed | gstate.overflow, rebuilds, redos

    def skip(c):
        zero = jnp.asarray(0, jnp.int32)
        return c[0], c[1], jnp.asarray(True), zero, zero

    def measure(state, gstate):
        c = cell_of(state)
        out = {"e_kin": kinetic_energy(state), "temperature": temperature_k(state),
               "positions": state.position, "momenta": state.momentum}
        if pressure:
            out["e_pot"], out["pressure"], out["volume"] = energy_and_pressure(energy_fn, state, gstate.graph, c)
        else:
            out["e_pot"] = energy_fn(state.position, graph=gstate.graph, cell=c)
        if moving:
            out["cell"] = c
        if conserved is not None:
            out["conserved"] = conserved(state, out["e_pot"])
        for name, fn in observables.items():
            value = jnp.asarray(fn(state.position, c, gstate.graph))
            if value.shape != ():
                raise ValueError(f"observable {name!r} must return a scalar, got shape {value.shape}")
            if mesh is not None:
                value = jax.lax.psum(value, mesh.axis_names[0])
            out[name] = value
        return out

    def sample(carry, i):
        state, gstate, stopped, n_max = carry
        stopped = stopped | (i >= n_max)
        new_state, new_g, failed, rebuilds, redos = jax.lax.cond(stopped, skip, block, (state, gstate))
        ok = ~failed
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        state, gstate = keep(new_state, state), keep(new_g, gstate)
        out = {"ok": ok, "graph_rebuilds": rebuilds, "graph_redos": redos, **measure(state, gstate)}
        return (state, gstate, stopped | failed, n_max), out

    def run(state, gstate, n_max):
        (state, gstate, _, _), out = jax.lax.scan(sample, (state, gstate, jnp.asarray(False), n_max),
                                                  jnp.arange(samples))
        return state, gstate, out

    if mesh is not None:
        from jnnp.md.parallel import chunk_on_parts

        run = chunk_on_parts(run, mesh)

    @jax.jit
    def chunk(state, gstate, n_max=samples):
        """Run at most ``n_max`` (≤ samples, dynamic) sampling blocks."""
        return run(state, gstate, n_max)

    return chunk


def run_chunks(chunk_fn, state, gstate, graph_fns, n_samples: int, thermo_every: int,
               timestep_fs: float, first_step: int = 0, on_chunk: Callable | None = None,
               max_retries: int = 5, cell_of: Callable | None = None) -> MDRun:
    """Advance ``n_samples × thermo_every`` steps, reallocating neighbours whenever a chunk stops
    early; ``on_chunk(step, state, graph_state, samples)`` is called with every accepted part of
    a chunk (samples: dict of host arrays as the chunk's ``out``, without ``ok``).

    ``cell_of(state) -> (3, 3)``: the current cell when the ensemble changes it (reallocation
    happens in that cell). Compilation (before the first chunk and after every reallocation,
    which may change the shapes) is timed separately from the chunks.
    """
    rec: dict[str, list] = {}
    rebuilds, wall, compile_s, done, failures = 0, 0.0, 0.0, 0, 0
    compiled = False
    if n_samples > 0 and bool(np.any(gstate.overflow)):  # e.g. allocated too small: no chunk could succeed
        gstate = graph_fns.reallocate(state.position, gstate, **({} if cell_of is None else {"cell": cell_of(state)}))
        rebuilds += 1
    while done < n_samples:
        want = n_samples - done
        if not compiled:
            t0 = time.perf_counter()
            chunk_fn.lower(state, gstate, want).compile()  # jax's cache serves the call below
            compile_s += time.perf_counter() - t0
            compiled = True
        t0 = time.perf_counter()
        state, gstate, out = chunk_fn(state, gstate, want)
        out = jax.device_get(out)
        wall += time.perf_counter() - t0
        ok = np.asarray(out.pop("ok"))
        n_ok = int(ok.sum())  # valid samples form a prefix; the state stopped after the last one
        want = min(want, len(ok))
        if n_ok:
            part = {k: np.asarray(v)[:n_ok] for k, v in out.items()}
            for k, v in part.items():
                rec.setdefault(k, []).append(v)
            done += n_ok
            if on_chunk is not None:
                on_chunk(first_step + done * thermo_every, state, gstate, part)
        if n_ok < want and done < n_samples:
            # The rest of the chunk was discarded; rebuild neighbours at the last valid state.
            rebuilds += 1
            failures = failures + 1 if n_ok == 0 else 0
            if failures > max_retries:
                raise RuntimeError(f"neighbour data kept overflowing at step {first_step + done * thermo_every}; "
                                   f"increase the skin or neighbour capacity")
            kw = {} if cell_of is None else {"cell": cell_of(state)}
            gstate = graph_fns.reallocate(state.position, gstate, **kw)
            compiled = False
    steps = first_step + thermo_every * (1 + np.arange(done))
    cat = {k: np.concatenate(v) for k, v in rec.items()}
    empty = np.zeros(0)
    main = {k: cat.pop(k, empty) for k in ("e_pot", "e_kin", "temperature", "positions", "momenta")}
    return MDRun(steps=steps, time_fs=steps * timestep_fs, e_pot=main["e_pot"], e_kin=main["e_kin"],
                 temperature=main["temperature"], positions=main["positions"], momenta=main["momenta"],
                 state=state, graph_state=gstate, rebuilds=rebuilds, wall_s=wall, compile_s=compile_s,
                 extras=cat)


def init_state(init_fn, positions, masses, ensemble: Ensemble, key, graph, cell, momenta=None):
    """jax-md initial state with Maxwell–Boltzmann momenta at the ensemble temperature (zero
    total momentum), or the given momenta [amu·Å/time unit]."""
    return init_fn(key, positions, kT=ensemble.kT, mass=masses, graph=graph, cell=cell,
                   **({} if momenta is None else {"momenta": momenta}))
