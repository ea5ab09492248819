"""NPT (jax-md's Nosé–Hoover barostat) in the MD driver, and neighbour graphs that follow the cell.

* `graph_invalid`, the rebuild criterion for a strained cell, is a safe bound (property test with
  random strains and displacements on the all-image pair lists).
* the jit neighbour graph updated with a changing cell gives the energies of freshly built
  graphs (compressions that rebuild, and small strains that keep the graph).
* `run_md` NPT on the 24-atom test box: jax-md's NPT invariant is conserved, a target pressure
  above the box's own compresses it, the thermo P column is the virial pressure of the frames
  (stress from `jnnp.compute`), frames carry their cell, and a resumed run continues exactly.
"""

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import RC, cheap_potential, fast_compiles, random_box

import jnnp
from jnnp.config.schema import MDConfig
from jnnp.descriptors.plan import make_plan
from jnnp.geometry.graph import build_graph, pad_graph
from jnnp.geometry.neighbors import graph_invalid, make_graph_fns
from jnnp.geometry.pairs import all_image_pairs
from jnnp.md.integrate import masses_of
from jnnp.md.output import read_thermo
from jnnp.md.simulate import run_md
from jnnp.model.potential import make_energy_fn
from jnnp.units import EV_PER_A3_GPA, TIME_UNIT_FS, bar_to_internal


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


