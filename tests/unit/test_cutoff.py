"""n2p2 cutoff functions: closed forms, derivatives, boundaries, NaN safety, dtypes.

All types are evaluated by one jitted function (values and gradients w.r.t. r and r_c) on a
fixed-length grid, so the whole module compiles only a few times.
"""

import math

from functools import partial

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jnnp.descriptors.cutoff import (CUTOFF_NAMES, CUTOFF_TYPES, cutoff,  # noqa: E402
                                     cutoff_type_number)

# Cheap XLA compilation (the test graphs are small; LLVM optimisation dominates build time).
_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                          "xla_llvm_disable_expensive_passes": True})

RC = 6.0
N = 16
ALL = list(CUTOFF_TYPES)
SMOOTH = [k for k in ALL if k != "hard"]
INNER = ["cos", "exp", "poly1", "poly2", "poly3", "poly4"]


@_jit
def _evaluate(r, rc, alpha):
    """Stacked (9, N) arrays f, df/dr, df/drc for every cutoff type (order of `ALL`)."""
    vals, drs, drcs = [], [], []
    for kind in ALL:
        def f(x, c, kind=kind):
            return cutoff(kind, x, c, alpha)
        v, (dr, drc) = jax.vmap(jax.value_and_grad(f, argnums=(0, 1)), (0, None))(r, rc)
        vals.append(v)
        drs.append(dr)
        drcs.append(drc)
    return jnp.stack(vals), jnp.stack(drs), jnp.stack(drcs)


def evaluate(kind, r, rc=RC, alpha=0.0, dtype=np.float64):
    """(f, df/dr, df/drc) of one type at up to N points (padded to N to reuse the compilation)."""
    r = np.asarray(r, dtype=dtype)
    n = r.size
    rp = np.concatenate([r, np.full(N - n, 1.0, dtype=dtype)])
    out = _evaluate(jnp.asarray(rp), jnp.asarray(rc, dtype), jnp.asarray(alpha, dtype))
    i = ALL.index(kind)
    return tuple(np.asarray(o[i, :n]) for o in out)


def reference(kind, r, rc, alpha):
    """Independent numpy closed forms (n2p2 documentation formulas)."""
    r = np.asarray(r, dtype=np.float64)
    rci = alpha * rc
    x = (r - rci) / (rc - rci)
    with np.errstate(all="ignore"):
        f = {"hard": lambda: np.ones_like(r),
             "cos": lambda: 0.5 * (np.cos(np.pi * x) + 1.0),
             "tanhu": lambda: np.tanh(1.0 - r / rc) ** 3,
             "tanh": lambda: np.tanh(1.0 - r / rc) ** 3 / np.tanh(1.0) ** 3,
             "exp": lambda: np.exp(1.0 - 1.0 / (1.0 - x**2)),
             "poly1": lambda: 2 * x**3 - 3 * x**2 + 1,
             "poly2": lambda: -6 * x**5 + 15 * x**4 - 10 * x**3 + 1,
             "poly3": lambda: 20 * x**7 - 70 * x**6 + 84 * x**5 - 35 * x**4 + 1,
             "poly4": lambda: -70 * x**9 + 315 * x**8 - 540 * x**7 + 420 * x**6 - 126 * x**5 + 1,
             }[kind]()
    if kind in INNER:
        f = np.where(r < rci, 1.0, f)
    return np.where(r >= rc, 0.0, f)


def reference_derivative(kind, r, rc, alpha):
    """Independent closed forms of df_c/dr (for r_ci < r < r_c)."""
    r = np.asarray(r, dtype=np.float64)
    rci = alpha * rc
    iw = 1.0 / (rc - rci)
    x = (r - rci) * iw
    if kind == "cos":
        return -0.5 * np.pi * np.sin(np.pi * x) * iw
    if kind in ("tanhu", "tanh"):
        t = np.tanh(1.0 - r / rc)
        d = -3.0 * t**2 * (1.0 - t**2) / rc
        return d if kind == "tanhu" else d / np.tanh(1.0) ** 3
    if kind == "exp":
        return np.exp(1.0 - 1.0 / (1.0 - x**2)) * (-2.0 * x / (1.0 - x**2) ** 2) * iw
    d = {"poly1": 6 * x**2 - 6 * x,
         "poly2": -30 * x**4 + 60 * x**3 - 30 * x**2,
         "poly3": 140 * x**6 - 420 * x**5 + 420 * x**4 - 140 * x**3,
         "poly4": -630 * x**8 + 2520 * x**7 - 3780 * x**6 + 2520 * x**5 - 630 * x**4}[kind]
    return d * iw


def test_type_mapping():
    assert CUTOFF_TYPES == {"hard": 0, "cos": 1, "tanhu": 2, "tanh": 3, "exp": 4,
                            "poly1": 5, "poly2": 6, "poly3": 7, "poly4": 8}
    assert all(CUTOFF_TYPES[CUTOFF_NAMES[i]] == i for i in range(9))
    assert cutoff_type_number("CT_POLY2") == 6 == cutoff_type_number("6") == cutoff_type_number(6)
    assert cutoff_type_number("TanhU") == 2
    for bad in (9, -1, "poly5", "", True):
        with pytest.raises(ValueError):
            cutoff_type_number(bad)
        with pytest.raises(ValueError):
            cutoff(bad, 1.0, RC)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("kind", ALL)
