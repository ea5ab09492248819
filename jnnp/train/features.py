"""Symmetry functions computed once, for training on energies alone.

When the loss has neither a force nor a stress term and no descriptor parameter is trained, the
symmetry functions of every training structure are constants of the run. Computing them in every
step of every epoch would be most of the work (the descriptor of a batch costs far more than two
small dense layers per atom), so `fit` computes them once per structure (`structure_features`)
and trains the element networks on batches of these features (`FeatureBatcher`,
`make_feature_energy_fn`), as n2p2 keeps its symmetry functions in memory. Batches have the same
members, order and capacities as the neighbour-graph batches of the same `Batcher`, so the result
equals that of the uncached path up to floating-point summation order.

Memory: Σ_s N_s · F floats on the host (e.g. 300 000 atoms × 72 functions × 8 B ≈ 170 MB).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jnnp.model.potential import make_element_energy_fn

__all__ = ["FeatureBatch", "FeatureBatcher", "structure_features", "make_feature_energy_fn",
           "make_feature_properties_fn", "cached_feature_properties_fn", "features_apply"]


@struct.dataclass
class FeatureBatch:
    """B structures as per-element rows of unscaled symmetry functions (host numpy arrays).

    Attributes:
        features: per element c, (cap_c, F_c) symmetry functions of its atoms (0 for padding).
        slot: per element c, (cap_c,) int32 structure slot of each row (0 for padding).
        mask: per element c, (cap_c,) bool, False for padding rows.
        structure_mask, n_atoms, energy [eV], has_energy, index: (B,), as in `Batch`.
    """

    features: tuple
    slot: tuple
    mask: tuple
    structure_mask: np.ndarray
    n_atoms: np.ndarray
    energy: np.ndarray
    has_energy: np.ndarray
    index: np.ndarray

    @property
    def n_structures(self) -> int:
        return self.structure_mask.shape[0]


def features_apply(spec, loss_cfg, optimizer: str) -> bool:
    """Whether training can use cached symmetry functions: energies only (no force or stress
    term), no trainable descriptor field, and a gradient optimiser (the Kalman filter's step
    works on neighbour-graph batches)."""
    return (not loss_cfg.uses_forces and not loss_cfg.uses_stress and not spec.descriptor.trainable
            and optimizer != "kalman")


def structure_features(spec, params, batcher) -> list:
    """Unscaled symmetry functions of every structure of ``batcher``.

    Returns a list (one entry per structure, in ``batcher.structures`` order) of tuples with one
    (n_{s,c}, F_c) float array per element c (the structure's atoms of that element, in atom
    order). Uses the jitted descriptor program of the normalisation pass (no new compilation for
    the same batcher).
    """
    from jnnp.train.normalize import _descriptor_energy_fn

    dtype = jnp.asarray(params["energy"]["scale"]).dtype
    fn = _descriptor_energy_fn(spec, jnp.dtype(dtype).name)
    out = [None] * len(batcher)
    T = len(spec.elements)
    for batch in batcher.batches():
        G, _ = fn(params, batch)
        G = [np.asarray(g) for g in G]
        graph = batch.graph
        rows = [(np.asarray(graph.element_mask[c]),
                 np.asarray(batch.atom_structure)[np.asarray(graph.element_atoms[c])]) for c in range(T)]
        for k in np.flatnonzero(batch.structure_mask):
            out[int(batch.index[k])] = tuple(G[c][m & (s == k)] for c, (m, s) in enumerate(rows))
    return out


class FeatureBatcher:
    """Batches of cached symmetry functions with the members and capacities of ``batcher``'s
    neighbour-graph batches (same epoch order for the same seed, same per-element capacities,
    so as few compiled shapes).

    Args:
        batcher: the `jnnp.train.batch.Batcher` over the structures.
        features: `structure_features` of the same structures.
    """

    def __init__(self, batcher, features):
        if len(features) != len(batcher):
            raise ValueError(f"{len(features)} feature sets for {len(batcher)} structures")
        self.batcher = batcher
        self.features = features
        self.batch_size = batcher.batch_size
        self.n_features = tuple(f.shape[1] for f in features[0])
        self._whole = None

    def __len__(self) -> int:
        return len(self.batcher)

    def n_batches(self, drop_last: bool = False) -> int:
        return self.batcher.n_batches(drop_last)

    def order(self, epoch: int | None = None, seed: int = 0) -> np.ndarray:
        return self.batcher.order(epoch, seed)

    def batch(self, members) -> FeatureBatch:
        """The batch of the structures at positions ``members`` (at most ``batch_size``).

        A batch of the whole set (full-batch optimisers) is built once, in index order (the loss
        is a mean over structures, so their order changes nothing but rounding)."""
        members = [int(i) for i in members]
        if len(members) == len(self) and len(set(members)) == len(self):
            if self._whole is None:
                self._whole = self._collate(sorted(members))
            return self._whole
        return self._collate(members)

    def _collate(self, members) -> FeatureBatch:
        caps = self.batcher.sizer.sizes(members)["elements"]
        B = self.batch_size
        feats, slots, masks = [], [], []
        for c, (cap, F) in enumerate(zip(caps, self.n_features)):
            parts = [self.features[i][c] for i in members]
            n = sum(len(p) for p in parts)
            x = np.zeros((cap, F), parts[0].dtype)
            slot = np.zeros(cap, np.int32)
            if n:
                x[:n] = np.concatenate(parts)
                slot[:n] = np.repeat(np.arange(len(members), dtype=np.int32), [len(p) for p in parts])
            feats.append(x)
            slots.append(slot)
            masks.append(np.arange(cap) < n)
        structures = [self.batcher.structures[i] for i in members]
        smask = np.zeros(B, bool)
        smask[:len(members)] = True
        n_atoms = np.ones(B)
        energy = np.zeros(B)
        has_e = np.zeros(B, bool)
        index = np.full(B, -1, np.int32)
        for k, (i, s) in enumerate(zip(members, structures)):
            n_atoms[k], index[k] = s.n_atoms, i
            if s.energy is not None:
                energy[k], has_e[k] = s.energy, True
        return FeatureBatch(features=tuple(feats), slot=tuple(slots), mask=tuple(masks), structure_mask=smask,
                            n_atoms=n_atoms, energy=energy, has_energy=has_e, index=index)

    def batches(self, epoch: int | None = None, seed: int = 0, drop_last: bool = False, start: int = 0):
        """Iterate over the batches of an epoch, as `Batcher.batches`."""
        order = self.order(epoch, seed)
        B = self.batch_size
        for k in range(start, self.n_batches(drop_last)):
            yield self.batch(order[k * B:(k + 1) * B])


def make_feature_energy_fn(spec):
    """``energy_fn(params, feature_batch) -> (B,)`` energies [eV] of a `FeatureBatch`.

    Differentiable w.r.t. the network, scaling and energy parameters (not the geometry: no forces).
    Empty slots get 0.
    """
    element_energy_fn = make_element_energy_fn(spec)

    def energy_fn(params, fb):
        dtype = jnp.asarray(params["energy"]["scale"]).dtype
        B = fb.structure_mask.shape[0]
        e = jnp.zeros(B, dtype)
        for c, x in enumerate(fb.features):
            e_c = element_energy_fn(params, c, jnp.asarray(x).astype(dtype)) * fb.mask[c]
            e = e + jax.ops.segment_sum(e_c, fb.slot[c], num_segments=B)
        return e

    return energy_fn


def make_feature_properties_fn(spec):
    """``properties_fn(params, feature_batch) -> {"energy": (B,)}`` [eV] (the interface of
    `jnnp.train.batch.make_batch_properties_fn`, without forces)."""
    energy_fn = make_feature_energy_fn(spec)
    return lambda params, fb: {"energy": energy_fn(params, fb)}


@functools.lru_cache(maxsize=8)
def cached_feature_properties_fn(spec):
    """Jitted `make_feature_properties_fn`, memoised per spec (validation in every epoch)."""
    return jax.jit(make_feature_properties_fn(spec))
