"""Train M networks in one compiled program: `jax.vmap` over parameters and optimiser states.

All members see the same stream of padded batches (`jnnp.train.batch.Batcher`, epoch order
seeded by ``TrainSettings.seed``); per member they differ in the inputs of `member_arrays` (loss
weights, learning-rate factor) and in a 0/1 mask over the training structures, which removes the
structures outside the member's subset from its loss by clearing their label flags
(``has_energy``/``has_forces``/``has_stress``): `jnnp.train.loss.loss_terms` then averages over
the member's own structures only. One step is therefore exactly the step of
`jnnp.train.step.make_train_step` for that member on the masked batch, with the loss weights
as traced values; a member whose learning rate equals ``TrainSettings.learning_rate`` is
updated bit for bit as by the single-model step. A batch holding none of a member's labelled
structures is no step for that member (its state, optimiser count included, is kept): an Adam
step on a zero gradient would still move the weights along the old momentum.

The loop (`train_members`) mirrors `jnnp.train.loop.fit`: epochs over shuffled batches,
validation after every epoch (one vmapped prediction per batch for all members), the best
parameters per member by validation loss (training loss without a validation set), early stopping
when *every* member has gone ``patience`` epochs without improvement, an optional time limit
(checked after each epoch),
and a non-finite guard per member (a member whose loss or gradient becomes NaN/inf is frozen at
its last good state and reported; the others go on). Not offered: the Kalman filter, weight
averaging (``ema_decay``), resuming from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnnp.model.potential import Potential
from jnnp.train.batch import Batcher, make_batch_properties_fn
from jnnp.train.normalize import refit_shifts
from jnnp.train.loop import TrainSettings, make_optimizer_for
from jnnp.train.loss import loss_terms
from jnnp.train.optim import make_schedule, plateau_scale
from jnnp.train.step import (TrainState, init_train_state, merge_trainable, select_finite, trainable_params,
                             tree_all_finite)

__all__ = ["mask_batch", "weighted_loss", "make_member_step", "make_vmapped_train_step",
           "make_vmapped_eval_fn", "MemberHistory", "train_members"]

TERMS = ("energy", "force", "stress")


def mask_batch(batch, mask):
    """``batch`` with the label flags of structure slots where ``mask`` (B,) is False cleared."""
    return batch.replace(has_energy=batch.has_energy & mask, has_forces=batch.has_forces & mask,
                         has_stress=batch.has_stress & mask)


def weighted_loss(terms: dict, hp: dict):
    """Σ w_t · mse_t over the terms present, with (traced) weights ``hp[f"{t}_weight"]``."""
    loss = hp["energy_weight"] * terms["energy_mse"]
    for t in ("force", "stress"):
        if f"{t}_mse" in terms:
            loss = loss + hp[f"{t}_weight"] * terms[f"{t}_mse"]
    return loss


def make_member_step(spec, optimizer, *, forces: bool = True, stress: bool = False):
    """``step(state, hp, mask, batch) -> (state, metrics)`` of one member (not jitted).

    Args of the returned function:
        state: `TrainState` of the member; hp: dict of () arrays (`member_arrays` entries);
        mask: (B,) bool, the batch slots in the member's subset; batch: `Batch`.
    ``metrics``: ``loss``, ``finite``, ``used`` (the batch held labelled structures of the
    member, so the step was taken), ``grad_norm`` and the `loss_terms` (before the update).
    ``forces``/``stress`` select what is predicted (static; weights may still be 0 per member).
    """
    props = make_batch_properties_fn(spec, forces=forces, stress=stress)
    extra = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def step(state: TrainState, hp, mask, batch):
        b = mask_batch(batch, mask)
        trainable = trainable_params(state.params)

        def f(tr):
            terms = loss_terms(props(merge_trainable(state.params, tr), b), b)
            return weighted_loss(terms, hp), terms

        (loss, terms), grads = jax.value_and_grad(f, has_aux=True)(trainable)
        if extra:
            updates, opt_state = optimizer.update(grads, state.opt_state, trainable, value=loss)
        else:
            updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
        updates = jax.tree.map(lambda u: u * hp["lr_scale"].astype(u.dtype), updates)
        new = TrainState(step=state.step + 1,
                         params=merge_trainable(state.params, optax.apply_updates(trainable, updates)),
                         opt_state=opt_state)
        gnorm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(gnorm) & tree_all_finite(new.params)
        used = sum(terms[f"{t}_count"] for t in TERMS if f"{t}_count" in terms) > 0
        return select_finite(ok & used, new, state), {"loss": loss, "finite": ok, "used": used,
                                                      "grad_norm": gnorm, **terms}

    return step


def make_vmapped_train_step(spec, optimizer, *, forces: bool = True, stress: bool = False):
    """Jitted ``step(states, hp, masks, alive, batch) -> (states, metrics)`` for M members.

    ``states``: stacked `TrainState` (leading axis M); ``hp``: dict of (M,) arrays; ``masks``:
    (M, B) bool; ``alive``: (M,) bool, members that may still be updated (a member whose step is
    not finite or not alive keeps its state). ``metrics``: dict of (M,) arrays.
    """
    member = make_member_step(spec, optimizer, forces=forces, stress=stress)

    def one(state, hp, mask, alive, batch):
        new, m = member(state, hp, mask, batch)
        return select_finite(alive, new, state), m

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None)))


@functools.lru_cache(maxsize=16)
def make_vmapped_eval_fn(spec, *, stress: bool = False):
    """Jitted ``eval(params, batch) -> terms`` with (M,) `loss_terms` of stacked ``params``
    (memoised per spec, so validation and test sets share compiled programs)."""
    props = make_batch_properties_fn(spec, forces=True, stress=stress)
    return jax.jit(jax.vmap(lambda p, b: loss_terms(props(p, b), b), in_axes=(0, None)))


class _Sums:
    """Count-weighted sums of the MSE terms per member over an epoch (host numpy, (M,))."""

    def __init__(self, M: int):
        self.sse = {t: np.zeros(M) for t in TERMS}
        self.n = {t: np.zeros(M) for t in TERMS}

    def add(self, m: dict, rows=None):
        for t in TERMS:
            if f"{t}_mse" in m:
                n = np.asarray(m[f"{t}_count"], np.float64)
                v = np.asarray(m[f"{t}_mse"], np.float64) * n
                if rows is not None:
                    v, n = np.where(rows, v, 0.0), np.where(rows, n, 0.0)
                self.sse[t] += v
                self.n[t] += n

    def mse(self, t) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n[t] > 0, self.sse[t] / np.maximum(self.n[t], 1e-300), np.nan)

    def loss(self, hp: dict) -> np.ndarray:
        total = np.zeros_like(self.sse["energy"])
        for t in TERMS:
            v, w = self.mse(t), np.asarray(hp[f"{t}_weight"], np.float64)
            total += np.where((w != 0) & np.isfinite(v), w * np.nan_to_num(v), 0.0)
        return total

    def rmse_mev(self, t) -> np.ndarray:
        return np.sqrt(self.mse(t)) * 1000.0


@dataclasses.dataclass
class MemberHistory:
    """What `train_members` did.

    Attributes:
        epochs: per-epoch dicts whose values are lists over members (``train_loss``,
            ``train_energy_rmse`` [meV/atom], ``train_force_rmse`` [meV/Å], ``val_*`` likewise,
            ``lr``) plus scalars ``epoch`` (1-based) and ``time_s``.
        best_epoch: (M,) epoch of each member's returned parameters (0: the initial ones).
        best_loss: (M,) its validation (or training) loss.
        stop_reason: ``"completed"``, ``"early stopping"``, ``"time limit"`` or
            ``"all members failed"``.
        failures: member index → message, for members frozen by a non-finite step.
    """

    epochs: list = dataclasses.field(default_factory=list)
    best_epoch: list = dataclasses.field(default_factory=list)
    best_loss: list = dataclasses.field(default_factory=list)
    stop_reason: str = ""
    failures: dict = dataclasses.field(default_factory=dict)

    def member(self, k: int) -> list[dict]:
        """The epoch records of member k as flat dicts (the columns of `jnnp.train.History`)."""
        return [{key: (v[k] if isinstance(v, list) else v) for key, v in rec.items()} for rec in self.epochs]

    def rows(self) -> list[dict]:
        """Long format: one flat dict per (member, epoch)."""
        M = len(self.best_epoch)
        return [{"member": k, **r} for k in range(M) for r in self.member(k)]

    def at_best(self, key: str) -> list:
        """Value of ``key`` at each member's best epoch (NaN where that is epoch 0)."""
        out = []
        for k, e in enumerate(self.best_epoch):
            out.append(self.epochs[e - 1][key][k] if e > 0 and key in self.epochs[e - 1] else math.nan)
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _hp_dtype(hp, dtype):
    return {k: jnp.asarray(v, dtype) for k, v in hp.items()}


