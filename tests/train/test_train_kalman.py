"""Element-decoupled Kalman filter: recursive least squares limit, blocks, masking, HDNNP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnnp.train.batch import Batcher
from jnnp.train.kalman import (element_block, kalman_filter, kalman_update, make_kalman_train_step,
                               parameter_blocks)
from jnnp.train.loss import LossConfig
from jnnp.train.normalize import energy_scale, normalize_potential
from jnnp.train.reference import fit_reference_energies
from jnnp.train.optim import make_optimizer
from jnnp.train.step import init_train_state, make_train_step


def _linear_problem(noise=0.1, n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return X, X @ w + noise * rng.normal(size=n)


def _run_rls(kf, X, y, rows_per_update, epochs=1, split=None):
    if split is None:
        params = {"w": jnp.zeros(X.shape[1])}
    else:
        params = {"a": jnp.zeros(split), "b": jnp.zeros(X.shape[1] - split)}
    state = kf.init(params)
    upd = jax.jit(lambda p, s, H, e: kalman_update(p, s, H, e, kalman=kf))
    for _ in range(epochs):
        for i in range(0, len(X), rows_per_update):
            rows = jnp.asarray(X[i:i + rows_per_update])
            pred = rows @ (params["w"] if split is None else jnp.concatenate([params["a"], params["b"]]))
            H = {"w": rows} if split is None else {"a": rows[:, :split], "b": rows[:, split:]}
            params, state = upd(params, state, H, jnp.asarray(y[i:i + rows_per_update]) - pred)
    return params, state


def test_recursive_least_squares_exact():
    """λ ≡ 1: after one pass w = (XᵀX + εI)⁻¹ Xᵀy, whatever the number of rows per update."""
    X, y = _linear_problem()
    eps = 1e-3
    ref = np.linalg.solve(X.T @ X + eps * np.eye(X.shape[1]), X.T @ y)
    for m in (1, 3, 7):
        params, state = _run_rls(kalman_filter(1.0, 1.0, eps), X, y, m)
        np.testing.assert_allclose(params["w"], ref, rtol=0, atol=1e-10)
        # P is the posterior covariance (XᵀX + εI)⁻¹
        np.testing.assert_allclose(state.P[0], np.linalg.inv(X.T @ X + eps * np.eye(5)),
                                   rtol=1e-8, atol=1e-12)


def test_fading_memory_converges_to_least_squares():
    """RuNNer's λ0 = 0.98, ν = 0.9987: several passes converge to the least-squares solution."""
    X, y = _linear_problem(noise=0.0)
    params, state = _run_rls(kalman_filter(0.98, 0.9987, 0.01), X, y, 1, epochs=10)
    np.testing.assert_allclose(params["w"], np.linalg.lstsq(X, y, rcond=None)[0], atol=1e-8)
    X, y = _linear_problem(noise=0.1)
    params, state = _run_rls(kalman_filter(0.98, 0.9987, 0.01), X, y, 1, epochs=8)
    np.testing.assert_allclose(params["w"], np.linalg.lstsq(X, y, rcond=None)[0], atol=0.02)
    assert 0.98 < float(state.lam) < 1.0


def test_decoupled_blocks():
    """Block-diagonal P0: the first decoupled update equals the global one; blocks are separate."""
    X, y = _linear_problem(n=4)
    kf = kalman_filter(0.98, 0.9987, 0.5, block_of=lambda path: path[0].key)
    p2, s2 = _run_rls(kf, X[:2], y[:2], 2, split=2)
    p1, s1 = _run_rls(kalman_filter(0.98, 0.9987, 0.5), X[:2], y[:2], 2)
    np.testing.assert_allclose(np.concatenate([p2["a"], p2["b"]]), p1["w"], atol=1e-12)
    assert [P.shape for P in s2.P] == [(2, 2), (3, 3)]


def test_masked_rows_are_noops():
    kf = kalman_filter(0.98, 0.9987, 0.01)
    params = {"w": jnp.arange(3.0)}
    st = kf.init(params)
    new, st2 = kalman_update(params, st, {"w": jnp.zeros((2, 3))}, jnp.zeros(2), kalman=kf)
    np.testing.assert_array_equal(new["w"], params["w"])
    np.testing.assert_allclose(st2.P[0], st.P[0] / 0.98)


def test_element_blocks_of_potential(potential):
    trainable = {"networks": potential.params["networks"], "descriptor": potential.params["descriptor"]}
    ids, keys = parameter_blocks(trainable, element_block)
    assert keys == [("networks", 0), ("networks", 1), ("networks", 2)]
    st = kalman_filter().init({"networks": potential.params["networks"]})
    n_in = potential.spec.descriptor.n_features[0]
    n = n_in * 8 + 8 + 8 * 8 + 8 + 8 + 1
    assert [P.shape for P in st.P] == [(n, n)] * 3


