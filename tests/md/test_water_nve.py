"""NVE energy conservation of the 1080-atom RPBE-D3 water box with n2p2's reference HDNNP
(short version of the benchmark's drift measurement; needs ../shared/data).

float64, 0.5 fs, 300 K, the production path (`run_md`: jit neighbour graph with skin 0.5 Å,
rebuilt inside the loop, forces redone on a rebuild). Over 100 fs E_tot fluctuates by the
bounded O(dt²) error of velocity Verlet with the O–H stretch (period ≈ 10 fs; dt·ω ≈ 0.3):
measured max |E − E(0)| ≈ 3e-5 eV/atom here, and on the 192-atom box 4.6e-5 at 0.5 fs vs
1.1e-5 at 0.25 fs (ratio 4.0, so it is integration error, not missed neighbours). That
fluctuation makes the fitted slope of a 100-fs run uncertain by ≈ 4e-5 eV/atom/ps, so this
test cannot resolve the issue's 1e-5 eV/atom/ps; it bounds the fluctuation (2× the measured
one) and requires the linear trend to stay inside it, which any systematic drift above
≈ 3e-4 eV/atom/ps (e.g. from missing neighbours) would break. The 1e-5 eV/atom/ps criterion is
measured by `benchmarks/md_water.py` over ≥ 1000 steps (slope uncertainty ≈ 3e-6), for
float64 and float32 (results in benchmarks/results/md_water.json).
"""

import jax
import pytest
from _shared import shared_path

import jnnp
from jnnp.config.schema import MDConfig
from jnnp.md.simulate import run_md

MAX_DEV = 6e-5  # eV/atom: 2 × the measured Verlet fluctuation of this run


@pytest.mark.slow
def test_water_box_nve_conserves_energy(tmp_path):
    assert jax.config.jax_enable_x64
    water = shared_path("n2p2-examples", "H2O_RPBE-D3")
    pot = jnnp.read_n2p2(water / "reference-fit-7241", length_unit="bohr", energy_unit="hartree")
    box = jnnp.read(water / "input.data.H2O_1080_liquid", length_unit="bohr", energy_unit="hartree")[0]
    cfg = MDConfig(ensemble="nve", timestep_fs=0.5, steps=200, temperature_k=300.0, thermo_every=5,
                   trajectory_every=200, samples_per_chunk=10, skin=0.5, neighbors="jax-md",
                   precision="float64", seed=0)
    summary = run_md(pot, box, cfg, tmp_path, progress=False)
    drift = summary["energy_drift"]
    assert summary["steps"] == 200 and summary["neighbors"] == "jax-md"
    assert summary["graph_rebuilds"] >= 1  # the loop did rebuild the graph (skin 0.5 Å, 100 fs)
    assert 200 < summary["temperature_mean_K"] < 400
    assert drift["max_abs_dev_eV_per_atom"] <= MAX_DEV, drift
    assert abs(drift["total_drift_eV_per_atom"]) <= drift["max_abs_dev_eV_per_atom"], drift
