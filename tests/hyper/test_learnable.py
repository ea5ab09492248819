"""Learnable symmetry functions: joint training, frozen groups, scaling refresh, static export."""

import _hyper_problem as P
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _shared import TEST_DATA

import jnnp
from jnnp.hyper import SFParameterization
from jnnp.hyper.learnable import (
    LearnableSettings,
    LearnState,
    assemble,
    fit_learnable,
    make_group_optimizer,
    make_learnable,
    make_learnable_step,
    refresh_scaling,
    static_potential,
)
from jnnp.train.batch import Batcher
from jnnp.train.loss import LossConfig
from jnnp.train.normalize import descriptor_statistics, normalize_potential
from jnnp.train.step import cached_properties_fn

FIELDS = ("eta", "rs", "zeta")


@pytest.fixture(scope="module")
def setup():
    data = P.clusters(6)
    pot = P.potential(hidden=(4,))
    param = SFParameterization.create(pot.spec.descriptor, FIELDS)
    lpot, raw = make_learnable(pot, param)
    batcher = Batcher(param.graph_spec, data, 6)
    lpot = normalize_potential(lpot, data, batcher=batcher)
    return {"data": data, "param": param, "lpot": lpot, "raw": raw, "batch": next(batcher.batches()),
            "batcher": batcher}


def test_joint_training_moves_learnable_groups_and_keeps_frozen_ones(setup):
    s = setup
    param, lpot = s["param"], s["lpot"]
    params = jax.tree.map(jnp.asarray, lpot.params)
    raw = jax.tree.map(jnp.asarray, s["raw"])
    rates = {"networks": 1e-2, "eta": 3e-2, "rs": 0.0, "zeta": 3e-2}
    opt = make_group_optimizer(param, raw, params["networks"], rates, schedule="constant", clip_norm=None)
    step = make_learnable_step(lpot.spec, param, opt, LossConfig(1.0, 10.0))
    state = LearnState(jnp.zeros((), jnp.int32), params, raw, opt.init({"networks": params["networks"], "sf": raw}))
    with P.fast_compiles():
        losses = []
        for _ in range(40):
            state, m = step(state, s["batch"])
            assert bool(m["finite"])
            losses.append(float(m["loss"]))
    assert losses[-1] < 0.7 * losses[0], losses[::10]
    r0, r1 = s["raw"]["elements"][0], jax.device_get(state.raw)["elements"][0]
    np.testing.assert_array_equal(r1["rs"], r0["rs"])                    # frozen group: bit for bit
    assert np.max(np.abs(r1["eta"] - r0["eta"])) > 1e-3                   # learnable groups moved
    assert np.max(np.abs(r1["zeta"] - r0["zeta"])) > 1e-3
    # the descriptor values inside the potential parameters follow the raw parameters
    vals = param.values(state.raw)["elements"][0]
    np.testing.assert_allclose(state.params["descriptor"]["elements"][0]["eta"], vals["eta"], rtol=0, atol=0)
    assert np.all(np.asarray(vals["eta"]) > 0) and np.all(np.asarray(vals["zeta"]) > 0)


def test_refresh_scaling_and_static_export_keep_the_predictions(setup):
    s = setup
    param, lpot, batch = s["param"], s["lpot"], s["batch"]
    raw = jax.tree.map(lambda u: u + 0.2, s["raw"])        # functions moved away from the statistics
    params = assemble(param, lpot.params, raw)
    fn = cached_properties_fn(lpot.spec, True, False)
    with P.fast_compiles():
        before = fn(params, batch)
        stats = descriptor_statistics(lpot.spec, params, s["batcher"])
        fresh = refresh_scaling(lpot.spec, params, stats)
        after = fn(fresh, batch)
        assert not np.allclose(np.asarray(fresh["scaling"][0]["max"]), np.asarray(params["scaling"][0]["max"]))
        for k in ("energy", "forces"):
            np.testing.assert_allclose(after[k], before[k], rtol=1e-10, atol=1e-10)
        static = static_potential(param, lpot.replace(params=params), raw)
        assert static.spec.descriptor.trainable == ()
        out = cached_properties_fn(static.spec, True, False)(static.params, batch)
        for k in ("energy", "forces"):
            np.testing.assert_allclose(out[k], before[k], rtol=1e-10, atol=1e-10)


def test_settings_reject_unknown_groups():
    with pytest.raises(ValueError, match="unknown parameter group"):
        LearnableSettings(learning_rates={"lambda": 1e-2})
    with pytest.raises(ValueError, match=">= 0"):
        LearnableSettings(learning_rates={"eta": -1.0})


@pytest.mark.slow
def test_fit_learnable_on_ethanol_lowers_the_loss_and_returns_a_static_model():
    data = jnnp.read(TEST_DATA / "rmd17_ethanol_100.npz")
    from jnnp.descriptors.grids import symmetry_function_grid
    from jnnp.model import PotentialSpec, init_potential

    desc = symmetry_function_grid([1, 6, 8], 3.5, n_radial=3, r_min=0.9, angular=False)
    pot = init_potential(PotentialSpec(desc, hidden=(6,), activations=("t", "l")), jax.random.PRNGKey(0))
    param = SFParameterization.create(desc, ("eta", "rs"))
    st = LearnableSettings(epochs=6, batch_size=4, learning_rates={"networks": 1e-2, "eta": 2e-2, "rs": 2e-2})
    with P.fast_compiles():
        res = fit_learnable(pot, param, data[:16], data[16:24], st)
    hist = res.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert res.best_epoch > 0
    assert res.potential.spec.descriptor.trainable == ()
    old = np.array([[sf.eta, sf.rs] for fs in desc.functions for sf in fs])
    new = np.array([[sf.eta, sf.rs] for fs in res.potential.spec.descriptor.functions for sf in fs])
    assert np.max(np.abs(new - old)) > 1e-3
