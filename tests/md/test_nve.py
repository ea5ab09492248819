"""NVE physics of the MD driver (float64): energy conservation, O(dt²) error, jitted chunks vs a
Python loop, and neighbour rebuilds that leave the trajectory unchanged.

All tests share one potential, one 24-atom periodic box and three compiled programs (`nve`
fixture): the jitted chunk of the driver (1.4 Å skin), one jitted jax-md ``apply_fn`` step taking
``dt`` as an argument (every time step reuses it; with dt = 0 it also gives the initial forces,
so jax-md's ``init_fn`` need not be compiled) and the chunk with a 0.05 Å skin.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import cheap_potential, fast_compiles, random_box
from jax_md.simulate import NVEState

import jnnp
from jnnp.descriptors.plan import make_plan
from jnnp.geometry.pairs import all_image_pairs
from jnnp.md import analysis
from jnnp.md.host_graph import make_host_graph_fns
from jnnp.md.integrate import Ensemble, kinetic_energy, make_integrator, make_md_energy_fn, masses_of
from jnnp.md.run import make_chunk_fn, run_chunks
from jnnp.units import KB, fs_to_internal

T_INIT = 100.0  # K
DT_FS = 0.5
THERMO_EVERY = 5
SAMPLES_PER_CHUNK = 10
N_SAMPLES = 40  # 200 steps = 100 fs
SKIN = 1.4  # Å: lasts the whole run (no atom moves skin/2 = 0.7 Å; asserted)
TINY_SKIN = 0.05  # Å: rebuilds every few steps


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


class NVE:
    """Everything the tests share (built once per module)."""

    def __init__(self):
        self.pot = cheap_potential()
        self.box = random_box()
        self.n = self.box.n_atoms
        self.plan = make_plan(self.pot.spec.descriptor)
        self.cell = jnp.asarray(self.box.cell)
        self.R0 = jnp.asarray(self.box.positions)
        self.ens = Ensemble("nve", DT_FS, T_INIT)
        self.energy_fn = make_md_energy_fn(self.pot)
        _, self.apply_fn = make_integrator(self.energy_fn, self.ens)
        self.fns = self.graph_fns(SKIN)
        self.gstate0 = self.fns.allocate(self.R0)
        self.chunk = make_chunk_fn(self.energy_fn, self.apply_fn, self.fns.update, self.cell,
                                   THERMO_EVERY, SAMPLES_PER_CHUNK)
        apply_fn, energy_fn, cell = self.apply_fn, self.energy_fn, self.cell

        @jax.jit
        def step(state, graph, dt, drop):
            """One jax-md ``apply_fn`` step with a traced dt, then E_tot. ``drop`` (N, 1) ∈ {0, 1}
            takes the new force off the marked atoms' momenta (a broken dynamics on purpose;
            an exact no-op for drop = 0)."""
            state = apply_fn(state, dt=dt, graph=graph, cell=cell)
            state = state.set(momentum=state.momentum - dt * drop * state.force)
            return state, energy_fn(state.position, graph=graph, cell=cell) + kinetic_energy(state)

        self.step = step
        self.no_drop = jnp.zeros((self.n, 1))
        # Maxwell–Boltzmann momenta at T_INIT with zero total momentum (as jax-md's init_fn).
        mass = masses_of(self.box.numbers)[:, None]
        p = np.random.default_rng(7).normal(size=(self.n, 3)) * np.sqrt(np.asarray(mass) * KB * T_INIT)
        state = NVEState(self.R0, jnp.asarray(p - p.mean(0)), jnp.zeros_like(self.R0), mass)
        self.state0, _ = step(state, self.gstate0.graph, 0.0, self.no_drop)  # dt = 0: only sets F
        self._reference = None

    def graph_fns(self, skin):
        return make_host_graph_fns(self.plan, self.box.numbers, self.box.cell, self.box.pbc, skin=skin)

    @property
    def reference(self):
        """The driver's run of N_SAMPLES × THERMO_EVERY steps with the 1.4 Å skin (cached)."""
        if self._reference is None:
            self._reference = run_chunks(self.chunk, self.state0, self.gstate0, self.fns, N_SAMPLES,
                                         THERMO_EVERY, DT_FS)
        return self._reference

    def loop(self, state, n_steps, dt_fs, every=1, drop=None):
        """Python loop over the jitted step with the 1.4 Å-skin graph from `state0`-like
        ``state``; returns the final state and (t_fs, E_tot) every ``every`` steps (t = 0
        included)."""
        dt = fs_to_internal(dt_fs)
        drop = self.no_drop if drop is None else drop
        _, e0 = self.step(state, self.gstate0.graph, 0.0, self.no_drop)
        e_tot = [e0]
        for k in range(1, n_steps + 1):
            state, e = self.step(state, self.gstate0.graph, dt, drop)
            if k % every == 0:
                e_tot.append(e)
        return state, dt_fs * every * np.arange(len(e_tot)), np.asarray(jnp.stack(e_tot))