def train_members(spec, params, hp: dict, train_set, val_set=None, cfg: TrainSettings | None = None, *,
                  masks=None, train_batcher=None, val_batcher=None, progress: bool = True,
                  callback=None):
    """Train the M members whose initial parameters are stacked in ``params``.

    Args:
        spec: the common `PotentialSpec`.
        params: stacked parameter pytree (leading axis M), e.g. from `init_members`.
        hp: dict of (M,) arrays from `member_arrays` (built with ``cfg.learning_rate`` as the
            reference learning rate).
        train_set, val_set: sequences of labelled `Structure` (val_set may be None/empty).
        cfg: `TrainSettings` (default ``TrainSettings()``) for everything the members share
            (epochs, batch size, optimiser kind and schedule, clipping, shuffle ``seed``,
            ``stress_weight``, ``patience``,
            ``max_time_s``); its learning rate is the reference of ``hp["lr_scale"]`` and its loss
            weights only decide whether forces/stress are predicted at all (when any member
            weights them).
        masks: (M, len(train_set)) bool member subsets (default: all structures).
        train_batcher, val_batcher: prebuilt batchers over the sets (else built here).
        progress: print one line per epoch.
        callback: optional ``callback(record)`` after every epoch.

    Returns:
        (best stacked parameters (host numpy leaves), `MemberHistory`).
    """
    cfg = TrainSettings() if cfg is None else cfg
    if cfg.ema_decay is not None:
        # the members' learning-rate factors scale the updates after the optimiser, which the
        # weight average inside the optimiser would not see
        raise ValueError("train.ema_decay is not offered for vmapped members (sweeps, committees)")
    if cfg.optimizer == "kalman":
        raise ValueError("vectorised training supports the gradient optimisers 'adam' and 'adamw', "
                         "not 'kalman'")
    train_set, val_set = list(train_set), list(val_set or [])
    if not train_set:
        raise ValueError("the training set is empty")
    M = int(np.asarray(hp["lr_scale"]).shape[0])
    if jax.tree.leaves(params)[0].shape[0] != M:
        raise ValueError("params and hp disagree on the number of members")
    masks = np.ones((M, len(train_set)), bool) if masks is None else np.asarray(masks, bool)
    if masks.shape != (M, len(train_set)):
        raise ValueError(f"masks must have shape {(M, len(train_set))}, got {masks.shape}")
    dtype = jnp.asarray(params["energy"]["scale"]).dtype
    hp_np = {k: np.asarray(v, np.float64) for k, v in hp.items()}
    hp_dev = _hp_dtype(hp, dtype)
    forces = bool(np.any(hp_np["force_weight"] > 0))
    stress = bool(np.any(hp_np["stress_weight"] > 0))
    train_b = train_batcher or Batcher(spec, train_set, cfg.batch_size, growth=cfg.growth)
    val_b = (val_batcher or Batcher(spec, val_set, cfg.eval_batch_size or cfg.batch_size, growth=cfg.growth)
             if val_set else None)
    n_batches = train_b.n_batches()
    optimizer = make_optimizer_for(cfg, n_batches)
    schedule = make_schedule(cfg.learning_rate, cfg.schedule, max(1, cfg.epochs * n_batches),
                             cfg.warmup_epochs * n_batches)
    step_fn = make_vmapped_train_step(spec, optimizer, forces=forces, stress=stress)
    eval_fn = make_vmapped_eval_fn(spec, stress=stress)
    states = jax.vmap(lambda p: init_train_state(p, optimizer))(jax.tree.map(jnp.asarray, params))
    best = states.params
    history = MemberHistory(best_epoch=[0] * M, best_loss=[math.inf] * M)
    alive = np.ones(M, bool)
    bad = np.zeros(M, int)
    B = cfg.batch_size
    t_start = time.monotonic()
    stop = ""
    for epoch in range(cfg.epochs):
        t_epoch = time.monotonic()
        order = train_b.order(epoch, cfg.seed)
        sums = _Sums(M)
        for k in range(n_batches):
            members_idx = order[k * B:(k + 1) * B]
            batch = train_b.batch(members_idx)
            idx = np.asarray(batch.index)
            bmask = np.where(idx >= 0, masks[:, np.maximum(idx, 0)], False)
            states, m = step_fn(states, hp_dev, jnp.asarray(bmask), jnp.asarray(alive), batch)
            m = jax.device_get(m)
            failed = alive & ~np.asarray(m["finite"], bool)
            for j in np.flatnonzero(failed):
                names = ", ".join(train_set[int(i)].provenance for i in members_idx)
                history.failures[int(j)] = (f"non-finite loss or gradient at epoch {epoch + 1}, batch {k + 1} "
                                            f"(structures: {names}); member frozen at its last good state")
            alive &= ~failed
            sums.add(m, rows=alive)
        rec = {"epoch": epoch + 1, "train_loss": sums.loss(hp_np).tolist(),
               "train_energy_rmse": sums.rmse_mev("energy").tolist(),
               "train_force_rmse": sums.rmse_mev("force").tolist()}
        if stress:
            rec["train_stress_rmse"] = sums.rmse_mev("stress").tolist()
        if val_b is not None:
            vs = _Sums(M)
            for batch in val_b.batches():
                vs.add(jax.device_get(eval_fn(states.params, batch)))
            score = vs.loss(hp_np)
            rec.update(val_loss=score.tolist(), val_energy_rmse=vs.rmse_mev("energy").tolist(),
                       val_force_rmse=vs.rmse_mev("force").tolist())
            if stress:
                rec["val_stress_rmse"] = vs.rmse_mev("stress").tolist()
        else:
            score = np.asarray(rec["train_loss"])
        steps = np.asarray(states.step)
        scale = np.broadcast_to(np.asarray(plateau_scale(states.opt_state)), (M,))
        rec["lr"] = [float(schedule(int(s))) * float(hp_np["lr_scale"][j]) * float(scale[j])
                     for j, s in enumerate(steps)]
        rec["time_s"] = time.monotonic() - t_epoch
        improved = np.isfinite(score) & (score < np.asarray(history.best_loss)) & alive
        for j in np.flatnonzero(improved):
            history.best_loss[j], history.best_epoch[j] = float(score[j]), epoch + 1
        bad = np.where(improved, 0, bad + 1)
        imp = jnp.asarray(improved)
        best = jax.tree.map(lambda b, s, imp=imp: jnp.where(imp.reshape((-1,) + (1,) * (s.ndim - 1)), s, b),
                            best, states.params)
        rec["best"] = improved.tolist()
        history.epochs.append(rec)
        if progress:
            print(_epoch_line(rec), flush=True)
        if cfg.max_time_s is not None and time.monotonic() - t_start > cfg.max_time_s:
            stop = "time limit"
        if callback is not None:
            callback(rec)
        if stop:
            break
        if not alive.any():
            stop = "all members failed"
            break
        if np.all((bad >= cfg.patience) | ~alive):
            stop = "early stopping"
            break
    history.stop_reason = stop or "completed"
    best = jax.tree.map(np.asarray, best)
    if cfg.refit_shifts:
        best = _refit_member_shifts(spec, best, train_b, masks)
    return best, history


def _refit_member_shifts(spec, best, batcher, masks):
    """Each member's reference energies refitted on its own training subset, as `jnnp.train.fit`
    does for one model (`jnnp.train.normalize.refit_shifts`)."""
    shifts = np.array(best["energy"]["shift"])
    for k in range(shifts.shape[0]):
        member = Potential(spec, jax.tree.map(lambda a, k=k: a[k], best))
        shifts[k] = refit_shifts(member, batcher, include=masks[k]).params["energy"]["shift"]
    return {**best, "energy": {**best["energy"], "shift": shifts}}


def _epoch_line(rec: dict) -> str:
    def rng(key):
        v = np.asarray(rec.get(key, []), np.float64)
        v = v[np.isfinite(v)]
        return f"{v.min():.3g}…{v.max():.3g}" if len(v) else "-"

    line = (f"epoch {rec['epoch']:4d}  train loss {rng('train_loss')}  F {rng('train_force_rmse')} meV/Å")
    if "val_loss" in rec:
        line += f"  | val loss {rng('val_loss')}  E {rng('val_energy_rmse')}  F {rng('val_force_rmse')}"
    return line + f"  ({sum(rec['best'])} improved)"
