"""Atoms shared out over devices (`jnnp.model.sharded`).

The parts of `split_graph` must add up to the whole: energies, forces, stress and per-atom
energies of the parts, evaluated one by one on the host, equal those of the full graph (chunked
graphs with every function type, free and triclinic periodic cells, more parts than some
elements have atoms). The shard_map path is checked on a one-device mesh and (slow) on two host
devices in a subprocess (XLA's device count is fixed when JAX starts).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jnnp import testing as T
from jnnp.descriptors.plan import make_plan
from jnnp.model.potential import make_energy_fn
from jnnp.model.properties import make_properties_fn
from jnnp.model.sharded import cpu_mesh, make_sharded_properties_fn, shard_graph, split_graph


@pytest.fixture(scope="module")
def model():
    pot, structures = T.default_test_potential()
    efn = make_energy_fn(pot.spec)
    props = jax.jit(make_properties_fn(efn, stress=True, atomic_energy_fn=efn.atomic_energy_fn))
    return pot, structures, efn, props


@pytest.mark.parametrize("name,parts", [("triclinic", 3),
                                        pytest.param("cluster", 2, marks=pytest.mark.slow),
                                        pytest.param("ortho", 5, marks=pytest.mark.slow)])
def test_parts_add_up_to_the_whole(model, name, parts):
    pot, structures, _, props = model
    s = structures[name]
    plan = make_plan(pot.spec.descriptor)
    graph = T.graph_of(pot, s, chunk=4)
    R, C = np.asarray(s.positions), np.asarray(s.cell)
    full = props(pot.params, R, C, graph)
    stacked = split_graph(graph, plan, parts)
    assert stacked.species.shape[0] == parts
    owned = sum(int(np.sum(m)) for m in stacked.element_mask)
    assert owned == s.n_atoms                                  # every atom is a centre exactly once
    total = None
    for k in range(parts):
        out = props(pot.params, R, C, jax.tree.map(lambda x: x[k], stacked))
        total = out if total is None else jax.tree.map(np.add, total, out)
    keys = ("energy", "forces", "energies") + (("stress", "virial") if s.periodic else ())
    for key in keys:
        np.testing.assert_allclose(total[key], full[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_sharded_fn_on_a_one_device_mesh(model):
    pot, structures, efn, props = model
    s = structures["triclinic"]
    graph = T.graph_of(pot, s, chunk=4)
    R, C = np.asarray(s.positions), np.asarray(s.cell)
    mesh = cpu_mesh(jax.devices()[:1])
    fn = make_sharded_properties_fn(efn, mesh, stress=True, atomic_energy_fn=efn.atomic_energy_fn)
    out = fn(pot.params, R, C, shard_graph(split_graph(graph, make_plan(pot.spec.descriptor), 1), mesh))
    full = props(pot.params, R, C, graph)
    for key in full:
        np.testing.assert_allclose(out[key], full[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.slow
def test_two_host_devices_in_a_subprocess():
    code = textwrap.dedent("""
        import json, jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        from jnnp import testing as T
        from jnnp.descriptors.plan import make_plan
        from jnnp.model.potential import make_energy_fn
        from jnnp.model.properties import make_properties_fn
        from jnnp.model.sharded import cpu_mesh, make_sharded_properties_fn, shard_graph, split_graph
        assert len(jax.devices()) == 2, jax.devices()
        pot, structures = T.default_test_potential()
        s = structures["ortho"]
        graph = T.graph_of(pot, s, chunk=4)
        R, C = np.asarray(s.positions), np.asarray(s.cell)
        efn = make_energy_fn(pot.spec)
        mesh = cpu_mesh()
        out = make_sharded_properties_fn(efn, mesh)(
            pot.params, R, C, shard_graph(split_graph(graph, make_plan(pot.spec.descriptor), 2), mesh))
        full = jax.jit(make_properties_fn(efn))(pot.params, R, C, graph)
        print(json.dumps({k: float(np.max(np.abs(np.asarray(out[k]) - np.asarray(full[k])))) for k in full}))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    errors = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(errors) == {"energy", "forces", "stress", "virial"}
    assert max(errors.values()) < 1e-10, errors