@pytest.fixture(scope="module")
def nve():
    return NVE()


# ----------------------------------------------------------------------------------------------
# 1. energy conservation


# Thresholds for the 100 fs run at 0.5 fs: ≈ 8× what it gives (|slope| 2.7e-8 eV/atom/ps, max
# |E − E(0)| 2.3e-9 eV/atom; float64, smooth potential, heavy atoms, so velocity Verlet's O(dt²)
# error is tiny — see the dt² test). Broken dynamics fails them
# (`test_drift_thresholds_catch_broken_dynamics`): one atom moving without its force (a wrong
# force term, F ≠ −∇E) drifts by 1e-4 eV/atom/ps (500×), and an 8× too large step (4 fs) gives
# 1.7e-6 eV/atom/ps and 1.5e-7 eV/atom (≈ 8× each, as the error grows as dt²).
MAX_SLOPE = 2e-7  # eV/atom/ps
MAX_DEV = 2e-8  # eV/atom


def _drift_ok(drift):
    return (abs(drift["slope_eV_per_atom_per_ps"]) < MAX_SLOPE
            and drift["max_abs_dev_eV_per_atom"] < MAX_DEV)


def test_nve_energy_drift_small(nve):
    run = nve.reference
    assert run.rebuilds == 0, "the 1.4 Å skin should last the whole run (no re-compilation)"
    assert len(run.e_pot) == N_SAMPLES
    np.testing.assert_array_equal(run.steps, THERMO_EVERY * np.arange(1, N_SAMPLES + 1))
    e_tot = run.e_pot + run.e_kin
    drift = analysis.energy_drift(run.time_fs, e_tot, nve.n)
    assert _drift_ok(drift), drift
    # The dynamics is not trivial: kinetic and potential energy do exchange.
    assert np.ptp(run.e_kin) > 1e3 * np.ptp(e_tot)
    assert np.all(np.isfinite(run.positions))


