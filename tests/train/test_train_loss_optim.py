"""Loss terms with masks (no compilation: synthetic predictions) and optimiser chains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnnp.data.structure import Structure
from jnnp.train.batch import Batcher
from jnnp.train.loss import LossConfig, combine_terms, loss_terms
from jnnp.train.optim import ema_params, make_optimizer, make_schedule, params_ema, plateau_scale


def _batch(ethanol, spec):
    s = list(ethanol[:3])
    s[1] = s[1].replace(forces=None)                   # no force labels for structure 1
    s[2] = s[2].replace(energy=None)                   # no energy label for structure 2
    return s, Batcher(spec, s, 4).batch([0, 1, 2])     # slot 3 is padding


def test_loss_terms_masks(ethanol, spec):
    structs, b = _batch(ethanol, spec)
    rng = np.random.default_rng(0)
    A = b.positions.shape[0]
    pred = {"energy": jnp.asarray(b.energy + rng.normal(size=4)),
            "forces": jnp.asarray(b.forces + rng.normal(size=(A, 3)))}
    # poison everything that must be masked out: padding slot/atoms, unlabelled entries
    e = np.asarray(pred["energy"]).copy()
    e[2:] = np.nan
    f = np.asarray(pred["forces"]).copy()
    f[9:18] = np.nan            # structure 1 (no force labels)
    f[27:] = np.nan             # padding atoms
    pred = {"energy": jnp.asarray(e), "forces": jnp.asarray(f)}
    t = jax.jit(loss_terms)(pred, b)
    e_err = (e[:2] - b.energy[:2]) / 9.0
    assert float(t["energy_mse"]) == pytest.approx(np.mean(e_err**2), rel=1e-12)
    assert int(t["energy_count"]) == 2
    f_err = np.concatenate([f[0:9] - b.forces[0:9], f[18:27] - b.forces[18:27]])
    assert float(t["force_mse"]) == pytest.approx(np.mean(f_err**2), rel=1e-12)
    assert int(t["force_count"]) == 54
    cfg = LossConfig(energy_weight=2.0, force_weight=3.0)
    assert float(combine_terms(t, cfg)) == pytest.approx(2 * np.mean(e_err**2) + 3 * np.mean(f_err**2))


def test_loss_terms_stress_and_empty(spec):
    cell = np.eye(3) * 6.0
    s = Structure(positions=[[0, 0, 0], [1, 0, 0], [0, 1.2, 0]], numbers=[8, 1, 1], cell=cell, pbc=True,
                  stress=np.diag([0.1, 0.2, 0.3]))
    b = Batcher(spec, [s], 2).batch([0])
    pred = {"energy": jnp.zeros(2), "forces": jnp.zeros_like(jnp.asarray(b.forces)),
            "stress": jnp.zeros((2, 3, 3))}
    t = jax.jit(loss_terms)(pred, b)
    assert float(t["stress_mse"]) == pytest.approx(np.mean(np.diag([0.1, 0.2, 0.3]) ** 2))
    assert int(t["energy_count"]) == 0 and float(t["energy_mse"]) == 0.0      # no labels: 0, not NaN
    assert float(combine_terms(t, LossConfig(stress_weight=1.0))) == pytest.approx(float(t["stress_mse"]))


def test_schedules():
    f = jax.jit(make_schedule(1e-2, "cosine", total_steps=100, warmup_steps=10))
    assert float(f(0)) == 0.0 and float(f(10)) == pytest.approx(1e-2)
    assert float(f(100)) == pytest.approx(1e-4)
    g = make_schedule(1e-3, "constant", warmup_steps=4)
    assert float(g(2)) == pytest.approx(5e-4) and float(g(50)) == pytest.approx(1e-3)
    assert float(make_schedule(1e-3, "plateau")(7)) == pytest.approx(1e-3)
    with pytest.raises(ValueError):
        make_schedule(1e-3, "linear")
    with pytest.raises(ValueError):
        make_optimizer("sgd")


@pytest.mark.parametrize("name,schedule", [("adam", "cosine"), ("adamw", "constant"), ("adam", "plateau")])
def test_optimizer_chain_minimises_quadratic(name, schedule):
    opt = make_optimizer(name, 0.1, schedule=schedule, total_steps=200, clip_norm=1.0, weight_decay=1e-4)
    target = jnp.array([1.0, -2.0, 3.0])
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    loss = lambda p: jnp.sum((p["w"] - target) ** 2)

    @jax.jit
    def step(params, state):
        val, g = jax.value_and_grad(loss)(params)
        upd, state = opt.update(g, state, params, value=val)
        return optax.apply_updates(params, upd), state

    for _ in range(200):
        params, state = step(params, state)
    assert float(loss(params)) < 1e-2


def test_clip_by_global_norm():
    opt = make_optimizer("adam", 1.0, schedule="constant", clip_norm=1e-3)
    # Adam normalises the step; the clip shows in the first moment
    g = {"w": jnp.array([300.0, 400.0])}
    state = opt.init(g)
    _, state = jax.jit(opt.update)(g, state, g)
    mu = state[1][0].mu["w"]
    assert float(jnp.linalg.norm(mu)) == pytest.approx(0.1 * 1e-3, rel=1e-5)


def test_reduce_on_plateau_lowers_scale():
    opt = make_optimizer("adam", 0.1, schedule="plateau", plateau_patience=2, plateau_factor=0.5)
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    update = jax.jit(lambda state: opt.update({"w": jnp.ones(2)}, state, params, value=1.0)[1])
    for _ in range(10):
        state = update(state)   # the loss never improves
    assert float(state[-1].scale) < 1.0


def test_params_ema_is_the_moving_average_of_the_iterates():
    """The averaged weights kept in the optimiser state follow a_t = d_t a_{t-1} + (1 - d_t) p_t
    (d_t = min(decay, (1 + t)/(10 + t)), a_0 = p_0), recomputed here from the iterates; the
    iterates themselves are those of the same chain without the average."""
    target = jnp.array([1.0, -2.0, 3.0])
    loss = lambda p: jnp.sum((p["w"] - target) ** 2)

    def run(opt, n=40):
        params = {"w": jnp.array([0.5, 0.0, -1.0])}
        state = opt.init(params)
        iterates = [np.asarray(params["w"])]
        for _ in range(n):
            val, g = jax.value_and_grad(loss)(params)
            upd, state = opt.update(g, state, params, value=val)
            params = optax.apply_updates(params, upd)
            iterates.append(np.asarray(params["w"]))
        return iterates, state

    kw = dict(schedule="plateau", plateau_patience=2, clip_norm=1.0)
    plain, plain_state = run(make_optimizer("adam", 0.1, **kw))
    averaged, state = run(make_optimizer("adam", 0.1, ema_decay=0.8, **kw))
    np.testing.assert_array_equal(np.stack(plain), np.stack(averaged))
    a = plain[0]
    for t, p in enumerate(plain[1:], start=1):
        d = min(0.8, (1 + t) / (10 + t))
        a = d * a + (1 - d) * p
    np.testing.assert_allclose(np.asarray(ema_params(state)["w"]), a, rtol=1e-12)
    assert not np.allclose(a, plain[-1])
    assert ema_params(plain_state) is None
    assert float(plateau_scale(state)) == float(plateau_scale(plain_state)) == float(plain_state[-1].scale)
    assert plateau_scale(make_optimizer("adam", 0.1).init({"w": jnp.zeros(2)})) == 1.0
    with pytest.raises(ValueError, match="ema_decay"):
        params_ema(1.0)
