"""n2p2 compact (polynomial) functions: closed forms, derivatives, support, NaN safety."""

import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jnnp.descriptors.compact import (angle_bounds_radians, compact_angular,  # noqa: E402
                                      compact_angular_theta, compact_function, compact_radial,
                                      core_function, parse_subtype)

CORES = ["p1", "p2", "p3", "p4", "e"]


def core_ref(kind, x):
    x = np.asarray(x, dtype=np.float64)
    out = x >= 1.0
    if kind.endswith("a"):
        kind, x = kind[:-1], (2.0 - x) * x
    with np.errstate(all="ignore"):
        f = {"p1": lambda: 2 * x**3 - 3 * x**2 + 1,
             "p2": lambda: -6 * x**5 + 15 * x**4 - 10 * x**3 + 1,
             "p3": lambda: 20 * x**7 - 70 * x**6 + 84 * x**5 - 35 * x**4 + 1,
             "p4": lambda: -70 * x**9 + 315 * x**8 - 540 * x**7 + 420 * x**6 - 126 * x**5 + 1,
             "e": lambda: np.exp(1.0 - 1.0 / (1.0 - x**2))}[kind]()
    return np.where(out, 0.0, f)


def core_dref(kind, x):
    """Closed-form dg/dx (including the asymmetric chain factor)."""
    x = np.asarray(x, dtype=np.float64)
    fac = 1.0
    if kind.endswith("a"):
        kind, fac, x = kind[:-1], 2.0 - 2.0 * x, (2.0 - x) * x
    d = {"p1": lambda: 6 * x**2 - 6 * x,
         "p2": lambda: -30 * x**4 + 60 * x**3 - 30 * x**2,
         "p3": lambda: 140 * x**6 - 420 * x**5 + 420 * x**4 - 140 * x**3,
         "p4": lambda: -630 * x**8 + 2520 * x**7 - 3780 * x**6 + 2520 * x**5 - 630 * x**4,
         "e": lambda: np.exp(1.0 - 1.0 / (1.0 - x**2)) * (-2.0 * x / (1.0 - x**2) ** 2)}[kind]()
    return d * fac


def compact_dref(kind, a, left, right):
    c, w = 0.5 * (left + right), 0.5 * (right - left)
    return core_dref(kind, np.abs(a - c) / w) * np.sign(a - c) / w


def fd(f, x, h=1e-6):
    """Central finite difference of a jnp function at float64 points x."""
    x = jnp.asarray(x, jnp.float64)
    return (np.asarray(f(x + h)) - np.asarray(f(x - h))) / (2 * h)


def compact_ref(kind, a, left, right, closed=False):
    a = np.asarray(a, dtype=np.float64)
    c, w = 0.5 * (left + right), 0.5 * (right - left)
    inside = (a >= left) & (a <= right) if closed else (a > left) & (a < right)
    return np.where(inside, core_ref(kind, np.abs(a - c) / w), 0.0)


def test_parse_subtype():
    assert parse_subtype("p2") == ("p2", False)
    assert parse_subtype("p4a") == ("p4", True)
    assert parse_subtype("e") == ("e", False)
    for bad in ("", "p", "p5", "p2b", "x2", "p2aa"):
        with pytest.raises(ValueError):
            parse_subtype(bad)


@pytest.mark.parametrize("kind", CORES + ["p1a", "p2a", "p3a", "p4a"])
def test_core_values_and_endpoints(kind):
    x = np.array([0.0, 0.1, 0.35, 0.5, 0.77, 0.99, 1.0, 1.3])
    got = np.asarray(core_function(kind, x))
    np.testing.assert_allclose(got, core_ref(kind, x), rtol=1e-13, atol=1e-12)
    assert got[-1] == 0.0 and got[-2] == 0.0
    # the exp core is evaluated as e * exp(-1), which may round to 1 - 2**-53 (XLA and n2p2)
    assert got[0] == pytest.approx(1.0, abs=3e-16)


