"""n2p2 compact-support functions (``CoreFunction`` / ``CompactFunction``) in ``jax.numpy``.

Used by the polynomial symmetry functions (types 20-25, Bircher et al. 2021) and, for the core
functions, by the cutoff types poly1..poly4 and exp. Follows n2p2 ``src/libnnp/CoreFunction.h``,
``CompactFunction.{h,cpp}``, ``SymFncBaseComp.cpp`` (subtype strings) and
``SymFncBaseCompAng.cpp`` (angular part), including their floating-point evaluation order.

Core functions g(x), defined on 0 <= x <= 1 with g(0) = 1, g(1) = 0:

* ``"p1"``: (2x - 3) x^2 + 1
* ``"p2"``: ((15 - 6x) x - 10) x^3 + 1
* ``"p3"``: (x (x (20x - 70) + 84) - 35) x^4 + 1
* ``"p4"``: (x (x ((315 - 70x) x - 540) + 420) - 126) x^5 + 1
* ``"e"`` : e * exp(1 / (x^2 - 1))  ( = exp(1 - 1/(1 - x^2)) )

A trailing ``"a"`` (``"p2a"``) selects the asymmetric variant g((2 - x) x) (polynomials only;
in n2p2 it affects only the radial part, never the angular one).

Compact function on [left, right]: center c = (right + left)/2, width w = (right - left)/2,
f(a) = g(|(a - c) * (1/w)|).

All functions return exactly 0 outside their support and have finite gradients everywhere
(double-where trick). Dtype follows the floating input (float32 stays float32).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import jax.numpy as jnp
import numpy as np

__all__ = ["CORE_TYPES", "parse_subtype", "core_function", "compact_function", "compact_radial",
           "compact_angular", "compact_angular_theta", "angle_bounds_radians"]

#: Core function names accepted by `core_function` (n2p2 ``CoreFunction::Type``).
CORE_TYPES = ("p1", "p2", "p3", "p4", "e")
_E = math.exp(1.0)
_PI = math.pi  # M_PI

Subtypes = Union[str, Sequence[str]]


def parse_subtype(subtype: str) -> tuple[str, bool]:
    """Parse an n2p2 compact subtype string (``SymFncBaseComp::setCompactFunction``).

    Args:
        subtype: ``"pN"`` (N = 1..4), ``"pNa"`` (asymmetric) or a string starting with ``"e"``
            (n2p2 accepts any 1-3 character string starting with "e" as the exp core).

    Returns:
        ``(core, asymmetric)`` with core in `CORE_TYPES`.

    Raises:
        ValueError: invalid subtype (n2p2 raises for these as well).
    """
    s = str(subtype).strip()
    if not 1 <= len(s) <= 3:
        raise ValueError(f"invalid compact function subtype {subtype!r}: expected 'pN', 'pNa' or 'e'")
    if s[0] == "p":
        if len(s) < 2 or s[1] not in "1234":
            raise ValueError(f"invalid polynomial subtype {subtype!r}: expected p1..p4")
        if len(s) == 3 and s[2] != "a":
            raise ValueError(f"invalid polynomial specifier in {subtype!r}: only suffix 'a' allowed")
        return s[:2], len(s) == 3
    if s[0] == "e":
        return "e", False
    raise ValueError(f"unknown compact function subtype {subtype!r}: expected 'pN', 'pNa' or 'e'")


def _core_raw(core: str, x):
    """g(x) in n2p2's ``fdf`` evaluation order; no masking (x must lie in [0, 1))."""
    if core == "p1":
        return (2.0 * x - 3.0) * x * x + 1.0
    if core == "p2":
        x2 = x * x
        return ((15.0 - 6.0 * x) * x - 10.0) * x * x2 + 1.0
    if core == "p3":
        x2 = x * x
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x2 * x2 + 1.0
    if core == "p4":
        x4 = x * x
        x4 = x4 * x4
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x * x4 + 1.0
    if core == "e":
        return _E * jnp.exp(1.0 / (x * x - 1.0))
    raise ValueError(f"unknown core function {core!r}; known: {CORE_TYPES}")


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def core_function(kind: str, x):
    """Core function g(x) of n2p2's ``CoreFunction`` (optionally asymmetric).

    Args:
        kind: ``"p1"``..``"p4"``, ``"e"``; a trailing ``"a"`` (e.g. ``"p3a"``) evaluates the
            asymmetric variant g((2 - x) x).
        x: dimensionless argument, any shape; meaningful on 0 <= x <= 1.

    Returns:
        g(x) for 0 <= x < 1 and exactly 0 for x >= 1, same shape/dtype as ``x``. For x < 0 the
        polynomial (or exp) expression itself is returned (n2p2 never evaluates it there).
    """
    core, asym = parse_subtype(kind)
    x = _float(x)
    ok = x < 1.0
    xs = jnp.where(ok, x, jnp.asarray(0.5, x.dtype))
    if asym:
        xs = (2.0 - xs) * xs
    return jnp.where(ok, _core_raw(core, xs), jnp.zeros((), x.dtype))


def _per_column(subtypes: Subtypes, fn, shape):
    """Evaluate ``fn(core, asymmetric)`` for one subtype or one subtype per last-axis column."""
    if isinstance(subtypes, str):
        return fn(*parse_subtype(subtypes))
    subs = tuple(subtypes)
    if len(shape) == 0 or shape[-1] != len(subs):
        raise ValueError(f"{len(subs)} subtypes given but the last axis has shape {shape}")
    parsed = [parse_subtype(s) for s in subs]
    out = None
    for key in dict.fromkeys(parsed):
        sel = np.array([p == key for p in parsed])
        val = fn(*key)
        out = val if out is None else jnp.where(sel, val, out)
    return out


