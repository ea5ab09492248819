"""Static evaluation plan: which neighbour blocks each symmetry function reads.

Pairs are split into blocks by (central element c, neighbour element e) and triplets by
(c, e1 ≤ e2); every symmetry function is a sum over the blocks it matches (weighted types over all
blocks of c, each with its constant Z weight). The plan is derived once from a `DescriptorSpec`
and shared by the host-side graph builder and the jitted descriptor function.
"""

from __future__ import annotations

import dataclasses
import itertools

from jnnp.descriptors.spec import DescriptorSpec

__all__ = ["Block", "DescriptorPlan", "make_plan"]


@dataclasses.dataclass(frozen=True)
class Block:
    """One pair block (c, e) or triplet block (c, e1, e2) and the columns computed on it.

    Attributes:
        key: element indices, (c, e) or (c, e1, e2).
        columns: column indices (into element c's feature vector) evaluated on this block.
        weights: per column constant factor (Z_e or Z_e1·Z_e2 for weighted types, else 1).
        rc: largest cutoff of these columns: pairs/triplet legs with r ≥ rc contribute nothing and
            are dropped when the graph is built.
        narrow: all columns of a triplet block are narrow, so triplets with r_jk ≥ rc are dropped too.
    """

    key: tuple[int, ...]
    columns: tuple[int, ...]
    weights: tuple[float, ...]
    rc: float
    narrow: bool = False

    @property
    def name(self) -> str:
        return "-".join(map(str, self.key))


@dataclasses.dataclass(frozen=True)
class DescriptorPlan:
    spec: DescriptorSpec
    pair_blocks: tuple[Block, ...]
    triplet_blocks: tuple[Block, ...]

    @property
    def needs_triplets(self) -> bool:
        return bool(self.triplet_blocks)


def make_plan(spec: DescriptorSpec) -> DescriptorPlan:
    """Derive the block plan of a descriptor spec (pure Python, no arrays)."""
    Z = spec.elements
    nel = len(Z)
    pair_blocks, triplet_blocks = [], []
    for c in range(nel):
        fs = spec.functions[c]
        for e in range(nel):
            cols, w, rcs = [], [], []
            for k, sf in enumerate(fs):
                if not sf.is_radial:
                    continue
                if sf.is_weighted:
                    cols.append(k), w.append(float(Z[e]))
                elif sf.neighbors == (Z[e],):
                    cols.append(k), w.append(1.0)
                else:
                    continue
                rcs.append(sf.rc)
            if cols:
                pair_blocks.append(Block((c, e), tuple(cols), tuple(w), float(max(rcs))))
        for e1, e2 in itertools.combinations_with_replacement(range(nel), 2):
            cols, w, narrow, rcs = [], [], True, []
            for k, sf in enumerate(fs):
                if sf.is_radial:
                    continue
                if sf.is_weighted:
                    cols.append(k), w.append(float(Z[e1] * Z[e2]))
                elif sf.neighbors == (Z[e1], Z[e2]):
                    cols.append(k), w.append(1.0)
                else:
                    continue
                narrow &= sf.is_narrow
                rcs.append(sf.rc)
            if cols:
                triplet_blocks.append(Block((c, e1, e2), tuple(cols), tuple(w), float(max(rcs)), narrow))
    return DescriptorPlan(spec, tuple(pair_blocks), tuple(triplet_blocks))
