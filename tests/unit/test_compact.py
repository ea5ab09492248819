"""n2p2 compact (polynomial) functions: closed forms, derivatives, support, NaN safety.

Every core type is evaluated by one jitted function per kind of compact function (values and
gradients) on a fixed-length grid, so the module compiles only a handful of times.
"""

import math

from functools import partial

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jnnp.descriptors.compact import (angle_bounds_radians, compact_angular,  # noqa: E402
                                      compact_angular_theta, compact_function, compact_radial,
                                      core_function, parse_subtype)

# Cheap XLA compilation (the test graphs are small; LLVM optimisation dominates build time).
_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                          "xla_llvm_disable_expensive_passes": True})

CORES = ["p1", "p2", "p3", "p4", "e"]
KINDS = CORES + ["p1a", "p2a", "p3a", "p4a"]
N = 16


def _vg(f, x):
    """Values and elementwise derivatives of a scalar function over a 1-D array."""
    return jax.vmap(jax.value_and_grad(f))(x)


@_jit
def _ev_core(x):
    out = [_vg(lambda t, k=k: core_function(k, t), x) for k in KINDS]
    return jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])


@_jit
def _ev_radial(r, rl, rc):
    out = [_vg(lambda t, k=k: compact_radial(k, t, rl, rc), r) for k in KINDS]
    return jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])


@_jit
def _ev_angular(c, left, right):
    """Values/derivatives w.r.t. cos(theta), plus values as a function of theta = acos(c)."""
    out = [_vg(lambda t, k=k: compact_angular(k, t, left, right), c) for k in CORES]
    th = [compact_angular_theta(k, jnp.arccos(c), left, right) for k in CORES]
    return jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out]), jnp.stack(th)


def _pad(x, dtype=np.float64):
    x = np.asarray(x, dtype=dtype)
    return jnp.asarray(np.concatenate([x, np.full(N - x.size, 0.5, dtype=dtype)])), x.size


def ev_core(kind, x, dtype=np.float64):
    xp, n = _pad(x, dtype)
    return tuple(np.asarray(o[KINDS.index(kind), :n]) for o in _ev_core(xp))


def ev_radial(kind, r, rl, rc, dtype=np.float64):
    rp, n = _pad(r, dtype)
    out = _ev_radial(rp, jnp.asarray(rl, dtype), jnp.asarray(rc, dtype))
    return tuple(np.asarray(o[KINDS.index(kind), :n]) for o in out)


def ev_angular(kind, cos, left, right, dtype=np.float64):
    cp, n = _pad(cos, dtype)
    out = _ev_angular(cp, jnp.asarray(left, dtype), jnp.asarray(right, dtype))
    return tuple(np.asarray(o[CORES.index(kind), :n]) for o in out)


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


def compact_ref(kind, a, left, right, closed=False):
    a = np.asarray(a, dtype=np.float64)
    c, w = 0.5 * (left + right), 0.5 * (right - left)
    inside = (a >= left) & (a <= right) if closed else (a > left) & (a < right)
    return np.where(inside, core_ref(kind, np.abs(a - c) / w), 0.0)


def compact_dref(kind, a, left, right):
    c, w = 0.5 * (left + right), 0.5 * (right - left)
    return core_dref(kind, np.abs(a - c) / w) * np.sign(a - c) / w


def test_parse_subtype():
    assert parse_subtype("p2") == ("p2", False)
    assert parse_subtype("p4a") == ("p4", True)
    assert parse_subtype("e") == ("e", False)
    for bad in ("", "p", "p5", "p2b", "x2", "p2aa"):
        with pytest.raises(ValueError):
            parse_subtype(bad)
        with pytest.raises(ValueError):
            compact_radial(bad, 1.0, 0.0, 2.0)


@pytest.mark.parametrize("kind", KINDS)
def test_core_values_endpoints_and_derivatives(kind):
    x = np.array([0.0, 0.1, 0.35, 0.5, 0.77, 0.99, 1.0, 1.3, 2.0])
    f, g = ev_core(kind, x)
    np.testing.assert_allclose(f, core_ref(kind, x), rtol=1e-13, atol=1e-12)
    assert f[-1] == f[-2] == f[-3] == 0.0 and g[-1] == g[-2] == g[-3] == 0.0
    assert f[0] == pytest.approx(1.0, abs=3e-16)  # e * exp(-1) for "e", as in n2p2
    assert np.all(np.isfinite(g))
    xi, h = np.array([0.05, 0.3, 0.6, 0.9]), 1e-6
    _, gi = ev_core(kind, xi)
    fd = (ev_core(kind, xi + h)[0] - ev_core(kind, xi - h)[0]) / (2 * h)
    np.testing.assert_allclose(gi, fd, rtol=1e-6, atol=1e-7)   # FD, h = 1e-6
    np.testing.assert_allclose(gi, core_dref(kind, xi), rtol=1e-10, atol=1e-12)  # analytic