def doubled_box():
    """The test box repeated 2×2×2: 192 atoms, 13.2 Å, wide enough for the jit graph."""
    b = random_box()
    shifts = np.array([(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ b.cell
    return jnnp.Structure(positions=(b.positions[None] + shifts[:, None]).reshape(-1, 3),
                          numbers=np.tile(b.numbers, 8), cell=2 * b.cell, pbc=True)


def _pair_keys(R, cell, cutoff):
    pl = all_image_pairs(np.asarray(R), np.asarray(cell), True, cutoff)
    return set(zip(pl.centers.tolist(), pl.neighbors.tolist(), map(tuple, pl.shifts.tolist())))


def test_graph_invalid_is_a_safe_bound():
    """Whenever `graph_invalid` accepts a strained, displaced configuration, every pair within
    r_c there was in the r_c + skin list of the reference; and it does accept small changes and
    reject large ones (so the bound is neither vacuous nor always tripping)."""
    box, skin = random_box(), 0.6
    R0, cell0 = box.positions, box.cell
    reference = _pair_keys(R0, cell0, RC + skin)
    rng = np.random.default_rng(5)
    accepted = rejected = 0
    for _ in range(80):
        A = rng.uniform(0.94, 1.06) * np.eye(3) + rng.normal(scale=0.01, size=(3, 3))
        d = rng.normal(size=R0.shape)
        d *= rng.uniform(0.0, 0.4) / np.linalg.norm(d, axis=1).max()
        R, cell = R0 @ A + d, cell0 @ A
        if bool(graph_invalid(jnp.asarray(R), jnp.asarray(cell), jnp.asarray(R0), jnp.asarray(cell0), skin, RC)):
            rejected += 1
            continue
        accepted += 1
        missing = _pair_keys(R, cell, RC) - reference
        assert not missing, (A, sorted(missing)[:3])
    assert accepted >= 10 and rejected >= 10, (accepted, rejected)
    # no strain: exactly "no atom moved more than skin/2"
    R = R0.copy()
    R[3] += [0.29, 0.0, 0.0]
    assert not bool(graph_invalid(jnp.asarray(R), jnp.asarray(cell0), jnp.asarray(R0), jnp.asarray(cell0), skin, RC))
    R[3] += [0.02, 0.0, 0.0]
    assert bool(graph_invalid(jnp.asarray(R), jnp.asarray(cell0), jnp.asarray(R0), jnp.asarray(cell0), skin, RC))


@pytest.mark.slow
def test_jit_graph_follows_the_cell():
    """The 2×2×2 test box (192 atoms, 13.2 Å) with the jit graph, updated in strained cells with
    every atom displaced by d: small strains keep the graph (the criterion is not tripped by
    the box change itself), 0.90 overflows the buffers (37 % denser; reallocated in that cell),
    a large d rebuilds it inside jit. Each time the energy from the graph equals that from a
    host graph built in the same cell."""
    pot = cheap_potential()
    big = doubled_box()
    plan = make_plan(pot.spec.descriptor)
    fns = make_graph_fns(plan, big.cell, skin=0.5)
    state = fns.allocate(big.positions, big.numbers)
    update = jax.jit(fns.update)
    energy = jax.jit(make_energy_fn(pot.spec))
    rng = np.random.default_rng(1)
    seen = []
    for scale, d in ((0.995, 0.05), (0.95, 0.05), (0.90, 0.05), (0.88, 0.05), (0.88, 0.3)):
        cell = big.cell * scale
        u = rng.normal(size=big.positions.shape)
        R = big.positions * scale + d * u / np.linalg.norm(u, axis=1, keepdims=True)
        new = update(jnp.asarray(R), state, cell=jnp.asarray(cell))
        if bool(new.overflow):
            new = fns.reallocate(R, state, cell=cell)
            assert not bool(new.overflow)
            seen.append("reallocated")
        else:
            same = np.array_equal(np.asarray(new.reference), np.asarray(state.reference))
            seen.append("kept" if same else "rebuilt")
        state = new
        e_jit = float(energy(pot.params, jnp.asarray(R), jnp.asarray(cell), state.graph))
        host = pad_graph(build_graph(plan, R, big.numbers, cell, True, chunk=state.graph.chunk),
                         state.graph.sizes(), plan)
        e_host = float(energy(pot.params, jnp.asarray(R), jnp.asarray(cell), host))
        assert e_jit == pytest.approx(e_host, rel=0, abs=1e-10), (scale, d)
    assert seen == ["kept", "kept", "reallocated", "kept", "rebuilt"], seen


# ----------------------------------------------------------------------------------------------
# run_md NPT on the 24-atom box (radial-only potential: driver machinery, fast compiles)

N = 50  # steps of the first part of the resume test; the straight run has 2N
TARGET_BAR = 15000.0  # the box's own pressure is ≈ 0.9 GPa = 9000 bar at 150 K


def _npt_cfg(steps):
    return MDConfig(ensemble="npt_nose_hoover", timestep_fs=1.0, steps=steps, temperature_k=150.0,
                    pressure_bar=TARGET_BAR, barostat_tau_fs=50.0, tau_fs=20.0, thermo_every=5,
                    trajectory_every=5, samples_per_chunk=10, skin=1.0, neighbors="host", seed=3)


@pytest.fixture(scope="module")
def npt_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("npt") / "straight"
    summary = run_md(cheap_potential(angular=False), random_box(), _npt_cfg(2 * N), run_dir, progress=False)
    return run_dir, summary


def test_npt_conserves_its_invariant_and_compresses(npt_run):
    """Over 100 fs the barostat shrinks the box towards the target pressure while jax-md's NPT
    invariant H = E_pot + E_kin + P_target·V + barostat/thermostat terms stays constant.

    Tolerance: max |H − H(0)| < 1e-3 × the range of E_pot + E_kin (the energy exchanged with
    the barostat and thermostat). Measured: ≈ 2e-4 of it (|ΔH| ≈ 5e-6 eV/atom at 1 fs; the
    splitting error is O(dt²) like velocity Verlet's, see test_nve). Dropping the P·V term,
    i.e. a barostat that did not do work P·dV, breaks it by > 100× (asserted below).
    """
    run_dir, summary = npt_run
    d = read_thermo(run_dir / "thermo.csv")
    n = random_box().n_atoms
    H, E = d["e_conserved_eV"], d["e_tot_eV"]
    exchanged = np.ptp(E)
    assert np.max(np.abs(H - H[0])) < 1e-3 * exchanged, (np.max(np.abs(H - H[0])) / n, exchanged / n)
    pv = bar_to_internal(TARGET_BAR) * d["volume_A3"]
    assert np.max(np.abs((H - pv) - (H[0] - pv[0]))) > 100 * 1e-3 * exchanged
    # the volume responds: compressed by > 10 % towards the target, pressure rising towards it
    v0 = np.linalg.det(random_box().cell)
    assert d["volume_A3"][-1] < 0.9 * v0, d["volume_A3"]
    assert d["pressure_GPa"][-10:].mean() > d["pressure_GPa"][:3].mean()
    assert summary["ensemble"] == "npt_nose_hoover" and summary["steps"] == 2 * N
    assert abs(summary["conserved_drift"]["max_abs_dev_eV_per_atom"]) < 1e-3 * exchanged / n


def test_npt_thermo_pressure_and_frames(npt_run):
    """Frames carry the changing cell; the thermo P of the last frame is its virial pressure
    2K/(3V) − tr(σ)/3 with σ from `jnnp.compute` (independent graph, stress by strain derivative)."""
    run_dir, _ = npt_run
    d = read_thermo(run_dir / "thermo.csv")
    frames = ase.io.read(run_dir / "trajectory.extxyz", index=":")
    assert len(frames) == len(d["step"])
    volumes = np.array([a.get_volume() for a in frames])
    np.testing.assert_allclose(volumes, d["volume_A3"], rtol=1e-12)
    last = frames[-1]
    s = jnnp.Structure(positions=last.positions, numbers=last.numbers, cell=np.asarray(last.cell), pbc=True)
    out = jnnp.compute(cheap_potential(angular=False), s)
    assert out["energy"] == pytest.approx(d["e_pot_eV"][-1], abs=1e-10)
    v = last.arrays["velocities"] * TIME_UNIT_FS  # Å/fs -> Å per internal time unit
    kinetic = 0.5 * np.sum(np.asarray(masses_of(last.numbers))[:, None] * v**2)
    pressure = 2 * kinetic / (3 * last.get_volume()) - np.trace(out["stress"]) / 3
    assert d["pressure_GPa"][-1] == pytest.approx(pressure * EV_PER_A3_GPA, rel=1e-9)


@pytest.mark.slow
def test_npt_resume_equals_straight_run(npt_run, tmp_path):
    """N steps, then resume to 2N: the box (reference box, box position and momentum, barostat
    chain) comes back from restart.npz, so thermo and trajectory equal the straight run's."""
    ref_dir, _ = npt_run
    pot, box = cheap_potential(angular=False), random_box()
    run_md(pot, box, _npt_cfg(N), tmp_path, progress=False)
    run_md(pot, box, _npt_cfg(2 * N), tmp_path, resume=True, progress=False)
    assert (tmp_path / "thermo.csv").read_text() == (ref_dir / "thermo.csv").read_text()
    assert (tmp_path / "trajectory.extxyz").read_text() == (ref_dir / "trajectory.extxyz").read_text()
