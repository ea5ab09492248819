"""n2p2 activation functions: closed forms, clamping, derivatives, registry."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jnnp.model.activations import ACTIVATIONS, get_activation  # noqa: E402

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


def test_registry_complete():
    assert set(ACTIVATIONS) == set("ltsprgcSeh") == set(REF)
    assert get_activation("tanh") is get_activation("t")
    assert get_activation("Sigmoid") is get_activation("s")
    assert get_activation("S") is not get_activation("s")
    assert get_activation("revlogistic") is get_activation("S")
    for bad in ("x", "T", "", "swish", 3):
        with pytest.raises(ValueError, match="activation"):
            get_activation(bad)


@pytest.mark.parametrize("char", list(REF))
def test_values(char):
    with np.errstate(over="ignore"):
        ref = REF[char](X)
    np.testing.assert_allclose(np.asarray(get_activation(char)(jnp.asarray(X))), ref,
                               rtol=1e-14, atol=1e-300)


def test_clamping_is_exact():
    s, p = get_activation("s"), get_activation("p")
    assert float(s(36.0)) == 1.0 and float(s(-36.0)) == 0.0
    assert float(p(36.0)) == 36.0 and float(p(-36.0)) == 0.0
    assert float(jax.grad(s)(36.0)) == 0.0 and float(jax.grad(p)(-36.0)) == 0.0
    assert float(jax.grad(p)(36.0)) == 1.0
    # n2p2 uses log(1 + exp(x)), not log1p: reproduce its rounding
    x = -30.0
    assert float(p(x)) == float(np.log(1.0 + np.exp(x)))


@pytest.mark.parametrize("char", list(REF))
def test_derivatives(char):
    x = np.array([-3.0, -1.2, -0.3, 0.4, 1.1, 2.5, 20.0])
    h = 1e-6
    fd = (REF[char](x + h) - REF[char](x - h)) / (2 * h)
    g = np.asarray(jax.vmap(jax.grad(get_activation(char)))(jnp.asarray(x)))
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)
    gall = np.asarray(jax.vmap(jax.grad(get_activation(char)))(jnp.array([-800.0, -36.0, 0.0, 36.0, 600.0])))
    if char not in ("e",):  # exp(-x) overflows for x = -800 in n2p2 as well
        assert np.all(np.isfinite(gall)), (char, gall)


@pytest.mark.parametrize("char", list(REF))
def test_dtype_and_shape_preserved(char):
    x32 = jnp.asarray(X[2:-2].reshape(2, 4), jnp.float32)
    y = get_activation(char)(x32)
    assert y.dtype == jnp.float32 and y.shape == (2, 4)
    np.testing.assert_allclose(np.asarray(y), REF[char](X[2:-2].reshape(2, 4)), rtol=2e-6, atol=1e-6)
