"""Parameterisation of symmetry-function hyperparameters: round trips, constraints, layout."""

import dataclasses

import jax
import numpy as np
import optax
import pytest

from jnnp.descriptors.grids import symmetry_function_grid
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.hyper.param import FieldTransform, SFParameterization, softplus_inverse

FIELDS = ("eta", "rs", "zeta", "rc")


def grid():
    return symmetry_function_grid([1, 6, 8], 4.0, n_radial=4, r_min=0.8, angular_eta=(0.02, 0.1),
                                  zeta=(1.0, 4.0))


def field_array(spec, f):
    return np.array([getattr(sf, f) for fs in spec.functions for sf in fs])


def test_round_trip_spec_raw_spec():
    spec = grid()
    p = SFParameterization.create(spec, FIELDS)
    back = p.to_spec(p.init_raw())
    for f in FIELDS:
        np.testing.assert_allclose(field_array(back, f), field_array(spec, f), rtol=1e-14, atol=1e-15)
    assert back.trainable == () and [sf.lam for fs in back.functions for sf in fs] == \
        [sf.lam for fs in spec.functions for sf in fs]


def test_round_trip_raw_values_raw():
    p = SFParameterization.create(grid(), FIELDS)
    raw = jax.tree.map(lambda u: u + np.random.default_rng(u.size).normal(0, 0.3, u.shape), p.init_raw())
    again = p.init_raw(p.to_spec(raw))
    for a, b in zip(jax.tree.leaves(raw), jax.tree.leaves(again)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_fields_only_where_they_apply_and_rs_groups_ordered():
    spec = grid()
    p = SFParameterization.create(spec, ("eta", "rs", "zeta"))
    raw = p.init_raw()
    n_rad, n_ang = 3 * 4, 6 * 2 * 2 * 2
    for d in raw["elements"]:
        assert d["eta"].shape == (n_rad + n_ang,) and d["zeta"].shape == (n_ang,)
    # the 4 shifted r_s of one (centre, neighbour) radial grid form one ordered group
    lay = next(lay for lay in p.layouts[0] if lay.field == "rs")
    assert sum(lay.start) == 3 + n_ang


def test_values_feed_the_trainable_spec():
    p = SFParameterization.create(grid(), ("eta", "rc"))
    vals = p.values(p.init_raw())
    assert p.trainable_spec.trainable == ("eta", "rc")
    assert set(vals["elements"][0]) == {"eta", "rc"}
    assert p.graph_spec.cutoff == pytest.approx(1.25 * 4.0)


@pytest.mark.parametrize("kind", ["log", "softplus", "bounded", "ordered", "free"])
def test_transform_inverse(kind):
    spec = grid()
    t = FieldTransform(kind, 1e-3, 10.0) if kind == "bounded" else FieldTransform(kind)
    field = "rs" if kind in ("ordered", "free") else "eta"
    p = SFParameterization.create(spec, (field,), {field: t})
    np.testing.assert_allclose(field_array(p.to_spec(p.init_raw()), field), field_array(spec, field), rtol=1e-13,
                               atol=1e-15)


def test_large_adam_steps_never_leave_the_valid_region():
    """1000 Adam steps (learning rate 1) on random gradients: η > 0, ζ > 0, r_c inside its
    bounds and every r_s group strictly increasing, at every step."""
    spec = grid()
    p = SFParameterization.create(spec, FIELDS)
    raw = p.init_raw()
    opt = optax.adam(1.0)
    state = opt.init(raw)
    rng = np.random.default_rng(0)
    lo, hi = p.transform("rc").lo, p.transform("rc").hi

    @jax.jit
    def step(g, state, raw):
        upd, state = opt.update(g, state, raw)
        raw = optax.apply_updates(raw, upd)
        return state, raw, p.values(raw)

    for _ in range(1000):
        g = jax.tree.map(lambda u: rng.normal(size=u.shape), raw)
        state, raw, vals = step(g, state, raw)
        vals = jax.device_get(vals)["elements"]
        for c, d in enumerate(vals):
            assert np.all(np.asarray(d["eta"]) > 0) and np.all(np.asarray(d["zeta"]) > 0)
            assert np.all((np.asarray(d["rc"]) > lo) & (np.asarray(d["rc"]) < hi))
            lay = next(lay for lay in p.layouts[c] if lay.field == "rs")
            rs = np.asarray(d["rs"])[list(lay.index)]
            steps = np.diff(rs)[~np.asarray(lay.start[1:])]
            assert np.all(steps > 0)


def test_softplus_inverse_is_stable():
    x = np.array([1e-12, 1e-3, 1.0, 30.0, 700.0])
    np.testing.assert_allclose(np.log1p(np.exp(softplus_inverse(x[:-1]))), x[:-1], rtol=1e-12)
    assert np.isfinite(softplus_inverse(x)).all()


def test_invalid_values_and_fields_raise():
    spec = DescriptorSpec.from_functions((1,), [SymFunc(2, 1, (1,), 4.0, eta=0.0, rs=1.0),
                                                 SymFunc(2, 1, (1,), 4.0, eta=0.5, rs=1.0)])
    with pytest.raises(ValueError, match="eta = 0.0"):
        SFParameterization.create(spec, ("eta",))
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        SFParameterization.create(spec, ("lam",))
    dup = DescriptorSpec.from_functions((1,), [SymFunc(2, 1, (1,), 4.0, eta=0.5, rs=1.0),
                                               SymFunc(3, 1, (1, 1), 4.0, eta=0.5, zeta=1.0),
                                               SymFunc(3, 1, (1, 1), 4.0, eta=0.5, zeta=1.0)])
    with pytest.raises(ValueError, match="equal rs"):
        SFParameterization.create(dup, ("rs",))
    p = SFParameterization.create(grid(), ("eta",))
    other = symmetry_function_grid([1, 6, 8], 4.0, n_radial=3)
    with pytest.raises(ValueError, match="same symmetry functions"):
        p.init_raw(other)
    with pytest.raises(ValueError, match="lo < hi"):
        FieldTransform("bounded", 2.0, 1.0)
    assert dataclasses.replace(p.spec, trainable=()) == p.spec


def test_outer_loop_drives_the_hyperparameters_to_a_target():
    """`run_outer` (Adam on raw parameters) with an exact gradient of a toy objective in the
    constrained values: η and r_s reach their targets, the constraints hold, the best step is kept."""
    from jnnp.hyper.outer import run_outer

    spec = symmetry_function_grid([1], 4.0, n_radial=4, r_min=0.8, angular=False)
    p = SFParameterization.create(spec, ("eta", "rs"))
    target_eta = np.linspace(0.3, 2.0, 4)
    target_rs = np.array([0.5, 1.0, 2.5, 3.0])

    def J(raw):
        v = p.values(raw)["elements"][0]
        return jax.numpy.sum((v["eta"] - target_eta) ** 2) + jax.numpy.sum((v["rs"] - target_rs) ** 2)

    vg = jax.jit(jax.value_and_grad(J))

    def fn(raw, carry):
        val, g = vg(raw)
        return (val, None), g

    res = run_outer(fn, p, p.init_raw(), steps=300, learning_rate=0.05)
    assert res.history[-1]["objective"] < 1e-4 * res.history[0]["objective"]
    assert res.best_step == min(range(len(res.history)), key=lambda k: res.history[k]["objective"])
    v = jax.device_get(p.values(res.raw))["elements"][0]
    np.testing.assert_allclose(v["eta"], target_eta, atol=1e-2)
    np.testing.assert_allclose(v["rs"], target_rs, atol=1e-2)