def _compact_value(core: str, asym: bool, a, center, scale, mask):
    """g(|(a - c) * scale|) where ``mask`` holds, else 0 (with safe gradients)."""
    y = jnp.abs((a - center) * scale)
    ok = mask & (y < 1.0)
    ys = jnp.where(ok, y, jnp.asarray(0.5, y.dtype))
    if asym:
        ys = (2.0 - ys) * ys
    return jnp.where(ok, _core_raw(core, ys), jnp.zeros((), y.dtype))


def compact_function(kind: str, a, left, right):
    """n2p2 ``CompactFunction::f`` set up with ``setLeftRight(left, right)``.

    Args:
        kind: core subtype (``"p1"``..``"p4"``, ``"pNa"``, ``"e"``).
        a: argument, any shape [same unit as left/right].
        left, right: support bounds, left < right, broadcastable to ``a``.

    Returns:
        g(|(a - c)/w|) for left < a < right (open interval), exactly 0 elsewhere.
    """
    a = _float(a)
    left = jnp.asarray(left, a.dtype)
    right = jnp.asarray(right, a.dtype)
    center = (right + left) / 2.0
    scale = 1.0 / ((right - left) / 2.0)
    core, asym = parse_subtype(kind)
    return _compact_value(core, asym, a, center, scale, (a > left) & (a < right))


def compact_radial(subtype: Subtypes, r, rl, rc):
    """Radial compact part of SF types 20-25 (``SymFncBaseComp::cr``).

    n2p2 evaluates it only for rl < r < rc (strict) and uses it as the radial "cutoff"; with
    rl = -rc it behaves like a cutoff function (1 at r = 0), with rl >= 0 it is a bump centred
    at (rl + rc)/2.

    Args:
        subtype: one subtype string, or one per column of the last axis of the broadcast
            result (e.g. ``("p2", "p2a", "e")`` with ``r`` of shape (R, 1) and rl/rc (1, 3)).
        r: distances, r >= 0 [length].
        rl, rc: lower/upper bounds (rl < rc), broadcastable to ``r`` [length].

    Returns:
        Broadcast array of the compact function, 0 outside (rl, rc).
    """
    r = _float(r)
    rl = jnp.asarray(rl, r.dtype)
    rc = jnp.asarray(rc, r.dtype)
    center = (rc + rl) / 2.0
    scale = 1.0 / ((rc - rl) / 2.0)
    mask = (r > rl) & (r < rc)
    shape = jnp.broadcast_shapes(r.shape, rl.shape, rc.shape)
    return _per_column(subtype, lambda c, a: _compact_value(c, a, r, center, scale, mask), shape)


def angle_bounds_radians(left_deg, right_deg) -> tuple[np.ndarray, np.ndarray]:
    """Angular bounds in radians exactly as n2p2 converts them: ``angle * M_PI / 180.0``.

    (``numpy.deg2rad`` multiplies by pi/180 instead and can differ in the last bit.)
    """
    left = np.asarray(left_deg, dtype=np.float64)
    right = np.asarray(right_deg, dtype=np.float64)
    return left * _PI / 180.0, right * _PI / 180.0


def compact_angular_theta(subtype: Subtypes, theta, left, right):
    """Angular compact part as a function of the angle (``SymFncBaseCompAng::ca``).

    Args:
        subtype: subtype string(s) as in `compact_radial`; the asymmetric suffix is ignored
            (n2p2 copies only the core type to the angular function).
        theta: angle theta_ijk [radians], 0 <= theta <= pi.
        left, right: support bounds [radians] (see `angle_bounds_radians`), broadcastable.

    Returns:
        g(|(theta - c)/w|) for left <= theta <= right (n2p2 skips only theta < left or
        theta > right), 0 elsewhere.
    """
    theta = _float(theta)
    left = jnp.asarray(left, theta.dtype)
    right = jnp.asarray(right, theta.dtype)
    center = (right + left) / 2.0
    scale = 1.0 / ((right - left) / 2.0)
    mask = (theta >= left) & (theta <= right)
    shape = jnp.broadcast_shapes(theta.shape, left.shape, right.shape)
    return _per_column(subtype, lambda c, a: _compact_value(c, False, theta, center, scale, mask),
                       shape)


def compact_angular(subtype: Subtypes, cos_theta, left, right):
    """Angular compact part as a function of cos(theta_ijk), with n2p2's exclusions.

    n2p2 (``SymFncCompAngn::calculate`` etc.) skips a triplet when cos <= -1 or cos >= 1, so
    exactly collinear triplets contribute 0 even if the support contains 0 or 180 degrees;
    otherwise theta = acos(cos) and `compact_angular_theta` applies.

    Args:
        subtype: subtype string(s) as in `compact_radial`.
        cos_theta: cosine of the angle at the central atom, any shape.
        left, right: support bounds [radians], broadcastable.

    Returns:
        Broadcast array of the angular compact function (0 at |cos| >= 1 and off support).
    """
    c = _float(cos_theta)
    valid = (c > -1.0) & (c < 1.0)
    theta = jnp.arccos(jnp.where(valid, c, jnp.zeros((), c.dtype)))
    val = compact_angular_theta(subtype, theta, left, right)
    return jnp.where(valid, val, jnp.zeros((), val.dtype))
