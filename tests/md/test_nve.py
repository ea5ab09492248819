"""NVE physics of the MD driver (float64): energy conservation, O(dt²) error, jitted chunks vs a
Python loop, and neighbour rebuilds that leave the trajectory unchanged.

All tests share one potential, one 24-atom periodic box and a handful of compiled programs
(`nve` fixture): the jax-md ``init_fn``, the jitted chunk of the driver (1 Å skin), one jitted
``apply_fn`` step taking ``dt`` as an argument (so every time step reuses it) and the chunk with
a 0.05 Å skin.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import cheap_potential, random_box

from jnnp.descriptors.plan import make_plan
from jnnp.md import analysis
from jnnp.md.host_graph import make_host_graph_fns
from jnnp.md.integrate import Ensemble, kinetic_energy, make_integrator, make_md_energy_fn, masses_of
from jnnp.md.run import init_state, make_chunk_fn, run_chunks
from jnnp.units import fs_to_internal

T_INIT = 100.0  # K
DT_FS = 0.5
THERMO_EVERY = 5
SAMPLES_PER_CHUNK = 10
N_SAMPLES = 60  # 300 steps = 150 fs
SKIN = 1.0  # Å: lasts the whole run (asserted)
TINY_SKIN = 0.05  # Å: rebuilds every few steps


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
        self.init_fn, self.apply_fn = make_integrator(self.energy_fn, self.ens)
        self.fns = self.graph_fns(SKIN)
        self.gstate0 = self.fns.allocate(self.R0)
        self.state0 = init_state(self.init_fn, self.R0, masses_of(self.box.numbers), self.ens,
                                 jax.random.PRNGKey(7), self.gstate0.graph, self.cell)
        self.chunk = make_chunk_fn(self.energy_fn, self.apply_fn, self.fns.update, self.cell,
                                   THERMO_EVERY, SAMPLES_PER_CHUNK)
        apply_fn, energy_fn, cell = self.apply_fn, self.energy_fn, self.cell

        @jax.jit
        def step(state, graph, dt):
            """One jax-md ``apply_fn`` step with a traced dt, and E_pot after it."""
            state = apply_fn(state, dt=dt, graph=graph, cell=cell)
            return state, energy_fn(state.position, graph=graph, cell=cell)

        self.step = step
        self._reference = None

    def graph_fns(self, skin):
        return make_host_graph_fns(self.plan, self.box.numbers, self.box.cell, self.box.pbc, skin=skin)

    @property
    def reference(self):
        """The driver's run of N_SAMPLES × THERMO_EVERY steps with the 1 Å skin (cached)."""
        if self._reference is None:
            self._reference = run_chunks(self.chunk, self.state0, self.gstate0, self.fns, N_SAMPLES,
                                         THERMO_EVERY, DT_FS)
        return self._reference

    def loop(self, state, n_steps, dt_fs, every=1, kick=None):
        """Python loop over the jitted step with the 1 Å-skin graph; returns the final state and
        (t_fs, E_tot) every ``every`` steps (t = 0 included). ``kick(state) -> state`` is applied
        after each step (to break the dynamics on purpose)."""
        dt = fs_to_internal(dt_fs)
        e0 = float(self.energy_fn(state.position, graph=self.gstate0.graph, cell=self.cell))
        times, e_tot = [0.0], [e0 + float(kinetic_energy(state))]
        for k in range(1, n_steps + 1):
            state, e_pot = self.step(state, self.gstate0.graph, dt)
            if kick is not None:
                state = kick(state)
            if k % every == 0:
                times.append(k * dt_fs)
                e_tot.append(float(e_pot) + float(kinetic_energy(state)))
        return state, np.asarray(times), np.asarray(e_tot)


@pytest.fixture(scope="module")
def nve():
    return NVE()


# ----------------------------------------------------------------------------------------------
# 1. energy conservation


# Thresholds for a 150 fs run at 0.5 fs (observed: |slope| ~ 1e-6, max dev ~ 1e-7 eV/atom). A
# force that is not −∇E breaks them by orders of magnitude: dropping the force on a single atom
# (`test_drift_thresholds_catch_broken_dynamics`) gives a slope of ~1e-3 eV/atom/ps, and so
# does a time step too large for the heavy atoms (which scales the fluctuation by (dt/0.5 fs)²).
MAX_SLOPE = 2e-5  # eV/atom/ps
MAX_DEV = 2e-6  # eV/atom


