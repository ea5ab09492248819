"""n2p2 cutoff functions: closed forms, derivatives, boundaries, NaN safety, dtypes."""

import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jnnp.descriptors.cutoff import (CUTOFF_NAMES, CUTOFF_TYPES, cutoff,  # noqa: E402
                                     cutoff_type_number)

RC = 6.0
ALL = list(CUTOFF_TYPES)
SMOOTH = [k for k in ALL if k != "hard"]
INNER = ["cos", "exp", "poly1", "poly2", "poly3", "poly4"]


def reference(kind, r, rc, alpha):
    """Independent numpy closed forms (n2p2 documentation formulas)."""
    r = np.asarray(r, dtype=np.float64)
    rci = alpha * rc
    x = (r - rci) / (rc - rci)
    with np.errstate(all="ignore"):
        if kind == "hard":
            f = np.ones_like(r)
        elif kind == "cos":
            f = 0.5 * (np.cos(np.pi * x) + 1.0)
        elif kind == "tanhu":
            f = np.tanh(1.0 - r / rc) ** 3
        elif kind == "tanh":
            f = np.tanh(1.0 - r / rc) ** 3 / np.tanh(1.0) ** 3
        elif kind == "exp":
            f = np.exp(1.0 - 1.0 / (1.0 - x**2))
        elif kind == "poly1":
            f = 2 * x**3 - 3 * x**2 + 1
        elif kind == "poly2":
            f = -6 * x**5 + 15 * x**4 - 10 * x**3 + 1
        elif kind == "poly3":
            f = 20 * x**7 - 70 * x**6 + 84 * x**5 - 35 * x**4 + 1
        elif kind == "poly4":
            f = -70 * x**9 + 315 * x**8 - 540 * x**7 + 420 * x**6 - 126 * x**5 + 1
    if kind in INNER:
        f = np.where(r < rci, 1.0, f)
    return np.where(r >= rc, 0.0, f)


def grad_r(kind, r, rc=RC, alpha=0.0):
    return jax.vmap(jax.grad(lambda x: cutoff(kind, x, rc, alpha)))(jnp.asarray(r))


def test_type_mapping():
    assert CUTOFF_TYPES == {"hard": 0, "cos": 1, "tanhu": 2, "tanh": 3, "exp": 4,
                            "poly1": 5, "poly2": 6, "poly3": 7, "poly4": 8}
    assert all(CUTOFF_TYPES[CUTOFF_NAMES[i]] == i for i in range(9))
    assert cutoff_type_number("CT_POLY2") == 6 == cutoff_type_number("6") == cutoff_type_number(6)
    assert cutoff_type_number("TanhU") == 2
    for bad in (9, -1, "poly5", "", True):
        with pytest.raises(ValueError):
            cutoff_type_number(bad)


@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("kind", ALL)
def test_values_match_closed_forms(kind, alpha):
    r = np.array([0.0, 0.5, 1.7, 1.8, 2.9, 3.3, 4.4, 5.5, 5.99, 6.0, 6.5, 10.0])
    got = np.asarray(cutoff(kind, r, RC, alpha))
    np.testing.assert_allclose(got, reference(kind, r, RC, alpha), rtol=1e-13, atol=1e-13)
    # same result when the type is given as its number
    np.testing.assert_array_equal(got, np.asarray(cutoff(CUTOFF_TYPES[kind], r, RC, alpha)))


@pytest.mark.parametrize("kind", SMOOTH)
def test_normalisation_at_origin(kind):
    assert float(cutoff(kind, 0.0, RC)) == pytest.approx(
        math.tanh(1.0) ** 3 if kind == "tanhu" else 1.0, rel=1e-15)


@pytest.mark.parametrize("alpha", [0.0, 0.25])
@pytest.mark.parametrize("kind", SMOOTH)
def test_derivative_matches_finite_differences(kind, alpha):
    r = np.array([0.3, 1.1, 2.2, 3.7, 4.1, 5.2, 5.8])
    r = r[np.abs(r - alpha * RC) > 1e-3]
    h = 1e-6
    fd = (reference(kind, r + h, RC, alpha) - reference(kind, r - h, RC, alpha)) / (2 * h)
    np.testing.assert_allclose(np.asarray(grad_r(kind, r, RC, alpha)), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kind", ALL)
def test_zero_value_and_gradient_beyond_cutoff(kind):
    r = jnp.array([RC, RC * (1 + 1e-15), 6.5, 12.0, 1e3])
    assert np.all(np.asarray(cutoff(kind, r, RC, 0.2)) == 0.0)
    g = np.asarray(grad_r(kind, r, RC, 0.2))
    assert np.all(g == 0.0)
    grc = np.asarray(jax.vmap(jax.grad(lambda x: cutoff(kind, x, RC, 0.2), argnums=0))(r))
    assert np.all(np.isfinite(grc))


@pytest.mark.parametrize("kind", INNER)
def test_exactly_one_inside_inner_cutoff(kind):
    alpha = 0.4
    r = jnp.array([0.0, 0.1, 1.0, 2.39])
    assert np.all(np.asarray(cutoff(kind, r, RC, alpha)) == 1.0)
    assert np.all(np.asarray(grad_r(kind, r, RC, alpha)) == 0.0)
    # tanh types ignore alpha
    np.testing.assert_array_equal(np.asarray(cutoff("tanh", r, RC, alpha)),
                                  np.asarray(cutoff("tanh", r, RC, 0.0)))


@pytest.mark.parametrize("kind", ALL)
def test_finite_gradients_at_edges(kind):
    for alpha in (0.0, 0.5):
        r = jnp.array([0.0, alpha * RC, RC, np.nextafter(RC, 0.0)])
        g = np.asarray(grad_r(kind, r, RC, alpha))
        assert np.all(np.isfinite(g)), (kind, alpha, g)
        g_rc = jax.vmap(jax.grad(lambda rc, x: cutoff(kind, x, rc, alpha)), in_axes=(None, 0))(RC, r)
        assert np.all(np.isfinite(np.asarray(g_rc)))


@pytest.mark.parametrize("kind", SMOOTH)
def test_derivative_with_respect_to_rc(kind):
    r, h = 2.7, 1e-6
    g = float(jax.grad(lambda rc: cutoff(kind, r, rc, 0.2))(RC))
    fd = (reference(kind, r, RC + h, 0.2) - reference(kind, r, RC - h, 0.2)) / (2 * h)
    assert g == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", ALL)
def test_float32_preserved(kind):
    r32 = jnp.linspace(0.0, 7.0, 15, dtype=jnp.float32)
    f = cutoff(kind, r32, RC, 0.1)
    assert f.dtype == jnp.float32
    g = grad_r(kind, r32, RC, 0.1)
    assert g.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(np.asarray(f), reference(kind, np.asarray(r32, np.float64), RC, 0.1),
                               atol=2e-6)


def test_broadcasting_and_jit():
    r = jnp.linspace(0.0, 8.0, 9)[:, None]
    rc = jnp.array([[4.0, 6.0, 8.0]])
    f = jax.jit(lambda r, rc, a: cutoff("poly2", r, rc, a))(r, rc, jnp.asarray(0.1))
    assert f.shape == (9, 3)
    np.testing.assert_allclose(np.asarray(f), reference("poly2", np.asarray(r), np.asarray(rc), 0.1),
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5])
def test_alpha_validation(alpha):
    with pytest.raises(ValueError, match="alpha"):
        cutoff("cos", 1.0, RC, alpha)