@pytest.mark.parametrize("kind", KINDS)
def test_compact_radial(kind):
    r = np.array([0.0, 0.4, 1.0, 1.3, 2.5, 3.9, 4.0, 4.999, 5.0, 7.0])
    # rl = -rc: behaves like a cutoff function (1 at r = 0, 0 from rc on)
    f, g = ev_radial(kind, r, -5.0, 5.0)
    np.testing.assert_allclose(f, compact_ref(kind, r, -5.0, 5.0), rtol=1e-13, atol=1e-12)
    assert f[0] == pytest.approx(1.0, abs=3e-16) and f[-1] == f[-2] == 0.0
    assert g[-1] == g[-2] == 0.0 and np.all(np.isfinite(g))
    # bump on (1, 4): zero at/below rl and at/above rc
    f, g = ev_radial(kind, r, 1.0, 4.0)
    np.testing.assert_allclose(f, compact_ref(kind, r, 1.0, 4.0), rtol=1e-13, atol=1e-12)
    assert f[0] == f[2] == f[6] == f[-1] == 0.0 and np.all(np.isfinite(g))
    rr, h = np.array([1.4, 2.2, 3.1, 3.8]), 1e-6
    _, gi = ev_radial(kind, rr, 1.0, 4.0)
    fd = (ev_radial(kind, rr + h, 1.0, 4.0)[0] - ev_radial(kind, rr - h, 1.0, 4.0)[0]) / (2 * h)
    np.testing.assert_allclose(gi, fd, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gi, compact_dref(kind, rr, 1.0, 4.0), rtol=1e-10, atol=1e-12)


def test_compact_radial_per_column_subtypes():
    r = jnp.linspace(0.0, 6.0, 13)[:, None]
    rl = jnp.array([[-5.0, 0.5, 1.0]])
    rc = jnp.array([[5.0, 5.5, 4.0]])
    subs = ("p2", "e", "p4a")
    got = np.asarray(_jit(lambda r, a, b: compact_radial(subs, r, a, b))(r, rl, rc))
    assert got.shape == (13, 3)
    for k, s in enumerate(subs):
        ref = compact_ref(s, np.asarray(r[:, 0]), float(rl[0, k]), float(rc[0, k]))
        np.testing.assert_allclose(got[:, k], ref, rtol=1e-13, atol=1e-12)
    with pytest.raises(ValueError):
        compact_radial(("p2", "e"), r, rl, rc)


def test_compact_function_generic():
    a = np.array([-3.0, -1.0, 0.2, 1.0, 2.5])
    got = _jit(lambda a: compact_function("p2", a, -1.0, 3.0))(jnp.asarray(a))
    np.testing.assert_allclose(np.asarray(got), compact_ref("p2", a, -1.0, 3.0), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("kind", CORES)
def test_compact_angular(kind):
    left, right = angle_bounds_radians(60.0, 150.0)
    assert left == 60.0 * math.pi / 180.0 and right == 150.0 * math.pi / 180.0
    theta = np.array([0.3, 0.5, 1.2, 1.9, 2.5, 2.7, 3.0])
    f, _, f_theta = ev_angular(kind, np.cos(theta), left, right)
    ref = compact_ref(kind, np.arccos(np.cos(theta)), float(left), float(right), closed=True)
    np.testing.assert_allclose(f_theta, ref, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(f, f_theta, rtol=1e-10, atol=1e-13)  # acos may differ by 1 ulp
    th, h = np.array([1.2, 1.9, 2.5]), 1e-6
    c = np.cos(th)
    _, g, _ = ev_angular(kind, c, left, right)
    fd = (ev_angular(kind, c + h, left, right)[0] - ev_angular(kind, c - h, left, right)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    ref_d = compact_dref(kind, np.arccos(c), float(left), float(right)) * (-1.0 / np.sqrt(1.0 - c * c))
    np.testing.assert_allclose(g, ref_d, rtol=1e-10, atol=1e-12)


def test_compact_angular_collinear_and_safety():
    left, right = angle_bounds_radians(-90.0, 90.0)   # centred at 0 degrees
    c = np.array([1.0, -1.0, 0.999999, 0.0, -0.5])
    for kind in CORES:
        f, g, f_theta = ev_angular(kind, c, left, right)
        # n2p2 skips |cos| >= 1 exactly: collinear triplets contribute nothing ...
        assert f[0] == 0.0 and f[1] == 0.0 and f[2] > 0.99 and f[3] == 0.0 and f[4] == 0.0
        # ... although the function of theta itself is ~1 at theta = 0
        assert f_theta[0] == pytest.approx(1.0, abs=3e-16)
        assert np.all(np.isfinite(g)) and g[0] == g[1] == g[3] == 0.0


def test_float32_preserved():
    r = np.linspace(0.0, 6.0, N)
    f, g = ev_radial("p2", r, -5.0, 5.0, dtype=np.float32)
    assert f.dtype == g.dtype == np.float32 and np.all(np.isfinite(g))
    for kind in KINDS:
        f, g = ev_radial(kind, r, -5.0, 5.0, dtype=np.float32)
        # float32 Horner evaluation of p4 near x = 1 loses ~1e-5 absolute
        np.testing.assert_allclose(f, compact_ref(kind, r.astype(np.float32), -5.0, 5.0), atol=1e-4)
    f, g, ft = ev_angular("e", np.cos(r / 2), 0.5, 2.0, dtype=np.float32)
    assert f.dtype == g.dtype == ft.dtype == np.float32 and np.all(np.isfinite(g))
