"""Loss terms with masks (no compilation: synthetic predictions) and optimiser chains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jnnp.data.structure import Structure
from jnnp.train.batch import Batcher
from jnnp.train.loss import LossConfig, combine_terms, loss_terms
from jnnp.train.optim import make_optimizer, make_schedule


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
