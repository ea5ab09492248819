"""Symmetry-function hyperparameters as unconstrained parameters, and the map back to the spec.

The learnable hyperparameters are η [Å⁻²], r_s [Å], ζ and r_c [Å] (λ stays discrete). Each is
stored in a *raw* pytree of unconstrained reals u, and mapped to a valid value v by a transform
(``FieldTransform``), so that no gradient step can produce an invalid function:

* ``"log"``:      v = lo + exp(u)                       (v > lo; scale-free, the default for η)
* ``"softplus"``: v = lo + softplus(u)                  (v > lo; the default for ζ, lo = 0)
* ``"bounded"``:  v = lo + (hi − lo) · sigmoid(u)       (lo < v < hi; the default for r_c)
* ``"ordered"``:  per group, sorted ascending: v_0 = u_0 (or lo + softplus(u_0) with a lower
  bound), v_k = v_{k−1} + softplus(u_k)                 (strictly increasing; the default for r_s)
* ``"free"``:     v = u.

Ordering groups are the functions of one central element that agree in every other static
field (type, neighbours, λ, η, ζ, r_c, ...) — e.g. the r_s of one (centre, neighbour) radial
grid — so the columns keep their identity during training. A field applies only to the
function types that use it (η, r_s: exponential types 2, 3, 9, 12, 13; ζ: 3, 9, 13; r_c: all);
the other entries stay the spec's constants.

Learnable r_c changes which neighbours matter: neighbour graphs must be built for the largest
r_c reachable, ``SFParameterization.graph_spec`` (r_c at its upper bound ``hi``).

ζ < 1 is allowed by the default ``lo = 0`` but makes (1 + λ cos θ)^ζ non-smooth at
λ cos θ = −1 (large forces near collinear triplets); pass ``FieldTransform("softplus", 1.0)``
for ζ > 1 when the spec's ζ are all above 1.

Saturating transforms clip the raw value at |u| = 30 (module constant ``U_MAX``), so that the
value stays strictly inside its range in float64: values closer than ≈ e⁻³⁰ (relative) to a
bound are not representable.

The raw pytree is ``{"elements": ({field: (k_cf,)}, ...)}`` (only fields with learnable entries
for element c have a key); `SFParameterization.values` maps it to the pytree
``params["descriptor"]`` of a potential whose descriptor spec is `trainable_spec` (differentiable),
and `to_spec` to a plain (static) `DescriptorSpec`.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.params import field_values, spec_with_params
from jnnp.descriptors.spec import DescriptorSpec

__all__ = [
    "HYPER_FIELDS",
    "TRANSFORMS",
    "FieldTransform",
    "SFParameterization",
    "default_transform",
    "softplus_inverse",
]

HYPER_FIELDS = ("eta", "rs", "zeta", "rc")
TRANSFORMS = ("log", "softplus", "bounded", "ordered", "free")
_EXP_TYPES = frozenset({2, 3, 9, 12, 13})
APPLIES = {"eta": _EXP_TYPES, "rs": _EXP_TYPES, "zeta": frozenset({3, 9, 13}), "rc": None}
U_MAX = 30.0
_GROUP_FIELDS = ("type", "neighbors", "lam", "eta", "zeta", "rc", "rl", "angle_left", "angle_right",
                 "subtype", "rs")


def softplus_inverse(x):
    """u with softplus(u) = x for x > 0 (numpy or jax), stable for small and large x."""
    xp = jnp if isinstance(x, jax.Array) else np
    return x + xp.log(-xp.expm1(-x))


@dataclasses.dataclass(frozen=True)
class FieldTransform:
    """How one field is parameterised (module docstring); ``lo``/``hi`` in the field's unit."""

    kind: str
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self):
        if self.kind not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.kind!r}; expected one of {TRANSFORMS}")
        if self.kind in ("log", "softplus") and self.lo is None:
            object.__setattr__(self, "lo", 0.0)
        if self.kind == "bounded" and (self.lo is None or self.hi is None or not self.lo < self.hi):
            raise ValueError(f"transform 'bounded' needs lo < hi, got lo={self.lo}, hi={self.hi}")

    def contains(self, v: float) -> bool:
        lo_ok = self.lo is None or v > self.lo
        hi_ok = self.hi is None or self.kind != "bounded" or v < self.hi
        return lo_ok and hi_ok


