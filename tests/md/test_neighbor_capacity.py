"""Neighbour buffers that overflow: recovery and restarts (jit graphs, `run_md`).

The 192-atom test box (2×2×2 `random_box`, 13.2 Å, wide enough for the jit graph) with the
radial-only test potential, NVE at 150 K, skin 0.5 Å (so the graph is also rebuilt inside jit,
where the step is redone with the new graph). ``neighbor_capacity_multiplier = 0.5`` allocates
buffers for half the neighbours: the driver must reallocate bigger ones, and a restart written
after that must bring them back (not the small ones of a fresh allocation).
"""

import json

import numpy as np
import pytest
from _models import cheap_potential, fast_compiles
from test_npt import doubled_box

from jnnp.config.schema import MDConfig
from jnnp.md.output import read_thermo
from jnnp.md.simulate import run_md

N = 30  # steps of the first part; the straight runs have 2N (a chunk is 2 × 5 = 10 steps)
TINY = 0.5


def _cfg(steps, capacity):
    return MDConfig(ensemble="nve", timestep_fs=1.0, steps=steps, temperature_k=150.0, thermo_every=2,
                    trajectory_every=2, samples_per_chunk=5, skin=0.5, neighbors="jax-md", seed=3,
                    neighbor_capacity_multiplier=capacity)


def _meta(run_dir):
    with np.load(run_dir / "restart.npz") as data:
        return json.loads(str(data["neighbor_meta"]))


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """2N steps straight from tiny buffers: (run_dir, summary)."""
    run_dir = tmp_path_factory.mktemp("capacity") / "tiny"
    return run_dir, run_md(cheap_potential(angular=False), doubled_box(), _cfg(2 * N, TINY), run_dir,
                           progress=False)


@pytest.mark.slow
def test_overflow_recovery_equals_ample_capacity(tiny, tmp_path):
    """The run from tiny buffers (reallocated) == a run whose buffers were big enough from the
    start, step by step."""
    tiny_dir, tiny_summary = tiny
    ample = run_md(cheap_potential(angular=False), doubled_box(), _cfg(2 * N, 1.25), tmp_path, progress=False)
    assert tiny_summary["neighbors"] == "jax-md" and tiny_summary["rebuilds"] >= 1
    assert ample["rebuilds"] == 0
    a, b = read_thermo(tiny_dir / "thermo.csv"), read_thermo(tmp_path / "thermo.csv")
    np.testing.assert_array_equal(a["step"], b["step"])
    for k in ("e_pot_eV", "e_kin_eV", "pressure_GPa"):
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-10, err_msg=k)
    # the dynamics moved atoms by more than skin/2: the graph was rebuilt inside jit too
    import ase.io

    frames = ase.io.read(tmp_path / "trajectory.extxyz", index=":")
    moved = np.linalg.norm(frames[-1].positions - doubled_box().positions, axis=1).max()
    assert moved > 0.25, moved


@pytest.mark.slow
def test_restart_restores_reallocated_capacities(tiny, tmp_path):
    """N steps from tiny buffers (reallocated during the run), restart, resume to 2N: the
    restart holds the enlarged capacities, the resumed part needs no reallocation, and thermo
    and trajectory equal the straight run's exactly."""
    tiny_dir, _ = tiny
    pot, box = cheap_potential(angular=False), doubled_box()
    first = run_md(pot, box, _cfg(N, TINY), tmp_path, progress=False)
    assert first["rebuilds"] >= 1
    saved = _meta(tmp_path)
    second = run_md(pot, box, _cfg(2 * N, TINY), tmp_path, resume=True, progress=False)
    assert second["steps"] == N and second["rebuilds"] == 0, second
    fresh = _meta(tiny_dir)  # the straight run's end: same capacities as the resumed run's end
    assert fresh["caps"] == _meta(tmp_path)["caps"] and saved["caps"] == fresh["caps"]
    assert (tmp_path / "thermo.csv").read_text() == (tiny_dir / "thermo.csv").read_text()
    assert (tmp_path / "trajectory.extxyz").read_text() == (tiny_dir / "trajectory.extxyz").read_text()
