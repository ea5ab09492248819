"""MD with each step split over several devices (`jnnp.md.parallel`, ``MDConfig.devices``).

XLA's host device count is fixed when JAX starts, so the two-device runs happen in a subprocess
started with ``--xla_force_host_platform_device_count=2``. The 192-atom test box (jit graph,
skin 0.1 Å: rebuilt inside the jitted loop every few steps) runs NVE on one device and on two;
the split run starts from buffers too small (reallocated), stops half-way and resumes from its
restart file. Its thermo log — energies, pressure and the additive extrapolation-count
observable — must equal the one-device run (only the order of the force sums differs).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import cheap_potential, fast_compiles, random_box

from jnnp.md.parallel import md_mesh, on_parts, split_energy_fn
from jnnp.md.integrate import make_md_energy_fn
from jnnp.model.evaluate import graph_for

HERE = Path(__file__).resolve().parent


def test_too_few_devices_names_the_flag():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        md_mesh(64)


def test_split_energy_on_one_device_equals_the_energy():
    """On a one-device mesh the custom VJPs are identities: energy, forces and the strain
    derivative equal the plain energy function's."""
    pot, s = cheap_potential(), random_box()
    efn = make_md_energy_fn(pot)
    graph = graph_for(pot, s)
    R, cell = jnp.asarray(s.positions), jnp.asarray(s.cell)
    stacked = jax.tree.map(lambda x: jnp.asarray(x)[None], graph)

    def e_and_grads(energy_fn, R, cell, graph):
        strained = lambda eps: energy_fn(R * (1 + eps), graph=graph, cell=cell * (1 + eps))
        return energy_fn(R, graph=graph, cell=cell), jax.grad(lambda R: energy_fn(R, graph=graph, cell=cell))(R), \
            jax.grad(strained)(0.0)

    with fast_compiles():
        split = on_parts(lambda R, cell, graph: e_and_grads(split_energy_fn(efn), R, cell, graph), md_mesh(1))
        got = split(R, cell, graph=stacked)
        want = jax.jit(lambda R, cell, graph: e_and_grads(efn, R, cell, graph))(R, cell, graph)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # a subprocess with four chunk compilations (≈ 2 min)
def test_two_devices_equal_one(tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HERE)!r})
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        from _models import cheap_potential, fast_compiles
        from test_npt import doubled_box
        from jnnp.config.schema import MDConfig
        from jnnp.md.output import read_thermo
        from jnnp.md.simulate import run_md
        from jnnp.model.extrapolation import extrapolation_observables
        assert len(jax.devices()) == 2, jax.devices()
        pot, box = cheap_potential(), doubled_box()
        def cfg(devices, capacity, steps):
            return MDConfig(ensemble="nve", timestep_fs=1.0, steps=steps, temperature_k=300.0, thermo_every=4,
                            trajectory_every=4, samples_per_chunk=5, skin=0.1, neighbors="jax-md", seed=3,
                            neighbor_capacity_multiplier=capacity, devices=devices)
        out = {{}}
        with fast_compiles():
            one = run_md(pot, box, cfg(1, 1.25, 40), {str(tmp_path / "one")!r}, progress=False,
                         observables=extrapolation_observables(pot, tolerance=-0.3))
            two = {str(tmp_path / "two")!r}
            first = run_md(pot, box, cfg(2, 0.7, 20), two, progress=False,
                           observables=extrapolation_observables(pot, tolerance=-0.3))
            rest = run_md(pot, box, cfg(2, 0.7, 40), two, resume=True, progress=False,
                          observables=extrapolation_observables(pot, tolerance=-0.3))
        a, b = read_thermo({str(tmp_path / "one" / "thermo.csv")!r}), read_thermo(two + "/thermo.csv")
        out["steps"] = [a["step"].tolist(), b["step"].tolist()]
        out["diff"] = {{k: float(np.max(np.abs(a[k] - b[k]))) for k in ("e_pot_eV", "e_kin_eV", "pressure_GPa",
                                                                         "extrapolations")}}
        out["extrapolations"] = float(np.sum(a["extrapolations"]))
        out["reallocations"] = first["rebuilds"]
        out["graph_rebuilds"] = [one["graph_rebuilds"], first["graph_rebuilds"] + rest["graph_rebuilds"]]
        print(json.dumps(out))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900,
                         cwd=HERE)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["steps"][0] == out["steps"][1] and len(out["steps"][0]) == 10
    assert out["reallocations"] >= 1, "capacity 0.7 should overflow the first buffers"
    assert min(out["graph_rebuilds"]) >= 3, "the 0.1 Å skin should make the loop rebuild the graph"
    assert out["extrapolations"] > 0, "a negative tolerance should count values near the range's edges"
    for key, d in out["diff"].items():
        assert d < 1e-9, (key, out["diff"])
