"""Training loss of a batch: weighted mean squared errors of energies, forces and stresses.

    L = w_E · mean_s ((Ê_s − E_s)/N_s)²  +  w_F · mean_{i,α} (F̂_iα − F_iα)²
        +  w_σ · mean_{s,ab} (σ̂_s,ab − σ_s,ab)²

in eV²/atom², (eV/Å)² and (eV/Å³)². Means run over the labelled, non-padding entries only
(structures without energy/forces/stress labels and padding slots/atoms are masked out); a term
without any labelled entry in the batch is 0.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jnnp.train.batch import make_batch_properties_fn

__all__ = ["LossConfig", "loss_terms", "combine_terms", "make_loss_fn"]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (force weight in Å², stress weight in Å⁶/atom², relative to
    the per-atom energy term)."""

    energy_weight: float = 1.0
    force_weight: float = 10.0
    stress_weight: float = 0.0

    @property
    def uses_forces(self) -> bool:
        return self.force_weight > 0

    @property
    def uses_stress(self) -> bool:
        return self.stress_weight > 0


def _masked_mse(err, mask, n_per_entry: int = 1):
    """Mean of err² over entries where mask (broadcast) is True, and the count of entries."""
    m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (err.ndim - mask.ndim)), err.shape)
    sq = jnp.where(m, err, 0.0) ** 2
    n = jnp.sum(m)
    return jnp.sum(sq) / jnp.maximum(n, 1), n


def loss_terms(pred: dict, batch) -> dict:
    """Masked error statistics of predictions (`make_batch_properties_fn` output) on a batch.

    Returns a dict of scalars: ``energy_mse`` [(eV/atom)²], ``energy_count``; with forces in
    ``pred``: ``force_mse`` [(eV/Å)²], ``force_count`` (components); with stress:
    ``stress_mse``, ``stress_count``.
    """
    dtype = pred["energy"].dtype
    n_atoms = jnp.asarray(batch.n_atoms).astype(dtype)
    e_err = (pred["energy"] - jnp.asarray(batch.energy).astype(dtype)) / n_atoms
    e_mask = batch.structure_mask & batch.has_energy
    out = {}
    out["energy_mse"], out["energy_count"] = _masked_mse(e_err, e_mask)
    if "forces" in pred:
        f_err = pred["forces"] - jnp.asarray(batch.forces).astype(dtype)
        f_mask = batch.graph.atom_mask & batch.has_forces[batch.atom_structure]
        out["force_mse"], out["force_count"] = _masked_mse(f_err, f_mask)
    if "stress" in pred:
        s_err = pred["stress"] - jnp.asarray(batch.stress).astype(dtype)
        s_mask = batch.structure_mask & batch.has_stress
        out["stress_mse"], out["stress_count"] = _masked_mse(s_err, s_mask)
    return out


def combine_terms(terms: dict, cfg: LossConfig):
    """The weighted sum of the MSE terms present in ``terms``."""
    loss = cfg.energy_weight * terms["energy_mse"]
    if "force_mse" in terms and cfg.force_weight:
        loss = loss + cfg.force_weight * terms["force_mse"]
    if "stress_mse" in terms and cfg.stress_weight:
        loss = loss + cfg.stress_weight * terms["stress_mse"]
    return loss


def make_loss_fn(spec, cfg: LossConfig = LossConfig(), *, forces: bool | None = None,
                 stress: bool | None = None, properties_fn=None):
    """``loss_fn(params, batch) -> (loss, (terms, predictions))``, pure and differentiable.

    ``forces``/``stress`` (default: whether their weight is > 0) select what is predicted;
    predictions include forces whenever they are computed, so metrics can use them.
    ``properties_fn(params, batch) -> dict`` replaces `make_batch_properties_fn` (e.g. the
    energies of cached-feature batches, `jnnp.train.features`).
    """
    forces = cfg.uses_forces if forces is None else forces
    stress = cfg.uses_stress if stress is None else stress
    props = properties_fn or make_batch_properties_fn(spec, forces=forces, stress=stress)

    def loss_fn(params, batch):
        pred = props(params, batch)
        terms = loss_terms(pred, batch)
        return combine_terms(terms, cfg), (terms, pred)

    loss_fn.properties_fn = props
    return loss_fn
