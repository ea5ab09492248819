"""n2p2 cutoff functions f_c(r) as pure, NaN-safe ``jax.numpy`` functions.

Reproduces ``nnp::CutoffFunction`` (n2p2 ``src/libnnp/CutoffFunction.{h,cpp}`` and the
polynomial/exponential cores of ``CoreFunction.h``) including its floating-point evaluation
order, so that float64 values agree with n2p2 to a few ulps (XLA's exp/cos/tanh may differ
from glibc's by about 1 ulp):

* ``f_c(r) = 0`` for ``r >= r_c`` (checked first, for every type);
* types with an inner cutoff (cos, exp, poly1..poly4) use ``r_ci = alpha * r_c``,
  ``f_c = 1`` for ``r < r_ci`` and ``f_c = f(x)`` with ``x = (r - r_ci) * (1 / (r_c - r_ci))``
  otherwise;
* hard, tanhu and tanh ignore ``alpha`` (n2p2 only logs a warning for tanh/tanhu).

Every function here has a finite value *and* a finite gradient for any ``r >= 0`` (including
``r = 0`` and ``r >= r_c``), obtained with the "double where" trick: the unsafe branch is always
evaluated on a safe dummy argument where it is masked out.

Lengths: ``r``, ``rc`` (and hence ``r_ci``) share one unit, any unit.
"""

from __future__ import annotations

import math
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CUTOFF_TYPES", "CUTOFF_NAMES", "INNER_CUTOFF_TYPES", "cutoff_type_number", "cutoff",
           "TANH_PRE"]

#: n2p2 ``CutoffFunction::CutoffType`` enum, i.e. the first number of ``cutoff_type`` in input.nn.
CUTOFF_TYPES: dict[str, int] = {
    "hard": 0,
    "cos": 1,
    "tanhu": 2,
    "tanh": 3,
    "exp": 4,
    "poly1": 5,
    "poly2": 6,
    "poly3": 7,
    "poly4": 8,
}
#: Inverse of `CUTOFF_TYPES`: type number -> name.
CUTOFF_NAMES: dict[int, str] = {v: k for k, v in CUTOFF_TYPES.items()}
#: Types that honour the inner cutoff r_ci = alpha * r_c.
INNER_CUTOFF_TYPES = frozenset({1, 4, 5, 6, 7, 8})

_PI = 4.0 * math.atan(1.0)          # CutoffFunction::PI
_E = math.exp(1.0)                  # CutoffFunction::E / CoreFunction::E
#: CutoffFunction::TANH_PRE = ((e + 1/e) / (e - 1/e))^3 = coth(1)^3, makes f_c(0) = 1 for "tanh".
TANH_PRE = math.pow((_E + 1.0 / _E) / (_E - 1.0 / _E), 3)

KindLike = Union[int, str]


def cutoff_type_number(kind: KindLike) -> int:
    """Normalise a cutoff type given as n2p2 number or name to the n2p2 number.

    Args:
        kind: integer 0..8 (also a numeric string such as ``"6"``), a name from
            `CUTOFF_TYPES` (case-insensitive) or the n2p2 enum name (``"CT_POLY2"``).

    Returns:
        The n2p2 ``CutoffType`` number.

    Raises:
        ValueError: unknown type.
    """
    if isinstance(kind, (bool, np.bool_)):
        raise ValueError(f"unknown cutoff type {kind!r}")
    if isinstance(kind, (int, np.integer)):
        if int(kind) in CUTOFF_NAMES:
            return int(kind)
        raise ValueError(f"unknown cutoff type {kind!r}; known numbers: {sorted(CUTOFF_NAMES)}")
    if isinstance(kind, str):
        key = kind.strip().lower()
        if key.startswith("ct_"):
            key = key[3:]
        if key.lstrip("+-").isdigit():
            return cutoff_type_number(int(key))
        if key in CUTOFF_TYPES:
            return CUTOFF_TYPES[key]
    raise ValueError(f"unknown cutoff type {kind!r}; known: {CUTOFF_TYPES}")


def _check_alpha(alpha) -> None:
    """Raise ValueError unless 0 <= alpha < 1 (skipped for traced values)."""
    if isinstance(alpha, jax.core.Tracer):
        return
    a = np.asarray(alpha)
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"cutoff alpha must be a number, got {alpha!r}")
    if not np.all((a >= 0.0) & (a < 1.0)):
        raise ValueError(f"cutoff alpha (inner cutoff r_ci = alpha * r_c) must satisfy "
                         f"0 <= alpha < 1, got {alpha!r}")