def test_kalman_beats_adam_per_update(ethanol, radial_potential):
    """On a tiny HDNNP (radial functions, 8-8 networks, energies of 8 ethanol frames) the Kalman
    filter lowers the loss much faster per update than Adam."""
    potential = radial_potential
    structs = list(ethanol[:8])
    batcher = Batcher(potential.spec, structs, 8)
    shift = fit_reference_energies(structs, (1, 6, 8))      # host-side normalisation only
    scale = energy_scale(structs, (1, 6, 8), shift, "energy_std")
    energy = {"scale": np.asarray(scale), "shift": shift}
    pot = potential.replace(params={**potential.params, "energy": energy})
    batch = batcher.batch(range(8))
    cfg = LossConfig(1.0, 0.0)
    kf = kalman_filter(0.98, 0.9987, 1.0)          # P0 = I
    k_step = make_kalman_train_step(pot.spec, kf, cfg, forces_per_update=0)
    adam = make_optimizer("adam", 1e-2, schedule="constant", clip_norm=None)
    a_step = make_train_step(pot.spec, adam, cfg)
    n = 12
    losses = {}
    for name, step, opt in (("kalman", k_step, kf), ("adam", a_step, adam)):
        st = init_train_state(pot.params, opt)
        hist = []
        for _ in range(n + 1):
            st, m = step(st, batch)
            assert bool(m["finite"])
            hist.append(float(m["loss"]))        # loss before this update
        losses[name] = hist
    k, a = losses["kalman"], losses["adam"]
    assert k[0] == pytest.approx(a[0], rel=1e-12)
    assert k[n] < 0.35 * k[0]                     # about 5x lower after 12 updates
    assert k[n] < 0.5 * a[n]                      # Adam (lr 1e-2) stalls at about 0.8 k[0]
    assert all(k[i] < a[i] for i in range(4, n + 1))


@pytest.mark.slow
def test_kalman_with_force_rows(ethanol, potential):
    """Energy and force observations (reverse-over-reverse Jacobians): the force error drops."""
    structs = list(ethanol[:6])
    batcher = Batcher(potential.spec, structs, 1)
    pot = normalize_potential(potential, structs, batcher=batcher)
    kf = kalman_filter()
    step = make_kalman_train_step(pot.spec, kf, LossConfig(1.0, 10.0), forces_per_update=6, seed=3)
    st = init_train_state(pot.params, kf)
    first, last = [], []
    for epoch in range(3):
        for i in batcher.order(epoch):
            st, m = step(st, batcher.batch([i]))
            (first if epoch == 0 else last).append(float(m["force_mse"]))
    assert np.mean(last[-6:]) < 0.5 * np.mean(first)


def test_non_finite_update_is_skipped():
    """A non-finite error, a non-finite Jacobian row or ``valid=False`` leaves weights, P, λ and
    the count exactly as they were; the next finite update proceeds as if none had been tried."""
    kf = kalman_filter(0.98, 0.9987, 0.01)
    params = {"w": jnp.arange(3.0)}
    st = kf.init(params)
    rows = {"w": jnp.asarray([[1.0, 2.0, 0.5], [0.0, 1.0, -1.0]])}
    err = jnp.asarray([0.3, -0.2])
    upd = jax.jit(lambda p, s, H, e, v: kf.update(H, s, p, errors=e, valid=v))
    bad_rows = {"w": rows["w"].at[1, 2].set(jnp.nan)}
    for H, e, v in ((rows, err.at[0].set(jnp.inf), True), (bad_rows, err, True), (rows, err, False)):
        u, st2 = upd(params, st, H, e, v)
        np.testing.assert_array_equal(u["w"], 0.0)
        np.testing.assert_array_equal(st2.P[0], st.P[0])
        assert float(st2.lam) == float(st.lam) and int(st2.count) == 0
    u, st3 = upd(params, st2, rows, err, True)
    assert int(st3.count) == 1 and float(st3.lam) > float(st.lam)
    assert np.all(np.isfinite(st3.P[0])) and np.any(u["w"] != 0.0)
    # the covariance stays exactly symmetric (no explicit symmetrisation pass)
    P = np.asarray(st3.P[0])
    np.testing.assert_array_equal(P, P.T)


def test_train_step_skips_non_finite_structure(ethanol, radial_potential):
    """A structure with a NaN energy: the Kalman train step reports ``finite`` False and
    returns the state unchanged."""
    bad = ethanol[0].replace(energy=float("nan"))
    batcher = Batcher(radial_potential.spec, [bad], 1)
    kf = kalman_filter()
    step = make_kalman_train_step(radial_potential.spec, kf, LossConfig(1.0, 0.0), forces_per_update=0)
    st = init_train_state(radial_potential.params, kf)
    st2, m = step(st, batcher.batch([0]))
    assert not bool(m["finite"])
    for a, b in zip(jax.tree.leaves(st2), jax.tree.leaves(st)):
        np.testing.assert_array_equal(a, b)
