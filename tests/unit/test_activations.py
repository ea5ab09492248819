"""n2p2 activation functions: closed forms, clamping, derivatives, registry.

All activations are evaluated by one jitted function (values and derivatives) so the module
compiles once per dtype.
"""

from functools import partial

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jnnp.model.activations import ACTIVATIONS, get_activation  # noqa: E402

# Cheap XLA compilation (the test graphs are small; LLVM optimisation dominates build time).
_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                          "xla_llvm_disable_expensive_passes": True})

CHARS = list("ltsprgcSeh")
N = 16
X = np.array([-50.0, -36.0, -3.0, -1.2, -0.3, 0.0, 0.4, 1.1, 2.5, 34.0, 36.0, 50.0])

REF = {
    "l": lambda x: x,
    "t": np.tanh,
    "s": lambda x: np.where(x > 35, 1.0, np.where(x < -35, 0.0, 1.0 / (1.0 + np.exp(-x)))),
    "p": lambda x: np.where(x > 35, x, np.where(x < -35, 0.0, np.log(1.0 + np.exp(x)))),
    "r": lambda x: np.maximum(x, 0.0),
    "g": lambda x: np.exp(-0.5 * x**2),
    "c": np.cos,
    "S": lambda x: 1.0 - 1.0 / (1.0 + np.exp(-x)),
    "e": lambda x: np.exp(-x),
    "h": lambda x: x**2,
}
DREF = {
    "l": lambda x: np.ones_like(x),
    "t": lambda x: 1.0 - np.tanh(x) ** 2,
    "s": lambda x: np.where(np.abs(x) > 35, 0.0, np.exp(-x) / (1.0 + np.exp(-x)) ** 2),
    "p": lambda x: np.where(x > 35, 1.0, np.where(x < -35, 0.0, 1.0 / (1.0 + np.exp(-x)))),
    "r": lambda x: np.where(x > 0, 1.0, 0.0),
    "g": lambda x: -x * np.exp(-0.5 * x**2),
    "c": lambda x: -np.sin(x),
    "S": lambda x: -np.exp(-x) / (1.0 + np.exp(-x)) ** 2,
    "e": lambda x: -np.exp(-x),
    "h": lambda x: 2.0 * x,
}


@_jit
def _evaluate(x):
    out = [jax.vmap(jax.value_and_grad(ACTIVATIONS[c]))(x) for c in CHARS]
    return jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])


def evaluate(char, x, dtype=np.float64):
    x = np.asarray(x, dtype=dtype)
    xp = np.concatenate([x, np.zeros(N - x.size, dtype=dtype)])
    return tuple(np.asarray(o[CHARS.index(char), :x.size]) for o in _evaluate(jnp.asarray(xp)))


def test_registry_complete():
    assert set(ACTIVATIONS) == set(CHARS) == set(REF)
    assert get_activation("tanh") is get_activation("t")
    assert get_activation("Sigmoid") is get_activation("s")
    assert get_activation("S") is not get_activation("s")
    assert get_activation("revlogistic") is get_activation("S")
    assert get_activation("identity") is get_activation("l")
    for bad in ("x", "T", "", "swish", 3):
        with pytest.raises(ValueError, match="activation"):
            get_activation(bad)


@pytest.mark.parametrize("char", CHARS)
def test_values(char):
    with np.errstate(over="ignore"):
        ref = REF[char](X)
    f, g = evaluate(char, X)
    np.testing.assert_allclose(f, ref, rtol=1e-14, atol=1e-300)
    assert np.all(np.isfinite(g))


def test_clamping_is_exact():
    f, g = evaluate("s", [36.0, -36.0])
    assert f[0] == 1.0 and f[1] == 0.0 and g[0] == 0.0 and g[1] == 0.0
    f, g = evaluate("p", [36.0, -36.0, -30.0])
    assert f[0] == 36.0 and f[1] == 0.0 and g[0] == 1.0 and g[1] == 0.0
    # n2p2 evaluates log(1 + exp(x)), not log1p(exp(x)): reproduce its rounding
    assert f[2] == pytest.approx(float(np.log(1.0 + np.exp(-30.0))), rel=1e-15, abs=0)
    assert f[2] != pytest.approx(float(np.log1p(np.exp(-30.0))), rel=1e-6, abs=0)


@pytest.mark.parametrize("char", CHARS)
def test_derivatives(char):
    x = np.array([-3.0, -1.2, -0.3, 0.4, 1.1, 2.5, 20.0])
    h = 1e-6
    _, g = evaluate(char, x)
    fd = (evaluate(char, x + h)[0] - evaluate(char, x - h)[0]) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(g, DREF[char](x), rtol=1e-12, atol=1e-14)


def test_extreme_arguments_are_finite():
    x = np.array([-800.0, -36.0, 0.0, 36.0, 600.0])
    for char in CHARS:
        f, g = evaluate(char, x)
        if char == "e":   # exp(-x) overflows at x = -800 in n2p2 as well
            f, g = f[1:], g[1:]
        assert np.all(np.isfinite(f)) and np.all(np.isfinite(g)), (char, f, g)


def test_float32_preserved():
    x = X[2:-2]
    for char in CHARS:
        f, g = evaluate(char, x, dtype=np.float32)
        assert f.dtype == g.dtype == np.float32
        np.testing.assert_allclose(f, REF[char](x.astype(np.float32).astype(np.float64)),
                                   rtol=2e-6, atol=1e-6)
    y = get_activation("t")(jnp.ones((2, 4), jnp.float32))
    assert y.dtype == jnp.float32 and y.shape == (2, 4)
