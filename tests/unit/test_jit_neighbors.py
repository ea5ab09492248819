"""Jit-built neighbour graphs (jax-md Dense lists) against the host all-image graph."""

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnnp
from jnnp.descriptors import DescriptorSpec, SymFunc
from jnnp.descriptors.plan import make_plan
from jnnp.geometry.graph import build_graph, pad_graph
from jnnp.geometry.neighbors import make_graph_fns
from jnnp.model import PotentialSpec, init_potential
from jnnp.model.potential import make_energy_fn
from tests.conftest import shared_path

SKIN = 0.5
TOL = 1e-10


def _spec():
    H, O = 1, 8
    fs = [SymFunc(2, c, (e,), rc=4.0, eta=0.3, rs=0.5) for c in (H, O) for e in (H, O)]
    fs += [SymFunc(3, O, (H, O), rc=4.0, eta=0.05, lam=-1.0, zeta=2.0),   # narrow, mixed neighbours
           SymFunc(9, O, (H, H), rc=3.5, eta=0.02, lam=1.0, zeta=1.0),    # wide, r_c below the cutoff
           SymFunc(9, H, (O, O), rc=4.0, eta=0.01, lam=1.0, zeta=4.0)]
    return DescriptorSpec.from_functions((H, O), fs)


@pytest.fixture(scope="module")
def setup():
    data = shared_path("n2p2-examples", "H2O_RPBE-D3", "input.data")
    s = jnnp.read(data, length_unit="bohr", energy_unit="hartree")[0]  # 192 atoms, 13.03 Å cube
    shear = np.array([[1.0, 0.0, 0.0], [0.08, 1.0, 0.0], [0.05, -0.06, 1.0]])  # triclinic, widths > 12 Å
    cell, pos = s.cell @ shear, s.positions @ shear
    spec = _spec()
    plan = make_plan(spec)
    pot = init_potential(PotentialSpec(spec, hidden=(6,), activations=("t", "l")), jax.random.PRNGKey(1))
    vg = jax.jit(jax.value_and_grad(make_energy_fn(pot.spec), argnums=1))
    fns = make_graph_fns(plan, cell, skin=SKIN, chunk=32)
    state = fns.allocate(pos, s.numbers)

    def evaluate(p, graph):
        e, g = vg(pot.params, jnp.asarray(p), jnp.asarray(cell), graph)
        return float(e), -np.asarray(g)

    def host(p, sizes):
        """Host all-image graph padded to the jit graph's sizes (shares the compiled program)."""
        g = build_graph(plan, np.asarray(p), s.numbers, cell, True, chunk=32)
        return evaluate(p, pad_graph(g, sizes, plan))

    return SimpleNamespace(cell=cell, pos=pos, numbers=s.numbers, plan=plan, fns=fns, state=state,
                           evaluate=evaluate, host=host)


def _assert_matches(ns, p, graph):
    e, f = ns.evaluate(p, graph)
    e0, f0 = ns.host(p, graph.sizes())
    assert abs(e - e0) < TOL
    np.testing.assert_allclose(f, f0, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def trajectory(setup):
    """Small moves (no rebuild), large moves (rebuild), wrapped positions, then a denser structure
    (overflow) and back, in one lax.scan."""
    rng = np.random.default_rng(0)
    unit = rng.normal(size=setup.pos.shape)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    small = setup.pos + 0.24 * unit                                       # every atom < skin/2
    large = setup.pos + rng.uniform(0.0, 0.7, (len(unit), 1)) * unit
    frac = large @ np.linalg.inv(setup.cell)
    wrapped = (frac - np.floor(frac)) @ setup.cell
    squeezed = (0.5 + 0.7 * (frac - np.floor(frac) - 0.5)) @ setup.cell  # 2.9× denser: overflow
    frames = np.stack([small, large, wrapped, squeezed, large])

    def step(state, p):
        state = setup.fns.update(p, state)
        return state, (state.graph, state.reference, state.overflow)

    _, out = jax.device_get(jax.jit(lambda s, f: jax.lax.scan(step, s, f))(setup.state, jnp.asarray(frames)))
    graphs = [jax.tree.map(lambda a, k=k: a[k], out[0]) for k in range(len(frames))]
    return frames, graphs, out[1], out[2]


def test_allocate_matches_host(setup):
    g = setup.state.graph
    assert not bool(setup.state.overflow) and g.chunk == 32
    assert all(len(b[0]) % 32 == 0 for b in g.triplet_blocks)
    for local in [b[1] for b in g.pair_blocks] + [b[3] for b in g.triplet_blocks]:
        assert np.all(np.diff(np.asarray(local)) >= 0)
    _assert_matches(setup, setup.pos, g)


def test_narrow_triplets_list_their_j_to_k_leg(setup, trajectory):
    """r of a narrow triplet is the listed pair j→k with the image implied by the two legs, and
    the per-pair kernel it enables equals the vector kernel (which recomputes r_jk)."""
    frames, graphs = trajectory[0], trajectory[1]
    for g in (setup.state.graph, graphs[1]):
        assert g.jk
        pi, pj, ps = (np.asarray(a) for a in (g.pair_i, g.pair_j, g.pair_shift))
        narrow = [b for b, tb in zip(g.triplet_blocks, setup.plan.triplet_blocks) if tb.narrow]
        assert narrow
        for tp, tq, tr, _, m in narrow:
            tp, tq, tr, m = (np.asarray(a)[np.asarray(m)] for a in (tp, tq, tr, m))
            assert len(tr) > 100
            np.testing.assert_array_equal(pi[tr], pj[tp])
            np.testing.assert_array_equal(pj[tr], pj[tq])
            np.testing.assert_array_equal(ps[tr], ps[tq] - ps[tp])
    e, f = setup.evaluate(frames[1], graphs[1])
    e0, f0 = setup.evaluate(frames[1], dataclasses.replace(graphs[1], jk=False))
    assert abs(e - e0) < TOL
    np.testing.assert_allclose(f, f0, rtol=0, atol=TOL)


def test_small_moves_without_rebuild(setup, trajectory):
    frames, graphs, refs, overflow = trajectory
    np.testing.assert_array_equal(refs[0], setup.pos)  # not rebuilt
    assert not overflow[0]
    _assert_matches(setup, frames[0], graphs[0])


def test_large_moves_and_wrapping_rebuild(setup, trajectory):
    frames, graphs, refs, overflow = trajectory
    for k in (1, 2):
        np.testing.assert_array_equal(refs[k], frames[k])  # rebuilt at these positions
        assert not overflow[k]
        _assert_matches(setup, frames[k], graphs[k])


def test_update_reports_overflow(trajectory):
    overflow = trajectory[3]
    assert overflow[3] and overflow[4]  # sticky until reallocation


def test_overflow_and_reallocate(setup):
    tiny = setup.fns.allocate(setup.pos, setup.numbers, capacity_multiplier=0.5)
    assert bool(tiny.overflow)
    state = setup.fns.reallocate(setup.pos, tiny)
    assert not bool(state.overflow)
    _assert_matches(setup, setup.pos, state.graph)


def test_cell_too_small_for_minimum_image(setup):
    small = np.eye(3) * 8.5  # < 2·(4 + 0.5) Å
    with pytest.raises(ValueError, match="host builder"):
        make_graph_fns(setup.plan, small, skin=SKIN)