def _drift_ok(drift):
    return (abs(drift["slope_eV_per_atom_per_ps"]) < MAX_SLOPE
            and drift["max_abs_dev_eV_per_atom"] < MAX_DEV)


def test_nve_energy_drift_small(nve):
    run = nve.reference
    assert run.rebuilds == 0, "the 1 Å skin should last the whole run (no re-compilation)"
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
    off (a wrong force term: F ≠ −∇E) fails them."""
    dt = fs_to_internal(DT_FS)

    def drop_force_on_atom0(state):  # undo both half kicks of atom 0 with the new force
        return state.set(momentum=state.momentum.at[0].add(-dt * state.force[0]))

    state = nve.state0.set(momentum=nve.state0.momentum.at[0].add(-0.5 * dt * nve.state0.force[0]))
    _, t, e = nve.loop(state, N_SAMPLES * THERMO_EVERY, DT_FS, every=THERMO_EVERY, kick=drop_force_on_atom0)
    assert not _drift_ok(analysis.energy_drift(t, e, nve.n))
    # ... while the unbroken loop passes them.
    _, t, e = nve.loop(nve.state0, N_SAMPLES * THERMO_EVERY, DT_FS, every=THERMO_EVERY)
    assert _drift_ok(analysis.energy_drift(t, e, nve.n))


def test_energy_error_scales_as_dt_squared(nve):
    """Same initial state, same 40 fs, dt = 1, 0.5, 0.25 fs: max|E_tot − E_tot(0)| ∝ dt²."""
    span_fs, dts = 40.0, (1.0, 0.5, 0.25)
    errors = []
    times = None
    for dt in dts:
        n_steps = int(round(span_fs / dt))
        _, t, e = nve.loop(nve.state0, n_steps, dt, every=int(round(dts[0] / dt)))
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
    ok, e_pot, e_kin, temp, pos, mom = (np.asarray(x) for x in out)
    assert ok.all() and not bool(gstate.overflow)
    s, g = nve.state0, nve.gstate0
    dt = nve.ens.dt
    for k in range(1, THERMO_EVERY * SAMPLES_PER_CHUNK + 1):
        g = nve.fns.update(s.position, g)
        s, e = nve.step(s, g.graph, dt)
        if k % THERMO_EVERY == 0:
            i = k // THERMO_EVERY - 1
            np.testing.assert_allclose(pos[i], s.position, rtol=0, atol=1e-12)
            np.testing.assert_allclose(mom[i], s.momentum, rtol=0, atol=1e-12)
            np.testing.assert_allclose(e_pot[i], e, rtol=0, atol=1e-12)
            np.testing.assert_allclose(e_kin[i], kinetic_energy(s), rtol=0, atol=1e-12)
    assert not bool(g.overflow)
    np.testing.assert_allclose(state.position, s.position, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.momentum, s.momentum, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state.force, s.force, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 3. neighbour overflow → rollback + rebuild, trajectory unchanged


def test_rebuilds_do_not_change_the_trajectory(nve):
    """A 0.05 Å skin overflows every few steps; the driver discards the invalid rest of each
    chunk, rebuilds at the last valid state and re-runs — the trajectory equals the 1 Å-skin run
    that never rebuilds."""
    n_steps = 100
    fns = nve.graph_fns(TINY_SKIN)
    gstate = fns.allocate(nve.R0)
    chunk = make_chunk_fn(nve.energy_fn, nve.apply_fn, fns.update, nve.cell, 1, SAMPLES_PER_CHUNK)
    run = run_chunks(chunk, nve.state0, gstate, fns, n_steps, 1, DT_FS)
    ref = nve.reference
    assert ref.rebuilds == 0
    assert run.rebuilds >= 5, run.rebuilds
    np.testing.assert_array_equal(run.steps, np.arange(1, n_steps + 1))
    k = ref.steps[ref.steps <= n_steps]
    np.testing.assert_allclose(run.positions[k - 1], ref.positions[: len(k)], rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.momenta[k - 1], ref.momenta[: len(k)], rtol=0, atol=1e-10)
    np.testing.assert_allclose(run.e_pot[k - 1], ref.e_pot[: len(k)], rtol=0, atol=1e-10)
    # the final graph is a fresh one: valid for the final positions
    assert not bool(fns.update(run.state.position, run.graph_state).overflow)
