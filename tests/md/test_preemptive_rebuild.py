"""Rebuilding the jit neighbour graph *before* a step that could leave its validity
(`jnnp.md.run.make_chunk_fn` with ``dt``) instead of redoing the step after it.

The 192-atom test box at 300 K with a 0.1 Å skin and 1 fs steps (largest move per step ≈ 0.01 Å)
needs a rebuild every few steps. Without ``dt`` each
rebuild happens after a step and that step is redone; with ``dt`` the predicted move triggers
the rebuild before the step, so nothing is redone — and the trajectory is the same (same
physics; the graphs differ only in pairs beyond r_c, which contribute exactly zero).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import cheap_potential, fast_compiles
from test_npt import doubled_box

from jnnp.descriptors.plan import make_plan
from jnnp.geometry.neighbors import make_graph_fns
from jnnp.md.integrate import Ensemble, make_integrator, make_md_energy_fn, masses_of
from jnnp.md.run import init_state, make_chunk_fn

SKIN = 0.1
EVERY, SAMPLES = 4, 10


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


@pytest.mark.slow  # two compilations of a chunk with the jit graph build (≈ 40 s each at O0)
def test_rebuild_before_the_step_spares_the_redo():
    pot, box = cheap_potential(), doubled_box()
    ens = Ensemble("nve", 1.0, 300.0)
    energy_fn = make_md_energy_fn(pot)
    init_fn, apply_fn = make_integrator(energy_fn, ens)
    fns = make_graph_fns(make_plan(pot.spec.descriptor), box.cell, skin=SKIN)
    R0, cell = jnp.asarray(box.positions), jnp.asarray(box.cell)
    g0 = fns.allocate(R0, box.numbers, capacity_multiplier=1.5)
    state0 = init_state(init_fn, R0, masses_of(box.numbers), ens, jax.random.PRNGKey(0), g0.graph, cell)
    runs = {}
    for name, dt in (("after", None), ("before", ens.dt)):
        chunk = make_chunk_fn(energy_fn, apply_fn, fns.update, cell, EVERY, SAMPLES, dt=dt)
        state, g, out = chunk(state0, g0)
        out = jax.device_get(out)
        assert out["ok"].all() and not bool(g.overflow)
        runs[name] = (state, out)
    after, before = runs["after"][1], runs["before"][1]
    assert after["graph_rebuilds"].sum() >= 3, "the skin should force several rebuilds"
    assert after["graph_redos"].sum() == after["graph_rebuilds"].sum()  # every one redoes its step
    assert before["graph_rebuilds"].sum() >= after["graph_rebuilds"].sum()
    assert before["graph_redos"].sum() == 0
    np.testing.assert_allclose(before["positions"], after["positions"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(before["e_pot"], after["e_pot"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(runs["before"][0].force, runs["after"][0].force, rtol=0, atol=1e-10)
