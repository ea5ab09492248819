"""Hypergradients against central finite differences (float64) on a tiny Morse-cluster problem.

* ridge readout, exact IFT: FD of the exact (closed-form) solution, and autodiff through the
  closed form;
* K-step unrolled training of a network (Adam): FD of the same K-step objective;
* approximate IFT: equals the exact ridge IFT with an exact/converged solve, approximates it
  with truncated Neumann series (error shrinking with the number of terms), and a K-term
  Neumann series equals the hypergradient of K gradient-descent steps started at the optimum.
"""

import functools

import _hyper_problem as P
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnnp.hyper import SFParameterization
from jnnp.hyper.implicit import cg_solve, dense_solve, hvp, ift_hypergradient, neumann_solve
from jnnp.hyper.learnable import make_learnable
from jnnp.hyper.ridge import RidgeSettings, linear_spec, make_ridge_problem
from jnnp.hyper.stacked import stack_batches
from jnnp.hyper.unroll import UnrollSettings, unrolled_hypergradient
from jnnp.model import init_potential
from jnnp.train.normalize import normalize_potential

FIELDS = ("eta", "rs", "zeta")
RTOL = 1e-4


def _setup(hidden, fields=FIELDS):
    data = P.clusters(8)
    spec = P.potential(hidden=hidden).spec
    if not hidden:
        spec = linear_spec(spec)
    pot = init_potential(spec, jax.random.PRNGKey(0))
    param = SFParameterization.create(spec.descriptor, fields)
    lpot, raw = make_learnable(pot, param)
    lpot = normalize_potential(lpot, data[:5])
    train = stack_batches(param.graph_spec, data[:5], 5)
    val = stack_batches(param.graph_spec, data[5:], 3)
    return param, lpot, raw, train, val


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def ridge():
    param, lpot, raw, train, val = _setup(())
    prob = make_ridge_problem(lpot.spec, param, RidgeSettings(alpha=1e-3, force_weight=10.0))
    with P.fast_compiles():
        fn = jax.jit(jax.value_and_grad(prob.objective, has_aux=True))
        (J, w), g = fn(raw, lpot.params, train, val)
    return {"param": param, "lpot": lpot, "raw": raw, "train": train, "val": val, "prob": prob, "fn": fn,
            "J": J, "w": w, "g": g}


@pytest.mark.slow
def test_ridge_ift_hypergradient_matches_finite_differences(ridge):
    r = ridge
    with P.fast_compiles():
        fd = P.fd_gradient(lambda x: r["fn"](x, r["lpot"].params, r["train"], r["val"])[0][0], r["raw"])
    g = P.flat(r["g"])
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0
    assert _rel_err(g, fd) < RTOL
    # every component that is not negligibly small agrees to RTOL on its own
    big = np.abs(fd) > 1e-3 * np.abs(fd).max()
    np.testing.assert_allclose(g[big], fd[big], rtol=RTOL)


@pytest.mark.slow
def test_ridge_ift_equals_autodiff_through_the_closed_form(ridge):
    r = ridge
    prob, data = r["prob"], (r["lpot"].params, r["train"])
    with P.fast_compiles():
        direct = jax.jit(jax.grad(lambda x: prob.val_loss(prob.solve(x, data), x, data, r["val"])))(r["raw"])
    assert _rel_err(P.flat(r["g"]), P.flat(direct)) < 1e-9


@pytest.mark.slow
def test_unrolled_hypergradient_matches_finite_differences_of_the_same_objective():
    param, lpot, raw, train, val = _setup((4,))
    st = UnrollSettings(steps=3, optimizer="adam", learning_rate=1e-2, force_weight=10.0)
    with P.fast_compiles():
        fn = unrolled_hypergradient(lpot.spec, param, st)
        (J, wK), g = fn(raw, lpot.params, train, val)
        # small step: Adam's update g/√(g² + ε) is sharply curved for weights with tiny
        # gradients, so FD with h = 1e-5 has a truncation error of 2e-4 here (1e-6: 2e-6)
        fd = P.fd_gradient(lambda x: fn(x, lpot.params, train, val)[0][0], raw, h=1e-6)
    g = P.flat(g)
    assert np.isfinite(J) and np.linalg.norm(g) > 0
    assert _rel_err(g, fd) < RTOL
    # the weights did move: the hypergradient really goes through the training steps
    assert not np.allclose(P.flat(wK), P.flat(lpot.params["networks"]))