def default_transform(field: str, spec: DescriptorSpec) -> FieldTransform:
    """η: log (> 0); ζ: softplus (> 0); r_s: ordered; r_c: bounded in (0.5 min r_c, 1.25 max r_c)."""
    if field == "eta":
        return FieldTransform("log", 0.0)
    if field == "zeta":
        return FieldTransform("softplus", 0.0)
    if field == "rs":
        return FieldTransform("ordered")
    if field == "rc":
        rcs = [sf.rc for fs in spec.functions for sf in fs]
        return FieldTransform("bounded", 0.5 * min(rcs), 1.25 * max(rcs))
    raise ValueError(f"unknown hyperparameter field {field!r}; expected one of {HYPER_FIELDS}")


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Learnable entries of one (element, field): spec column indices in raw order, and for
    ordered fields which raw entries start a group (tuples: hashable, static)."""

    field: str
    index: tuple[int, ...]
    start: tuple[bool, ...]
    first: tuple[int, ...]      # raw position of the first entry of each entry's group


@dataclasses.dataclass(frozen=True)
class SFParameterization:
    """Static map between raw parameters and symmetry-function hyperparameters (hashable).

    Build with `SFParameterization.create`. Attributes: ``spec`` (the reference spec, giving
    the structure, the constant fields and the default values), ``fields``, ``transforms``
    (per field, same order), ``layouts`` (per element, one `_Layout` per field with entries).
    """

    spec: DescriptorSpec
    fields: tuple[str, ...]
    transforms: tuple[FieldTransform, ...]
    layouts: tuple[tuple[_Layout, ...], ...]

    @classmethod
    def create(cls, spec: DescriptorSpec, fields=("eta", "rs"), transforms: dict | None = None,
               ) -> SFParameterization:
        """Parameterise ``fields`` (subset of ``HYPER_FIELDS``) of ``spec``.

        Args:
            spec: descriptor spec whose values are the starting point.
            fields: which hyperparameters become learnable.
            transforms: optional ``{field: FieldTransform}`` overriding `default_transform`.

        Raises:
            ValueError: unknown field/transform, a spec value outside its transform's range
                (naming element, column, field, value), or equal r_s within an ordering group.
        """
        unknown = (set(fields) | set(transforms or {})) - set(HYPER_FIELDS)
        if unknown:
            raise ValueError(f"unknown hyperparameter field(s) {sorted(unknown)}; expected {HYPER_FIELDS}")
        fields = tuple(f for f in HYPER_FIELDS if f in fields)
        spec = dataclasses.replace(spec, trainable=())
        tf = {f: (transforms or {}).get(f) or default_transform(f, spec) for f in fields}
        layouts = []
        for c, fs in enumerate(spec.functions):
            per = []
            for f in fields:
                cols = [k for k, sf in enumerate(fs) if APPLIES[f] is None or sf.type in APPLIES[f]]
                if not cols:
                    continue
                t = tf[f]
                vals = field_values(spec, c, f)
                for k in cols:
                    if not t.contains(vals[k]):
                        raise ValueError(
                            f"element Z={spec.elements[c]}, symmetry function {k} ({fs[k]}): {f} = {vals[k]} "
                            f"is outside the range of transform {t}; freeze {f} or change its bounds")
                per.append(_layout(spec, c, f, cols, t))
            layouts.append(tuple(per))
        return cls(spec, fields, tuple(tf[f] for f in fields), tuple(layouts))

    # ---- specs ---------------------------------------------------------------------------------
    def transform(self, field: str) -> FieldTransform:
        return self.transforms[self.fields.index(field)]

    @property
    def trainable_spec(self) -> DescriptorSpec:
        """The spec with the parameterised fields read from ``params["descriptor"]``."""
        return self.spec.with_trainable(self.fields)

    @property
    def graph_spec(self) -> DescriptorSpec:
        """Spec for building neighbour graphs: learnable r_c at the transform's upper bound, so
        that every pair within any reachable cutoff is in the graph (static, not trainable)."""
        if "rc" not in self.fields:
            return self.spec
        hi = self.transform("rc").hi
        funcs = []
        for c, fs in enumerate(self.spec.functions):
            cols = set(next((lay.index for lay in self.layouts[c] if lay.field == "rc"), ()))
            funcs.append(tuple(dataclasses.replace(sf, rc=hi) if k in cols else sf for k, sf in enumerate(fs)))
        return dataclasses.replace(self.spec, functions=tuple(funcs))

    # ---- raw <-> values ------------------------------------------------------------------------
    def init_raw(self, spec: DescriptorSpec | None = None, dtype=np.float64) -> dict:
        """Raw parameters (numpy) that reproduce the values of ``spec`` (default: the reference
        spec). ``spec`` must have the same functions apart from the parameterised fields."""
        spec = self.spec if spec is None else spec
        self._check_structure(spec)
        out = []
        for c, lays in enumerate(self.layouts):
            d = {}
            for lay in lays:
                t = self.transform(lay.field)
                v = field_values(spec, c, lay.field)[list(lay.index)]
                bad = [k for k, x in zip(lay.index, v) if not t.contains(x)]
                if bad:
                    raise ValueError(f"element Z={spec.elements[c]}: {lay.field} of function(s) {bad} outside "
                                     f"the range of {t}")
                d[lay.field] = _inverse(t, v, lay).astype(dtype)
            out.append(d)
        return {"elements": tuple(out)}

    def values(self, raw: dict) -> dict:
        """The descriptor parameter pytree (``params["descriptor"]`` of a potential with
        descriptor `trainable_spec`): per element ``{field: (n_c,)}``. Differentiable in raw."""
        out = []
        for c, lays in enumerate(self.layouts):
            d = {}
            by_field = {lay.field: lay for lay in lays}
            for f in self.fields:
                const = field_values(self.spec, c, f)
                if f not in by_field:
                    d[f] = jnp.asarray(const)
                    continue
                lay = by_field[f]
                u = jnp.asarray(raw["elements"][c][f])
                v = _forward(self.transform(f), u, lay)
                d[f] = jnp.asarray(const, u.dtype).at[np.asarray(lay.index, np.int64)].set(v)
            out.append(d)
        return {"elements": tuple(out)}

    def to_spec(self, raw: dict) -> DescriptorSpec:
        """A static `DescriptorSpec` with the values of ``raw`` (concrete arrays only)."""
        vals = jax.tree.map(lambda x: np.asarray(x, np.float64), self.values(raw))
        return dataclasses.replace(spec_with_params(self.spec, vals), trainable=())

    def labels(self, raw: dict) -> dict:
        """Pytree like ``raw`` whose leaves are the field names (for `optax.multi_transform`)."""
        return {"elements": tuple({f: f for f in d} for d in raw["elements"])}

    def _check_structure(self, spec: DescriptorSpec) -> None:
        ok = spec.elements == self.spec.elements and len(spec.functions) == len(self.spec.functions)
        if ok:
            for a, b in zip(spec.functions, self.spec.functions):
                ok &= len(a) == len(b) and all(x.type == y.type and x.neighbors == y.neighbors and x.lam == y.lam
                                               for x, y in zip(a, b))
        if not ok:
            raise ValueError("the spec does not have the same symmetry functions (types, neighbours, λ) as "
                             "the parameterisation's reference spec")


def _layout(spec: DescriptorSpec, c: int, field: str, cols: list[int], t: FieldTransform) -> _Layout:
    if t.kind != "ordered":
        n = len(cols)
        return _Layout(field, tuple(cols), (True,) * n, tuple(range(n)))
    fs = spec.functions[c]
    groups: dict = {}
    for k in cols:
        key = tuple(getattr(fs[k], g) for g in _GROUP_FIELDS if g != field)
        groups.setdefault(key, []).append(k)
    index, start, first = [], [], []
    for members in groups.values():
        members = sorted(members, key=lambda k: getattr(fs[k], field))
        vals = [getattr(fs[k], field) for k in members]
        if any(b <= a for a, b in itertools.pairwise(vals)):
            raise ValueError(f"element Z={spec.elements[c]}: functions {members} share every parameter but "
                             f"{field} and have equal {field} values {vals}; an ordered {field} needs distinct "
                             "values (remove the duplicates)")
        f0 = len(index)
        for j, k in enumerate(members):
            index.append(k), start.append(j == 0), first.append(f0)
    return _Layout(field, tuple(index), tuple(start), tuple(first))


def _forward(t: FieldTransform, u, lay: _Layout):
    # Raw values are clipped to |u| ≤ U_MAX where a transform saturates (exp, softplus and
    # sigmoid tails), so that in float64 the value stays *strictly* inside its range and
    # increments of ordered fields stay resolvable (e^-30 ≈ 1e-13): a bound is never reached.
    if t.kind == "log":
        return t.lo + jnp.exp(jnp.maximum(u, -U_MAX))
    if t.kind == "softplus":
        return t.lo + jax.nn.softplus(jnp.maximum(u, -U_MAX))
    if t.kind == "bounded":
        return t.lo + (t.hi - t.lo) * jax.nn.sigmoid(jnp.clip(u, -U_MAX, U_MAX))
    if t.kind == "free":
        return u
    start = np.asarray(lay.start)
    pos = jax.nn.softplus(jnp.maximum(u, -U_MAX))
    head = u if t.lo is None else t.lo + pos
    inc = jnp.where(start, head, pos)
    cs = jnp.cumsum(inc)
    base = (cs - inc)[np.asarray(lay.first, np.int64)]
    return cs - base


def _inverse(t: FieldTransform, v: np.ndarray, lay: _Layout) -> np.ndarray:
    v = np.asarray(v, np.float64)
    if t.kind == "log":
        return np.log(v - t.lo)
    if t.kind == "softplus":
        return softplus_inverse(v - t.lo)
    if t.kind == "bounded":
        p = (v - t.lo) / (t.hi - t.lo)
        return np.log(p) - np.log1p(-p)
    if t.kind == "free":
        return v.copy()
    u = np.empty_like(v)
    for j, (s, f0) in enumerate(zip(lay.start, lay.first)):
        if s:
            u[j] = v[j] if t.lo is None else softplus_inverse(v[j] - t.lo)
        else:
            u[j] = softplus_inverse(v[j] - v[j - 1])
    return u