@pytest.mark.parametrize("kind", CORES + ["p2a"])
def test_core_derivative_and_safety(kind):
    x = np.array([0.05, 0.3, 0.6, 0.9])
    g = np.asarray(jax.vmap(jax.grad(lambda t: core_function(kind, t)))(jnp.asarray(x)))
    np.testing.assert_allclose(g, fd(lambda t: core_function(kind, t), x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g, core_dref(kind, x), rtol=1e-10, atol=1e-12)
    edge = jax.vmap(jax.grad(lambda t: core_function(kind, t)))(jnp.array([0.0, 1.0, 2.0]))
    assert np.all(np.isfinite(np.asarray(edge)))
    assert float(edge[1]) == 0.0 and float(edge[2]) == 0.0


@pytest.mark.parametrize("kind", CORES + ["p3a"])
def test_compact_radial(kind):
    rl, rc = -5.0, 5.0          # rl = -rc: behaves like a cutoff function
    r = np.array([0.0, 0.4, 1.3, 2.5, 3.9, 4.999, 5.0, 7.0])
    got = np.asarray(compact_radial(kind, r, rl, rc))
    np.testing.assert_allclose(got, compact_ref(kind, r, rl, rc), rtol=1e-13, atol=1e-12)
    assert got[0] == pytest.approx(1.0, abs=3e-16) and got[-1] == 0.0 and got[-2] == 0.0
    # bump between rl = 1 and rc = 4: zero at and below rl
    got = np.asarray(compact_radial(kind, r, 1.0, 4.0))
    np.testing.assert_allclose(got, compact_ref(kind, r, 1.0, 4.0), rtol=1e-13, atol=1e-12)
    rr = np.array([1.4, 2.2, 3.1, 3.8])
    g = np.asarray(jax.vmap(jax.grad(lambda t: compact_radial(kind, t, 1.0, 4.0)))(jnp.asarray(rr)))
    np.testing.assert_allclose(g, fd(lambda t: compact_radial(kind, t, 1.0, 4.0), rr), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g, compact_dref(kind, rr, 1.0, 4.0), rtol=1e-10, atol=1e-12)
    gb = jax.vmap(jax.grad(lambda t: compact_radial(kind, t, 1.0, 4.0)))(jnp.array([0.0, 1.0, 2.5, 4.0, 9.0]))
    gb = np.asarray(gb)
    assert np.all(np.isfinite(gb)) and gb[0] == 0.0 and gb[-1] == 0.0 and gb[-2] == 0.0


def test_compact_radial_per_column_subtypes():
    r = jnp.linspace(0.0, 6.0, 13)[:, None]
    rl = jnp.array([[-5.0, 0.5, 1.0]])
    rc = jnp.array([[5.0, 5.5, 4.0]])
    subs = ("p2", "e", "p4a")
    got = np.asarray(compact_radial(subs, r, rl, rc))
    assert got.shape == (13, 3)
    for k, s in enumerate(subs):
        np.testing.assert_allclose(got[:, k], compact_ref(s, np.asarray(r[:, 0]), float(rl[0, k]),
                                                          float(rc[0, k])), rtol=1e-13, atol=1e-12)
    with pytest.raises(ValueError):
        compact_radial(("p2", "e"), r, rl, rc)


def test_compact_function_generic():
    a = np.array([-3.0, -1.0, 0.2, 1.0, 2.5])
    np.testing.assert_allclose(np.asarray(compact_function("p2", a, -1.0, 3.0)),
                               compact_ref("p2", a, -1.0, 3.0), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("kind", CORES)
def test_compact_angular(kind):
    left, right = angle_bounds_radians(60.0, 150.0)
    assert left == 60.0 * math.pi / 180.0
    theta = np.array([0.0, 0.5, 1.2, 1.9, 2.5, 2.7, math.pi])
    got = np.asarray(compact_angular_theta(kind, theta, left, right))
    np.testing.assert_allclose(got, compact_ref(kind, theta, float(left), float(right), closed=True),
                               rtol=1e-13, atol=1e-12)
    via_cos = np.asarray(compact_angular(kind, np.cos(theta), left, right))
    np.testing.assert_allclose(via_cos, got, rtol=1e-10, atol=1e-12)
    # derivative w.r.t. cos: d/dcos = f'(theta) * (-1/sin theta)
    th = np.array([1.2, 1.9, 2.5])
    f = lambda c: compact_angular(kind, c, left, right)  # noqa: E731
    g = np.asarray(jax.vmap(jax.grad(f))(jnp.cos(th)))
    np.testing.assert_allclose(g, fd(f, np.cos(th)), rtol=1e-6, atol=1e-7)
    ref = compact_dref(kind, th, float(left), float(right)) * (-1.0 / np.sin(th))
    np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


def test_compact_angular_collinear_and_safety():
    left, right = angle_bounds_radians(-90.0, 90.0)   # centred at 0 degrees
    assert float(compact_angular_theta("p2", 0.0, left, right)) == 1.0
    # n2p2 skips |cos| >= 1 exactly: collinear triplets contribute nothing
    c = jnp.array([1.0, -1.0, 0.999999, 0.0])
    got = np.asarray(compact_angular("p2", c, left, right))
    assert got[0] == 0.0 and got[1] == 0.0 and got[2] > 0.99 and got[3] == 0.0
    g = np.asarray(jax.vmap(jax.grad(lambda x: compact_angular("e", x, left, right)))(c))
    assert np.all(np.isfinite(g))


def test_float32_preserved():
    r32 = jnp.linspace(0.0, 6.0, 7, dtype=jnp.float32)
    for s in CORES:
        assert compact_radial(s, r32, -5.0, 5.0).dtype == jnp.float32
        assert core_function(s, r32 / 6).dtype == jnp.float32
        assert compact_angular(s, jnp.cos(r32 / 2), 0.5, 2.0).dtype == jnp.float32
        g = jax.vmap(jax.grad(lambda t: compact_radial(s, t, -5.0, 5.0)))(r32)
        assert g.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(g)))
