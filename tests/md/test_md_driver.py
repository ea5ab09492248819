"""The high-level MD driver `run_md` (files, restart, resume, observables) and the NVT thermostats.

These tests exercise driver machinery, not descriptors, and every `run_md` call compiles its
own programs (jax-md ``init_fn`` and the chunk), so they use the radial-only variant of the
shared test potential (same 24-atom box), which compiles ≈ 5× faster than the angular one.
"""

import json

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import CU, SI, cheap_potential, fast_compiles, random_box

from jnnp.config.schema import MDConfig
from jnnp.descriptors.plan import make_plan
from jnnp.md.host_graph import make_host_graph_fns
from jnnp.md.integrate import Ensemble, make_integrator, make_md_energy_fn, masses_of
from jnnp.md.output import read_thermo
from jnnp.md.run import make_chunk_fn, run_chunks
from jnnp.md.simulate import run_md
from jnnp.units import KB

N = 20  # steps of the first part; a chunk is THERMO_EVERY × SAMPLES_PER_CHUNK = 10 steps
THERMO_EVERY = 2
SAMPLES_PER_CHUNK = 5


def _cfg(steps, **kw):
    base = {"ensemble": "nve", "timestep_fs": 1.0, "steps": steps, "temperature_k": 150.0,
            "thermo_every": THERMO_EVERY, "trajectory_every": THERMO_EVERY,
            "samples_per_chunk": SAMPLES_PER_CHUNK, "skin": 1.0, "neighbors": "host", "seed": 3}
    return MDConfig(**{**base, **kw})


def _observables():
    """Centre-of-mass x [Å], atom 0's fractional x (positions and cell) and the graph's valid
    pair count (graph): every argument of the hook is used."""
    m = masses_of(random_box().numbers)
    return {"com_x_A": lambda R, cell, graph: jnp.sum(m * R[:, 0]) / jnp.sum(m),
            "x0_frac": lambda R, cell, graph: jnp.linalg.solve(cell.T, R[0])[0],
            "graph_pairs_count": lambda R, cell, graph: sum(jnp.sum(b[2]) for b in graph.pair_blocks)}