def test_drift_thresholds_catch_broken_dynamics(nve):
    """The thresholds above are not vacuous: the same run with the force on atom 0 switched
    off (a wrong force term: F ≠ −∇E) fails them, and so does dt = 4 fs."""
    dt = fs_to_internal(DT_FS)
    drop = jnp.zeros((nve.n, 1)).at[0].set(1.0)  # undo both half kicks of atom 0 with its force
    state = nve.state0.set(momentum=nve.state0.momentum - 0.5 * dt * drop * nve.state0.force)
    _, t, e = nve.loop(state, N_SAMPLES * THERMO_EVERY, DT_FS, every=THERMO_EVERY, drop=drop)
    broken = analysis.energy_drift(t, e, nve.n)
    _, t, e = nve.loop(nve.state0, N_SAMPLES * THERMO_EVERY // 8, 8 * DT_FS)
    large_dt = analysis.energy_drift(t, e, nve.n)
    assert not _drift_ok(broken), broken
    assert not _drift_ok(large_dt), large_dt


def test_energy_error_scales_as_dt_squared(nve):
    """Same initial state, same 40 fs, dt = 1, 0.5, 0.25 fs: max|E_tot − E_tot(0)| ∝ dt²."""
    span_fs, dts = 40.0, (1.0, 0.5, 0.25)
    errors = []
    times = None
    for dt in dts:
        n_steps = round(span_fs / dt)
        _, t, e = nve.loop(nve.state0, n_steps, dt, every=round(dts[0] / dt))
        times = t if times is None else times
        np.testing.assert_allclose(t, times)  # compared at the same physical times
        errors.append(np.max(np.abs(e - e[0])))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert 1.7 <= slope <= 2.3, (errors, slope)
    assert errors[-1] > 1e4 * 1e-15 * abs(e[0]), "errors must be far above round-off"


# ----------------------------------------------------------------------------------------------
# 2. jitted scan == Python loop


def test_chunk_equals_python_loop(nve):
    """One driver chunk (lax.scan of fori_loops, neighbour check each step) == the jax-md step
    called THERMO_EVERY × SAMPLES_PER_CHUNK times from Python with the same graph."""
    state, gstate, out = nve.chunk(nve.state0, nve.gstate0)
    ok, e_pot, e_kin, pos, mom = (np.asarray(out[k]) for k in ("ok", "e_pot", "e_kin", "positions", "momenta"))
    assert ok.all() and not bool(gstate.overflow)
    s, g = nve.state0, nve.gstate0
    dt = nve.ens.dt
    for k in range(1, THERMO_EVERY * SAMPLES_PER_CHUNK + 1):
        g = nve.fns.update(s.position, g)
        s, e = nve.step(s, g.graph, dt, nve.no_drop)
        if k % THERMO_EVERY == 0:
            i = k // THERMO_EVERY - 1
            np.testing.assert_allclose(pos[i], s.position, rtol=0, atol=1e-12)
            np.testing.assert_allclose(mom[i], s.momentum, rtol=0, atol=1e-12)
            np.testing.assert_allclose(e_pot[i] + e_kin[i], e, rtol=0, atol=1e-12)
    assert not bool(g.overflow)
    # and the driver's E_pot is the potential's energy (independent evaluation, fresh graph)
    last = jnnp.Structure(positions=pos[-1], numbers=nve.box.numbers, cell=nve.box.cell, pbc=True)
    assert e_pot[-1] == pytest.approx(float(jnnp.compute(nve.pot, last)["energy"]), rel=0, abs=1e-10)
    np.testing.assert_allclose(state.position, s.position, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.momentum, s.momentum, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.force, s.force, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 3. neighbour overflow → rollback + rebuild, trajectory unchanged


def test_rebuilds_do_not_change_the_trajectory(nve):
    """A 0.05 Å skin overflows every few steps; the driver discards the invalid rest of each
    chunk, rebuilds at the last valid state and re-runs — the trajectory equals the 1.4 Å-skin run
    that never rebuilds."""
    n_steps = 100
    ref = nve.reference
    fns = nve.graph_fns(TINY_SKIN)
    for R in ref.positions[: n_steps // THERMO_EVERY]:  # capacities for the whole run up front, so
        fns.allocate(R)  # that rebuilds keep the shapes (re-compilations only cost time)
    gstate = fns.allocate(nve.R0)
    chunk = make_chunk_fn(nve.energy_fn, nve.apply_fn, fns.update, nve.cell, 1, SAMPLES_PER_CHUNK)
    run = run_chunks(chunk, nve.state0, gstate, fns, n_steps, 1, DT_FS)
    assert ref.rebuilds == 0
    assert run.rebuilds >= 5, run.rebuilds
    np.testing.assert_array_equal(run.steps, np.arange(1, n_steps + 1))
    k = ref.steps[ref.steps <= n_steps]
    np.testing.assert_allclose(run.positions[k - 1], ref.positions[: len(k)], rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.momenta[k - 1], ref.momenta[: len(k)], rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.e_pot[k - 1], ref.e_pot[: len(k)], rtol=0, atol=1e-10)


def test_run_chunks_final_state_is_at_the_last_step(nve):
    n_samples = 3  # < SAMPLES_PER_CHUNK
    run = run_chunks(nve.chunk, nve.state0, nve.gstate0, nve.fns, n_samples, THERMO_EVERY, DT_FS)
    assert len(run.positions) == n_samples and run.steps[-1] == n_samples * THERMO_EVERY
    np.testing.assert_allclose(run.state.position, run.positions[-1], rtol=0, atol=1e-12)


def test_accepted_samples_never_use_an_invalid_graph(nve):
    """Two atoms approach so fast that the graph (r_c + 1.4 Å) is still valid after 4 steps of
    the first 5-step block (each moved 0.69 Å < skin/2) but not after the 5th (0.86 Å each; their
    distance falls from > r_c + skin to < r_c, and they are not in the graph)."""
    dt = fs_to_internal(DT_FS)
    R0 = np.asarray(nve.R0)
    pl = all_image_pairs(R0, nve.box.cell, True, 5.7)
    half_skin, rc = SKIN / 2, nve.pot.spec.cutoff
    step_len = 0.99 * half_skin / (THERMO_EVERY - 1)  # per atom and step
    far = (pl.distances > rc + SKIN + 0.01) & (pl.distances < rc + 2 * THERMO_EVERY * step_len - 0.2)
    far &= pl.centers != pl.neighbors
    assert far.any()
    k = np.flatnonzero(far)[0]
    i, j, u = pl.centers[k], pl.neighbors[k], pl.vectors[k] / pl.distances[k]
    mass = np.asarray(nve.state0.mass)
    p = np.zeros_like(R0)
    p[i], p[j] = mass[i] * step_len / dt * u, -mass[j] * step_len / dt * u
    state = nve.state0.set(momentum=jnp.asarray(p))
    state, gstate, out = nve.chunk(state, nve.gstate0)
    ok, e_pot, pos = (np.asarray(out[k]) for k in ("ok", "e_pot", "positions"))
    assert not ok.all()
    for n in np.flatnonzero(ok):  # every accepted sample has the exact energy of its positions
        s = jnnp.Structure(positions=pos[n], numbers=nve.box.numbers, cell=nve.box.cell, pbc=True)
        assert e_pot[n] == pytest.approx(float(jnnp.compute(nve.pot, s)["energy"]), abs=1e-9)
    assert not bool(nve.fns.update(state.position, gstate).overflow)
