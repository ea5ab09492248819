"""Static description of a symmetry-function set (n2p2 conventions), per central element.

A `SymFunc` records one symmetry function as n2p2 defines it; a `DescriptorSpec` groups them per
central element in n2p2's sort order, which fixes the column order of the descriptor matrix and of
``scaling.data``. Specs are frozen and hashable (they are static under jit); the continuous
numbers (η, r_s, r_c, ζ, r_l) are copied into a parameter pytree by
`jnnp.descriptors.params.init_descriptor_params` so that `jax.grad` can reach them — for the
fields named in ``DescriptorSpec.trainable`` only. Fields that are not trainable are compile-time
constants, which lets the descriptor use integer powers for ζ and share one cutoff evaluation per
distinct r_c (several times faster); opt in to gradients w.r.t. η, r_s, r_c, ζ, r_l or α with
`DescriptorSpec.with_trainable`.
"""

from __future__ import annotations

import dataclasses

__all__ = ["SymFunc", "DescriptorSpec", "TRAINABLE_FIELDS", "RADIAL_TYPES", "ANGULAR_TYPES", "WEIGHTED_TYPES",
           "NARROW_TYPES", "COMPACT_TYPES", "sort_key"]

RADIAL_TYPES = frozenset({2, 12, 20, 23})
ANGULAR_TYPES = frozenset({3, 9, 13, 21, 22, 24, 25})
WEIGHTED_TYPES = frozenset({12, 13, 23, 24, 25})
# Narrow angular functions include the j–k distance (and need r_jk < r_c).
NARROW_TYPES = frozenset({3, 13, 21, 24})
COMPACT_TYPES = frozenset({20, 21, 22, 23, 24, 25})
TRAINABLE_FIELDS = ("eta", "rs", "rc", "zeta", "rl", "alpha")


@dataclasses.dataclass(frozen=True, order=False)
class SymFunc:
    """One symmetry function.

    Attributes:
        type: n2p2 type number (2, 3, 9, 12, 13, 20–25).
        center: atomic number of the central element.
        neighbors: atomic numbers of the neighbour element(s): () for weighted types, (e,) for
            radial, (e1, e2) with Z(e1) ≤ Z(e2) for angular.
        rc: cutoff radius [length unit of the model, Å inside jnnp].
        eta: Gaussian width η [1/length²] (exponential types).
        rs: Gaussian shift r_s [length] (exponential types).
        lam: λ = ±1 (exponential angular types).
        zeta: ζ ≥ 1 (exponential angular types).
        rl: lower radial bound r_l [length] (compact types).
        angle_left, angle_right: angular support [degrees] (compact angular types).
        subtype: compact core function ("p1".."p4", optionally with suffix, or "e").
    """

    type: int
    center: int
    neighbors: tuple[int, ...]
    rc: float
    eta: float = 0.0
    rs: float = 0.0
    lam: float = 1.0
    zeta: float = 1.0
    rl: float = 0.0
    angle_left: float = 0.0
    angle_right: float = 0.0
    subtype: str = ""

    def __post_init__(self):
        if self.type not in RADIAL_TYPES | ANGULAR_TYPES:
            raise ValueError(f"unsupported symmetry function type {self.type}")
        want = 0 if self.type in WEIGHTED_TYPES else (1 if self.type in RADIAL_TYPES else 2)
        if len(self.neighbors) != want:
            raise ValueError(f"type {self.type} needs {want} neighbour element(s), got {self.neighbors}")
        if want == 2 and self.neighbors[0] > self.neighbors[1]:
            object.__setattr__(self, "neighbors", tuple(sorted(self.neighbors)))
        if not self.rc > 0:
            raise ValueError(f"cutoff radius must be > 0, got {self.rc}")

    @property
    def is_radial(self) -> bool:
        return self.type in RADIAL_TYPES

    @property
    def is_weighted(self) -> bool:
        return self.type in WEIGHTED_TYPES

    @property
    def is_narrow(self) -> bool:
        return self.type in NARROW_TYPES

    @property
    def is_compact(self) -> bool:
        return self.type in COMPACT_TYPES

    def scaled_length(self, factor: float) -> "SymFunc":
        """The same function with lengths multiplied by ``factor`` (η divided by factor²)."""
        return dataclasses.replace(self, rc=self.rc * factor, rs=self.rs * factor, rl=self.rl * factor,
                                   eta=self.eta / factor**2)