def _restart_leaves(run_dir):
    with np.load(run_dir / "restart.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


@pytest.fixture(scope="module")
def potential():
    return cheap_potential(angular=False)


@pytest.fixture(scope="module")
def continuous(potential, tmp_path_factory):
    """A straight run of 2N steps: (run_dir, summary)."""
    run_dir = tmp_path_factory.mktemp("md") / "continuous"
    cfg = _cfg(2 * N, rdf_pairs=[(SI, CU)])
    return run_dir, run_md(potential, random_box(), cfg, run_dir, progress=False, observables=_observables())


def test_run_md_writes_all_outputs(continuous):
    run_dir, summary = continuous
    for name in ("thermo.csv", "trajectory.extxyz", "restart.npz", "summary.json", "thermo.png",
                 f"rdf_{SI}_{CU}.csv", f"rdf_{SI}_{CU}.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["steps"] == summary["steps"] and on_disk["energy_drift"] == summary["energy_drift"]
    assert summary["steps"] == 2 * N and summary["n_atoms"] == 24 and summary["neighbors"] == "host"
    assert summary["rebuilds"] == 0
    assert summary["ns_per_day"] > 0 and summary["atom_steps_per_s"] > 0
    # NVE at 1 fs with heavy atoms: E_tot conserved to ≪ 1e-6 eV/atom (see test_nve.py).
    assert abs(summary["energy_drift"]["max_abs_dev_eV_per_atom"]) < 1e-6

    thermo = read_thermo(run_dir / "thermo.csv")
    steps = THERMO_EVERY * np.arange(1, 2 * N // THERMO_EVERY + 1)
    np.testing.assert_array_equal(thermo["step"], steps)
    np.testing.assert_allclose(thermo["time_fs"], steps * 1.0)
    np.testing.assert_allclose(thermo["e_tot_eV"], thermo["e_pot_eV"] + thermo["e_kin_eV"], rtol=1e-14)
    np.testing.assert_allclose(thermo["temperature_K"], 2 * thermo["e_kin_eV"] / (69 * KB), rtol=1e-12)
    assert 50 < thermo["temperature_K"].mean() < 400
    assert summary["temperature_mean_K"] == pytest.approx(thermo["temperature_K"].mean(), rel=1e-12)

    frames = ase.io.read(run_dir / "trajectory.extxyz", index=":")
    assert len(frames) == len(steps)
    assert [a.info["step"] for a in frames] == list(steps)
    np.testing.assert_array_equal(frames[0].numbers, random_box().numbers)
    np.testing.assert_allclose(frames[0].cell[:], random_box().cell)
    restart = _restart_leaves(run_dir)
    assert int(restart["step"]) == 2 * N
    np.testing.assert_array_equal(restart["state_0000"], frames[-1].positions)  # state.position


def test_observables_are_logged(continuous):
    """Observables evaluated in the jitted chunk land in thermo.csv under their names, equal to
    the same quantities from the trajectory frames."""
    run_dir, _ = continuous
    thermo = read_thermo(run_dir / "thermo.csv")
    header = (run_dir / "thermo.csv").read_text().split("\n", 1)[0].split(",")
    assert header[-3:] == ["com_x_A", "x0_frac", "graph_pairs_count"]
    frames = ase.io.read(run_dir / "trajectory.extxyz", index=":")
    m = frames[0].get_masses()
    com = np.array([np.sum(m * a.positions[:, 0]) / m.sum() for a in frames])
    np.testing.assert_allclose(thermo["com_x_A"], com, rtol=0, atol=1e-12)
    x0 = np.array([a.positions[0, 0] for a in frames]) / random_box().cell[0, 0]
    np.testing.assert_allclose(thermo["x0_frac"], x0, rtol=0, atol=1e-12)
    assert np.ptp(x0) > 1e-3  # it moves (the centre of mass does not: zero total momentum)
    assert np.all(thermo["graph_pairs_count"] > 20 * 24)  # ≈ 20 neighbours per atom within r_c + skin


def test_bad_observables_are_rejected(potential, tmp_path):
    box = random_box()
    with pytest.raises(ValueError, match="put the unit in the name"):
        run_md(potential, box, _cfg(N), tmp_path, progress=False, observables={"com x [A]": lambda *a: 0.0})
    with pytest.raises(ValueError, match="clash"):
        make_chunk_fn(None, None, None, None, 1, 1, observables={"e_pot": lambda *a: 0.0})
    with pytest.raises(ValueError, match="must return a scalar"):
        run_md(potential, box, _cfg(N), tmp_path, progress=False, observables={"pos_A": lambda R, c, g: R[0]})


def test_resume_equals_continuous_run(potential, continuous, tmp_path):
    """N steps, then resume to 2N == 2N steps straight: final state, thermo rows and frames."""
    ref_dir, _ = continuous
    run_dir = tmp_path / "resumed"
    box = random_box()
    first = run_md(potential, box, _cfg(N), run_dir, progress=False, observables=_observables())
    assert first["steps"] == N and int(_restart_leaves(run_dir)["step"]) == N
    second = run_md(potential, box, _cfg(2 * N), run_dir, resume=True, progress=False,
                    observables=_observables())
    assert second["steps"] == N  # only the new steps

    ref, got = _restart_leaves(ref_dir), _restart_leaves(run_dir)
    assert ref.keys() == got.keys() and int(got["step"]) == 2 * N
    for k in ref:
        if ref[k].dtype.kind == "U":  # the neighbour capacities (JSON)
            assert str(got[k]) == str(ref[k])
            continue
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=k)
    assert (run_dir / "thermo.csv").read_text() == (ref_dir / "thermo.csv").read_text()
    assert (run_dir / "trajectory.extxyz").read_text() == (ref_dir / "trajectory.extxyz").read_text()


@pytest.mark.parametrize("ensemble", ["nvt_nose_hoover", "nvt_langevin"])
def test_run_md_nvt(potential, ensemble, tmp_path):
    summary = run_md(potential, random_box(), _cfg(N, ensemble=ensemble, temperature_k=300.0, tau_fs=20.0,
                                                   friction_per_fs=0.05), tmp_path, progress=False)
    assert summary["steps"] == N and summary["ensemble"] == ensemble
    assert 100 < summary["temperature_mean_K"] < 600


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nvt_nose_hoover", "nvt_langevin"])
def test_thermostat_brings_temperature_to_target(potential, kind):
    """Started cold (30 K), the thermostat brings the box to 300 K: mean T of the second half of
    200 fs within 25 % (24 atoms: instantaneous T fluctuates by ≈ 17 %). Without a thermostat
    the box would only warm by ≈ 100 K in that time (see _models)."""
    target, dt_fs = 300.0, 1.0
    box = random_box()
    ens = Ensemble(kind, dt_fs, target, tau_fs=20.0, friction_per_fs=0.05)
    energy_fn = make_md_energy_fn(potential)
    init_fn, apply_fn = make_integrator(energy_fn, ens)
    fns = make_host_graph_fns(make_plan(potential.spec.descriptor), box.numbers, box.cell, box.pbc, skin=2.0)
    R0, cell = jnp.asarray(box.positions), jnp.asarray(box.cell)
    gstate = fns.allocate(R0)
    # jax-md's own initialisation, at 30 K (kT keyword, as both NVT init_fns expect it)
    state = init_fn(jax.random.PRNGKey(0), R0, mass=masses_of(box.numbers), kT=KB * 30.0,
                    graph=gstate.graph, cell=cell)
    chunk = make_chunk_fn(energy_fn, apply_fn, fns.update, cell, 5, 20)
    run = run_chunks(chunk, state, gstate, fns, 40, 5, dt_fs)
    T = run.temperature
    assert T[0] < 150.0, T[:5]
    assert abs(T[20:].mean() - target) < 0.25 * target, T
    assert np.all(np.isfinite(run.positions))