def test_values_match_closed_forms(kind, alpha):
    r = np.array([0.0, 0.5, 1.7, 1.8, 2.9, 3.3, 4.4, 5.5, 5.99, 6.0, 6.5, 10.0])
    f, _, _ = evaluate(kind, r, RC, alpha)
    np.testing.assert_allclose(f, reference(kind, r, RC, alpha), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", SMOOTH)
def test_normalisation_at_origin(kind):
    want = math.tanh(1.0) ** 3 if kind == "tanhu" else 1.0
    # the exp type evaluates e * exp(-1) at x = 0 (as n2p2 does), which may be 1 - 2**-53
    assert evaluate(kind, [0.0])[0][0] == pytest.approx(want, rel=3e-16)


@pytest.mark.parametrize("alpha", [0.0, 0.25])
@pytest.mark.parametrize("kind", SMOOTH)
def test_derivative_matches_finite_differences(kind, alpha):
    r = np.array([0.3, 1.1, 2.2, 3.7, 4.1, 5.2, 5.8])
    r = r[r > alpha * RC + 1e-3]
    h = 1e-6
    _, g, _ = evaluate(kind, r, RC, alpha)
    fd = (evaluate(kind, r + h, RC, alpha)[0] - evaluate(kind, r - h, RC, alpha)[0]) / (2 * h)
    # FD of the float64 implementation (h = 1e-6; rounding noise ~1e-8 for poly4)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    # tight check against the analytic derivative
    np.testing.assert_allclose(g, reference_derivative(kind, r, RC, alpha), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", SMOOTH)
def test_derivative_with_respect_to_rc(kind):
    r, h, alpha = np.array([2.7, 4.9]), 1e-6, 0.2
    _, _, g = evaluate(kind, r, RC, alpha)
    fd = (evaluate(kind, r, RC + h, alpha)[0] - evaluate(kind, r, RC - h, alpha)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    ref = (reference(kind, r, RC + h, alpha) - reference(kind, r, RC - h, alpha)) / (2 * h)
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ALL)
def test_zero_value_and_gradient_beyond_cutoff(kind):
    r = np.array([RC, RC * (1 + 1e-15), 6.5, 12.0, 1e3])
    f, g, grc = evaluate(kind, r, RC, 0.2)
    assert np.all(f == 0.0) and np.all(g == 0.0) and np.all(grc == 0.0)


@pytest.mark.parametrize("kind", INNER)
def test_exactly_one_inside_inner_cutoff(kind):
    alpha = 0.4
    r = np.array([0.0, 0.1, 1.0, 2.39])
    f, g, grc = evaluate(kind, r, RC, alpha)
    assert np.all(f == 1.0) and np.all(g == 0.0) and np.all(grc == 0.0)


def test_tanh_types_ignore_alpha():
    r = np.array([0.0, 1.0, 3.0, 5.9])
    for kind in ("tanh", "tanhu", "hard"):
        np.testing.assert_array_equal(evaluate(kind, r, RC, 0.5)[0], evaluate(kind, r, RC, 0.0)[0])


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_finite_gradients_at_edges(alpha):
    r = np.array([0.0, alpha * RC, RC, np.nextafter(RC, 0.0)])
    for kind in ALL:
        f, g, grc = evaluate(kind, r, RC, alpha)
        assert np.all(np.isfinite(f)) and np.all(np.isfinite(g)) and np.all(np.isfinite(grc)), kind
        assert g[2] == 0.0 and f[2] == 0.0


def test_float32_preserved():
    r = np.linspace(0.0, 7.0, N)
    for kind in ALL:
        f, g, grc = evaluate(kind, r, RC, 0.1, dtype=np.float32)
        assert f.dtype == g.dtype == grc.dtype == np.float32
        assert np.all(np.isfinite(g)) and np.all(np.isfinite(grc))
        # float32 Horner evaluation of poly4 near x = 1 loses ~1e-5 absolute
        np.testing.assert_allclose(f, reference(kind, r.astype(np.float32).astype(np.float64), RC, 0.1),
                                   atol=1e-4)


def test_broadcasting_and_jit():
    r = jnp.linspace(0.0, 8.0, 9)[:, None]
    rc = jnp.array([[4.0, 6.0, 8.0]])
    f = _jit(lambda r, rc, a: cutoff("poly2", r, rc, a))(r, rc, jnp.asarray(0.1))
    assert f.shape == (9, 3)
    np.testing.assert_allclose(np.asarray(f), reference("poly2", np.asarray(r), np.asarray(rc), 0.1),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5])
def test_alpha_validation(alpha):
    with pytest.raises(ValueError, match="alpha"):
        cutoff("cos", 1.0, RC, alpha)
    with pytest.raises(ValueError, match="alpha"):
        cutoff("tanh", 1.0, RC, alpha)