def _core_poly_exp(t: int, x):
    """f(x) of CT_EXP / CT_POLY1..4 exactly as n2p2's ``CoreFunction::fdf*`` evaluates it."""
    if t == 5:   # poly1: (2x - 3) x^2 + 1
        return (2.0 * x - 3.0) * x * x + 1.0
    if t == 6:   # poly2: ((15 - 6x) x - 10) x^3 + 1
        x2 = x * x
        return ((15.0 - 6.0 * x) * x - 10.0) * x * x2 + 1.0
    if t == 7:   # poly3: (x (x (20x - 70) + 84) - 35) x^4 + 1
        x2 = x * x
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0
    if t == 8:   # poly4: (x (x ((315 - 70x) x - 540) + 420) - 126) x^5 + 1
        x4 = x * x
        x4 = x4 * x4
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x * x4 + 1.0
    # t == 4, exp: e * exp(1 / (x^2 - 1)) = exp(1 - 1 / (1 - x^2))
    return _E * jnp.exp(1.0 / (x * x - 1.0))


def _dtype_of(r, *others):
    r_arr = jnp.asarray(r)
    if jnp.issubdtype(r_arr.dtype, jnp.floating) and not getattr(r_arr, "weak_type", False):
        return r_arr.dtype
    dt = jnp.result_type(r, *others)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(dt, float)
    return dt


def cutoff(kind: KindLike, r, rc, alpha=0.0):
    """n2p2 cutoff function f_c(r) (``CutoffFunction::f``/``fdf``).

    Args:
        kind: cutoff type, n2p2 number 0..8 or name ("hard", "cos", "tanhu", "tanh", "exp",
            "poly1".."poly4"); see `CUTOFF_TYPES`.
        r: distances, any shape, r >= 0 [length].
        rc: outer cutoff radius r_c > 0, scalar or broadcastable to ``r`` [same length unit].
        alpha: inner-cutoff fraction, 0 <= alpha < 1 (scalar or broadcastable); r_ci = alpha r_c.
            Ignored by "hard", "tanhu" and "tanh" (as in n2p2) but still validated.

    Returns:
        f_c(r) with the broadcast shape of ``r``, ``rc``, ``alpha`` and the floating dtype of
        ``r`` (float32 stays float32). Exactly 0 for r >= r_c, exactly 1 for r < r_ci (inner
        cutoff types). Differentiable w.r.t. ``r``, ``rc`` (and ``alpha``) with finite
        gradients everywhere on r >= 0.

    Raises:
        ValueError: unknown ``kind`` or alpha outside [0, 1).
    """
    t = cutoff_type_number(kind)
    _check_alpha(alpha)
    dtype = _dtype_of(r, rc, alpha)
    r = jnp.asarray(r, dtype)
    rc = jnp.asarray(rc, dtype)
    alpha = jnp.asarray(alpha, dtype)
    inside = r < rc
    zero = jnp.zeros((), dtype)
    one = jnp.ones((), dtype)

    if t == 0:
        return jnp.where(inside, one, zero) * jnp.ones_like(r * rc * alpha)

    if t in (2, 3):
        rcinv = 1.0 / rc
        # tanh(1 - r/rc) is finite for any r; mask only for exact zeros beyond rc.
        tmp = jnp.tanh(1.0 - jnp.where(inside, r, zero) * rcinv)
        tmp2 = tmp * tmp
        f = tmp * tmp2 if t == 2 else TANH_PRE * tmp * tmp2   # order of n2p2's fdfTANH(U)
        return jnp.where(inside, f, zero) * jnp.ones_like(alpha)

    rci = rc * alpha
    iw = 1.0 / (rc - rci)
    x = (r - rci) * iw
    mid = inside & (r >= rci)
    if t == 4:
        mid = mid & (x < 1.0)     # n2p2 would give e*exp(+inf) = inf at x == 1 exactly
    xs = jnp.where(mid, x, jnp.asarray(0.5, dtype))
    if t == 1:
        f = 0.5 * (jnp.cos(_PI * xs) + 1.0)
    else:
        f = _core_poly_exp(t, xs)
    return jnp.where(mid, f, jnp.where(inside, one, zero))
