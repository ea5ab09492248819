"""n2p2 neural-network activation functions, keyed by their input.nn character.

Follows ``NeuralNetwork::propagateLayer`` (n2p2 ``src/libnnp/NeuralNetwork.cpp``) including its
clamping of the logistic and softplus functions at |x| > 35 (``EXP_LIMIT``) and its literal
formulas (e.g. softplus is ``log(1 + exp(x))``, *not* ``log1p``), so float64 values match n2p2
to a few ulps (XLA's transcendental functions may differ from glibc's by about 1 ulp).
Gradients are those of the same expressions (they equal n2p2's analytic ``dfdx`` up to
rounding) and are finite everywhere.

========  ==========  ==================================================
char      name        f(x)
========  ==========  ==================================================
``l``     identity    x
``t``     tanh        tanh(x)
``s``     logistic    1/(1 + exp(-x)); 1 for x > 35, 0 for x < -35
``p``     softplus    log(1 + exp(x)); x for x > 35, 0 for x < -35
``r``     relu        x for x > 0, else 0
``g``     gaussian    exp(-x^2/2)
``c``     cos         cos(x)
``S``     revlogistic 1 - 1/(1 + exp(-x))   (no clamping)
``e``     exp         exp(-x)
``h``     harmonic    x^2
========  ==========  ==================================================
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "ACTIVATION_NAMES", "EXP_LIMIT", "get_activation", "activation_char",
           "identity", "tanh", "logistic", "softplus", "relu", "gaussian", "cos", "revlogistic",
           "exp", "harmonic"]

#: n2p2's ``EXP_LIMIT``: beyond |x| > 35 logistic/softplus are replaced by their asymptotes.
EXP_LIMIT = 35.0


def identity(x):
    """``l``: f(x) = x. Shape/dtype preserved."""
    return jnp.asarray(x)


def tanh(x):
    """``t``: f(x) = tanh(x)."""
    return jnp.tanh(x)


def logistic(x):
    """``s``: f(x) = 1/(1 + exp(-x)); exactly 1 for x > 35 and 0 for x < -35 (n2p2 clamp)."""
    x = jnp.asarray(x)
    hi, lo = x > EXP_LIMIT, x < -EXP_LIMIT
    xs = jnp.where(hi | lo, jnp.zeros((), x.dtype), x)
    val = 1.0 / (1.0 + jnp.exp(-xs))
    return jnp.where(hi, jnp.ones((), x.dtype), jnp.where(lo, jnp.zeros((), x.dtype), val))


def softplus(x):
    """``p``: f(x) = log(1 + exp(x)); x for x > 35, 0 for x < -35 (n2p2 clamp)."""
    x = jnp.asarray(x)
    hi, lo = x > EXP_LIMIT, x < -EXP_LIMIT
    xs = jnp.where(hi | lo, jnp.zeros((), x.dtype), x)
    val = jnp.log(1.0 + jnp.exp(xs))
    return jnp.where(hi, x, jnp.where(lo, jnp.zeros((), x.dtype), val))


def relu(x):
    """``r``: f(x) = x for x > 0, else 0 (gradient 0 at x = 0, as n2p2's dfdx)."""
    x = jnp.asarray(x)
    return jnp.where(x > 0.0, x, jnp.zeros((), x.dtype))


def gaussian(x):
    """``g``: f(x) = exp(-x^2/2), evaluated as exp(-0.5 * x * x)."""
    x = jnp.asarray(x)
    return jnp.exp(-0.5 * x * x)


def cos(x):
    """``c``: f(x) = cos(x)."""
    return jnp.cos(x)


def revlogistic(x):
    """``S``: f(x) = 1 - 1/(1 + exp(-x)) (n2p2 does not clamp this one).

    The exponential argument is limited internally to keep the gradient finite; the value is
    unchanged (it is exactly 0 or 1 in float64 long before the limit is reached).
    """
    x = jnp.asarray(x)
    big = jnp.abs(x) > 700.0
    xs = jnp.where(big, jnp.zeros((), x.dtype), x)
    val = 1.0 - 1.0 / (1.0 + jnp.exp(-xs))
    return jnp.where(big, jnp.where(x > 0, jnp.zeros((), x.dtype), jnp.ones((), x.dtype)), val)


def exp(x):
    """``e``: f(x) = exp(-x)."""
    return jnp.exp(-jnp.asarray(x))


def harmonic(x):
    """``h``: f(x) = x^2 (evaluated as x * x)."""
    x = jnp.asarray(x)
    return x * x


#: n2p2 activation character -> function (elementwise, shape- and dtype-preserving).
ACTIVATIONS: dict[str, Callable] = {
    "l": identity,
    "t": tanh,
    "s": logistic,
    "p": softplus,
    "r": relu,
    "g": gaussian,
    "c": cos,
    "S": revlogistic,
    "e": exp,
    "h": harmonic,
}

#: Long names (lower case) -> n2p2 character.
ACTIVATION_NAMES: dict[str, str] = {
    "identity": "l", "linear": "l",
    "tanh": "t",
    "logistic": "s", "sigmoid": "s",
    "softplus": "p",
    "relu": "r",
    "gaussian": "g",
    "cos": "c", "cosine": "c",
    "revlogistic": "S",
    "exp": "e",
    "harmonic": "h",
}


def activation_char(char_or_name: str) -> str:
    """The n2p2 character for an activation given by character or long name.

    Single characters are case-sensitive (``"s"`` logistic vs ``"S"`` revlogistic); long names
    are case-insensitive.

    Raises:
        ValueError: unknown activation.
    """
    if not isinstance(char_or_name, str):
        raise ValueError(f"activation must be a string, got {char_or_name!r}")
    key = char_or_name.strip()
    if key in ACTIVATIONS:
        return key
    if key.lower() in ACTIVATION_NAMES:
        return ACTIVATION_NAMES[key.lower()]
    raise ValueError(f"unknown activation function {char_or_name!r}; n2p2 characters: "
                     f"{' '.join(ACTIVATIONS)}; names: {', '.join(ACTIVATION_NAMES)}")


def get_activation(char_or_name: str) -> Callable:
    """Activation function for an n2p2 character (``"t"``) or a long name (``"tanh"``).

    Returns:
        Elementwise function ``f(x) -> array`` of the same shape and dtype.

    Raises:
        ValueError: unknown activation (the message lists the valid ones).
    """
    return ACTIVATIONS[activation_char(char_or_name)]