@pytest.mark.slow
def test_approximate_ift_matches_exact_ridge_ift_and_approximates_when_truncated(ridge):
    r = ridge
    prob, data, val = r["prob"], (r["lpot"].params, r["train"]), r["val"]
    w_star = r["w"]

    def train_loss(w, x):
        return prob.train_loss(w, x, data)

    def val_loss(w, x):
        return prob.val_loss(w, x, data, val)

    n = jax.flatten_util.ravel_pytree(w_star)[0].size
    terms = (5, 50, 500)

    @jax.jit
    def all_grads(x):
        # Neumann step 1/λ_max(H), λ_max by power iteration on Hessian-vector products
        x0, unravel = jax.flatten_util.ravel_pytree(w_star)
        hv = lambda v: jax.flatten_util.ravel_pytree(hvp(lambda w: train_loss(w, x), w_star, unravel(v)))[0]
        def power(_, v):
            u = hv(v)
            return u / jnp.linalg.norm(u)

        v = jax.lax.fori_loop(0, 100, power, jnp.ones_like(x0))
        step = 1.0 / jnp.linalg.norm(hv(v))
        solvers = [dense_solve, functools.partial(cg_solve, iterations=4 * n)] + \
            [functools.partial(neumann_solve, terms=t, step=step) for t in terms]
        return ift_hypergradient(train_loss, val_loss, w_star, x, solvers)

    with P.fast_compiles():
        out = [P.flat(g) for g in all_grads(r["raw"])]
    exact = P.flat(r["g"])
    assert _rel_err(out[0], exact) < 1e-9          # dense solve = exact IFT
    assert _rel_err(out[1], exact) < 1e-6          # CG, converged
    errs = [_rel_err(o, exact) for o in out[2:]]   # truncated Neumann: approximate, improving
    assert errs[0] > 1e-3, errs
    assert errs[0] > errs[1] > errs[2], errs
    # error of a K-term Neumann series: the remainder (I − αH)^K of the eigen-expansion
    assert errs[2] < 0.5 * errs[0]


@pytest.mark.slow
def test_neumann_series_equals_unrolled_gradient_descent_from_the_optimum(ridge):
    """K gradient-descent steps (rate α) started at the exact ridge optimum have the hypergradient
    of a K-term Neumann series with step α: the unrolled and implicit code agree."""
    r = ridge
    prob, data, val = r["prob"], (r["lpot"].params, r["train"]), r["val"]
    K, alpha = 7, 0.05
    st = UnrollSettings(steps=K, optimizer="sgd", learning_rate=alpha, force_weight=10.0, l2=1e-3)
    start = dict(r["lpot"].params)
    start["networks"] = r["w"]

    with P.fast_compiles():
        fn = unrolled_hypergradient(r["lpot"].spec, r["param"], st)
        (_, wK), g_unrolled = fn(r["raw"], start, r["train"], val)
        g_neumann = jax.jit(lambda x: ift_hypergradient(
            lambda w, t: prob.train_loss(w, t, data), lambda w, t: prob.val_loss(w, t, data, val), r["w"], x,
            functools.partial(neumann_solve, terms=K, step=alpha)))(r["raw"])
    np.testing.assert_allclose(P.flat(wK), P.flat(r["w"]), atol=1e-10)   # the optimum stays put
    assert _rel_err(P.flat(g_unrolled), P.flat(g_neumann)) < 1e-8


def test_ridge_energy_only_hypergradient_matches_finite_differences():
    """The cheap variant (energies only, no rescaling): one small compilation."""
    param, lpot, raw, train, val = _setup((), fields=("eta", "rs"))
    prob = make_ridge_problem(lpot.spec, param, RidgeSettings(alpha=1e-3, force_weight=0.0, rescale=False))
    with P.fast_compiles():
        fn = jax.jit(jax.value_and_grad(prob.objective, has_aux=True))
        (_, _), g = fn(raw, lpot.params, train, val)
        fd = P.fd_gradient(lambda x: fn(x, lpot.params, train, val)[0][0], raw)
    assert _rel_err(P.flat(g), fd) < RTOL