def sort_key(sf: SymFunc, element_index: dict[int, int]) -> tuple:
    """n2p2's per-element order (``SymFnc*::operator<``): type first, then type-specific fields."""
    ne = tuple(element_index[z] for z in sf.neighbors)
    t = sf.type
    if t in (2, 3, 9, 12, 13):
        # cutoff type/alpha are global in n2p2, so they never decide the order
        return (t, sf.rc, sf.eta, sf.rs, sf.zeta, sf.lam, *ne)
    return (t, sf.subtype, *ne, sf.rc, sf.rl, sf.angle_left, sf.angle_right)


@dataclasses.dataclass(frozen=True)
class DescriptorSpec:
    """All symmetry functions of a model, per central element, in n2p2 order.

    Attributes:
        elements: atomic numbers, ascending (n2p2 element order).
        functions: per element (same order), the tuple of its `SymFunc` in n2p2 sort order.
        cutoff_type: n2p2 cutoff function type number (global, as in n2p2).
        cutoff_alpha: inner-cutoff fraction α ∈ [0, 1) (global).
        trainable: numeric fields that live in the parameter pytree (differentiable), a subset of
            ``TRAINABLE_FIELDS``; the others are constants of the compiled program.
    """

    elements: tuple[int, ...]
    functions: tuple[tuple[SymFunc, ...], ...]
    cutoff_type: int = 2
    cutoff_alpha: float = 0.0
    trainable: tuple[str, ...] = ()

    def __post_init__(self):
        bad = set(self.trainable) - set(TRAINABLE_FIELDS)
        if bad:
            raise ValueError(f"unknown trainable descriptor field(s) {sorted(bad)}; "
                             f"expected a subset of {TRAINABLE_FIELDS}")
        object.__setattr__(self, "trainable", tuple(f for f in TRAINABLE_FIELDS if f in self.trainable))

    def with_trainable(self, fields=TRAINABLE_FIELDS) -> "DescriptorSpec":
        """The same spec with ``fields`` (e.g. ``("eta", "rs")``) made differentiable parameters."""
        return dataclasses.replace(self, trainable=tuple(fields))

    @classmethod
    def from_functions(cls, elements, functions, cutoff_type: int = 2, cutoff_alpha: float = 0.0,
                       sort: bool = True, trainable=()) -> "DescriptorSpec":
        """Group a flat list of `SymFunc` by central element (and sort it as n2p2 does)."""
        elements = tuple(sorted(int(z) for z in elements))
        index = {z: i for i, z in enumerate(elements)}
        per = [[] for _ in elements]
        for sf in functions:
            for z in (sf.center, *sf.neighbors):
                if z not in index:
                    raise ValueError(f"symmetry function {sf} uses element Z={z} not in {elements}")
            per[index[sf.center]].append(sf)
        if sort:
            per = [sorted(p, key=lambda s: sort_key(s, index)) for p in per]
        if not 0.0 <= cutoff_alpha < 1.0:
            raise ValueError(f"cutoff alpha must lie in [0, 1), got {cutoff_alpha}")
        return cls(elements, tuple(tuple(p) for p in per), int(cutoff_type), float(cutoff_alpha),
                   tuple(trainable))

    @property
    def n_elements(self) -> int:
        return len(self.elements)

    @property
    def n_features(self) -> tuple[int, ...]:
        return tuple(len(f) for f in self.functions)

    @property
    def cutoff(self) -> float:
        """Largest cutoff radius of any function (the neighbour-list radius)."""
        return max(sf.rc for fs in self.functions for sf in fs)

    def element_index(self, z: int) -> int:
        return self.elements.index(z)

    def scaled_length(self, factor: float) -> "DescriptorSpec":
        return dataclasses.replace(self, functions=tuple(tuple(sf.scaled_length(factor) for sf in fs)
                                                          for fs in self.functions))
