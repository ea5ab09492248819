"""Element-decoupled global extended Kalman filter (ED-GEKF), as optax-style transformation.

The weights w are split into blocks b (default: one block per element network, all other
trainable leaves in one further block). An update uses m observations y (e.g. the energy per
atom of a structure and a few of its force components) with Jacobian rows H_b = ∂y/∂w_b
(n_b × m) and errors ξ = y_ref − y(w) (m,). With a forgetting factor λ_k (fading memory, Blank &
Brown 1994) and the decoupled form of Puskorius & Feldkamp (1991), as used by RuNNer and n2p2
(Singraber et al., J. Chem. Theory Comput. 15, 3075 (2019), section 2.3):

    X_b = P_b H_b                                  (n_b × m)
    A   = λ_k I_m + Σ_b H_bᵀ X_b                   (m × m, shared by all blocks)
    K_b = X_b A⁻¹                                  (Kalman gain)
    w_b ← w_b + K_b ξ
    P_b ← (P_b − K_b X_bᵀ) / λ_k + q_k I
    λ_{k+1} = ν λ_k + 1 − ν                        (λ → 1; RuNNer kalman_lambda_short, kalman_nue_short)
    q_k = max(q_0 e^{−k/τ_q}, q_min)               (optional process noise; off by default)

with P_b initialised to I/ε. For λ ≡ 1 and q = 0 this is recursive least squares: after all rows
(x_i, y_i) of a linear model have been seen once from w = 0, w = (XᵀX + ε I)⁻¹ Xᵀ y exactly.

The update is computed through the Cholesky factor A = L Lᵀ: with Y_b = X_b L⁻ᵀ and z = L⁻¹ ξ,
K_b ξ = Y_b z and K_b X_bᵀ = Y_b Y_bᵀ, a product whose (i, j) and (j, i) entries are the same sums,
so P_b stays symmetric without a transposed pass over it. The cost is one read of each P_b for
X_b and one rank-m update of it: the n_b × n_b matrices dominate (memory-bound), everything else
is n_b × m. An update whose Y_b or z is not finite (a non-finite Jacobian or error, or A not
positive definite) is skipped as a whole: weights, P, λ and the update count stay as they were,
decided on those small arrays instead of a finiteness check over P.

References:
    J. Blank and S. D. Brown, "Adaptive, global, extended Kalman filters for training
    feedforward neural networks", J. Chemometrics 8, 391–407 (1994).
    G. V. Puskorius and L. A. Feldkamp, "Decoupled extended Kalman filter training of feedforward
    layered networks", IJCNN-91 Seattle, vol. 1, 771–777 (1991).
    A. Singraber, T. Morawietz, J. Behler and C. Dellago, "Parallel multistream training of
    high-dimensional neural network potentials", J. Chem. Theory Comput. 15, 3075–3092 (2019).

Use `kalman_filter` as an optax ``GradientTransformationExtraArgs`` whose ``update`` takes the
Jacobian rows (a pytree like the parameters with a leading axis m) in place of gradients and
the errors as ``errors=``; `kalman_update` applies one update; `make_kalman_train_step` builds
the HDNNP train step (per-structure energy and randomly selected force components).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jnnp.train.batch import make_batch_properties_fn
from jnnp.train.loss import LossConfig, combine_terms, loss_terms
from jnnp.train.step import TrainState, merge_trainable, trainable_params

__all__ = ["KalmanState", "element_block", "parameter_blocks", "kalman_filter", "kalman_update",
           "make_kalman_train_step"]


class KalmanState(NamedTuple):
    """``P``: per block (n_b, n_b) error covariance; ``lam``: forgetting factor λ_k;
    ``count``: number of updates applied (skipped ones not counted)."""

    P: tuple
    lam: Any
    count: Any


def element_block(path) -> tuple:
    """Default block key of a parameter leaf: ``("networks", c)`` inside ``params["networks"][c]``,
    otherwise ``("rest",)``."""
    keys = [getattr(k, "key", getattr(k, "idx", getattr(k, "name", None))) for k in path]
    if len(keys) >= 2 and keys[0] == "networks":
        return ("networks", keys[1])
    return ("rest",)


def parameter_blocks(params, block_of: Callable = element_block):
    """Static block layout: for each leaf (in ``jax.tree`` order) its block number, and the
    list of block keys (sorted by first appearance)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    keys, ids = [], []
    for path, _ in leaves:
        k = block_of(path)
        if k not in keys:
            keys.append(k)
        ids.append(keys.index(k))
    return tuple(ids), keys


def _block_vectors(tree, ids, n_blocks, lead: int = 0):
    """Concatenate the leaves of each block: per block (*lead_shape, n_b)."""
    leaves = jax.tree.leaves(tree)
    out = [[] for _ in range(n_blocks)]
    for leaf, b in zip(leaves, ids):
        leaf = jnp.asarray(leaf)
        out[b].append(leaf.reshape(leaf.shape[:lead] + (-1,)))
    return [jnp.concatenate(parts, axis=-1) for parts in out]


def kalman_filter(lambda0: float = 0.98, nu: float = 0.9987, epsilon: float = 0.01, *,
                  q0: float = 0.0, q_tau: float = 1000.0, q_min: float = 0.0,
                  block_of: Callable = element_block) -> optax.GradientTransformationExtraArgs:
    """The ED-GEKF (module docstring) as an optax-style transformation.

    Args:
        lambda0: initial forgetting factor λ_0 (RuNNer ``kalman_lambda_short``; 1 = no forgetting).
        nu: λ relaxation ν (RuNNer ``kalman_nue_short``).
        epsilon: P_b is initialised to I/ε.
        q0, q_tau, q_min: process noise q_k = max(q0 exp(−k/q_tau), q_min) added to diag P.
        block_of: leaf path → hashable block key (default `element_block`).

    ``init(params)``; ``update(jacobian_rows, state, params=None, *, errors, valid=True)`` with
    ``jacobian_rows`` a pytree like ``params`` whose leaves have a leading axis of m
    observations, ``errors`` (m,) = y_ref − y and ``valid`` a () bool (False: skip this update,
    e.g. for a non-finite loss); returns ``(updates, state)``, apply with ``optax.apply_updates``.
    Rows of zeros (with error 0) leave the weights unchanged, which masks observations. A skipped
    update (``valid`` False or non-finite intermediates) returns zero updates and the same state.
    """

    def init(params):
        ids, keys = parameter_blocks(params, block_of)
        sizes = [0] * len(keys)
        for leaf, b in zip(jax.tree.leaves(params), ids):
            sizes[b] += int(np.prod(np.shape(leaf)))
        dtype = jnp.result_type(*[jnp.asarray(x).dtype for x in jax.tree.leaves(params)])
        P = tuple(jnp.eye(n, dtype=dtype) / epsilon for n in sizes)
        return KalmanState(P=P, lam=jnp.asarray(lambda0, dtype), count=jnp.zeros((), jnp.int32))

    def update(jacobian_rows, state, params=None, *, errors, valid=True, **extra):
        ref = jacobian_rows if params is None else params
        ids, keys = parameter_blocks(ref, block_of)
        nb = len(keys)
        H = _block_vectors(jacobian_rows, ids, nb, lead=1)          # per block (m, n_b)
        dtype = state.P[0].dtype
        xi = jnp.asarray(errors, dtype)
        m = xi.shape[0]
        lam = state.lam
        X = [P @ h.T.astype(dtype) for P, h in zip(state.P, H)]      # (n_b, m)
        A = lam * jnp.eye(m, dtype=dtype)
        for h, x in zip(H, X):
            A = A + h.astype(dtype) @ x
        L = jnp.linalg.cholesky(0.5 * (A + A.T))
        solve = functools.partial(jax.scipy.linalg.solve_triangular, L, lower=True)
        Y = [solve(x.T).T for x in X]                                 # X_b L⁻ᵀ, (n_b, m)
        z = solve(xi)                                                 # L⁻¹ ξ, (m,)
        ok = (jnp.asarray(valid) & jnp.all(jnp.isfinite(z))
              & jnp.all(jnp.stack([jnp.all(jnp.isfinite(y)) for y in Y])))
        # a skipped update leaves P bit-identical: (P − 0) / 1 + 0
        Y = [jnp.where(ok, y, 0.0) for y in Y]
        z = jnp.where(ok, z, 0.0)
        lam_eff = jnp.where(ok, lam, 1.0)
        if q0 > 0 or q_min > 0:
            q = jnp.maximum(q0 * jnp.exp(-state.count.astype(dtype) / q_tau), q_min)
            q = jnp.where(ok, q, 0.0)
        else:
            q = None
        newP = []
        for P, y in zip(state.P, Y):
            Pn = (P - y @ y.T) / lam_eff
            newP.append(Pn if q is None else Pn + q * jnp.eye(P.shape[0], dtype=dtype))
        dw = [y @ z for y in Y]
        # split the block vectors back into leaves (shapes: Jacobian leaves without the row axis)
        rows, treedef = jax.tree.flatten(jacobian_rows)
        dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(ref)]
        offsets = [0] * nb
        out = []
        for leaf, b, dt in zip(rows, ids, dtypes):
            shape = np.shape(leaf)[1:]
            size = int(np.prod(shape))
            out.append(dw[b][offsets[b]:offsets[b] + size].reshape(shape).astype(dt))
            offsets[b] += size
        updates = jax.tree.unflatten(treedef, out)
        new_lam = jnp.where(ok, nu * lam + (1.0 - nu), lam)
        return updates, KalmanState(P=tuple(newP), lam=new_lam, count=state.count + ok.astype(state.count.dtype))

    return optax.GradientTransformationExtraArgs(init, update)


def kalman_update(params, state: KalmanState, jacobian_rows, errors, *, kalman=None):
    """One Kalman update: returns ``(new_params, new_state)``.

    Args:
        params: parameter pytree w; state: `KalmanState` (from ``kalman.init(params)``).
        jacobian_rows: pytree like ``params``, leaves with leading axis m: ∂y_r/∂w.
        errors: (m,) y_ref − y(w).
        kalman: the `kalman_filter` transformation whose ``init`` made ``state`` (its ν, process
            noise and block layout are used here; λ_k and P live in ``state``); None: default
            settings.
    """
    kalman = kalman_filter() if kalman is None else kalman
    updates, state = kalman.update(jacobian_rows, state, params, errors=errors)
    return optax.apply_updates(params, updates), state


def make_kalman_train_step(spec, kalman, loss_cfg: LossConfig = LossConfig(), *, forces_per_update: int = 8,
                           seed: int = 0, energy_unit: float | None = None, force_unit: float | None = None,
                           jit: bool = True):
    """``train_step(state, batch) -> (state, metrics)`` updating with the Kalman filter.

    Observations of a batch: the energy per atom Ê_s/N_s of every labelled structure, and
    ``forces_per_update`` force components drawn at random (without replacement, key from
    (seed, state.step)) among the labelled ones (none when ``loss_cfg.force_weight == 0``).
    Rows and errors are normalised as n2p2 trains in normalised units: energy rows divided by
    ``energy_unit`` [eV/atom] and force rows by ``force_unit`` [eV/Å] (e.g. the spread of the
    per-atom energies and the RMS force of the training set; None: the potential's energy unit
    ``params["energy"]["scale"]``), then multiplied by √weight (energy_weight / force_weight: an
    observation noise variance λ/weight). The Jacobian ∂y/∂w comes from ``jax.jacrev``
    (reverse-over-reverse for the force rows). ``metrics`` are those of the loss before the
    update, as in `jnnp.train.step.make_train_step`; non-finite updates are skipped.
    """
    use_forces = loss_cfg.uses_forces and forces_per_update > 0
    props = make_batch_properties_fn(spec, forces=use_forces, stress=False)
    K = int(forces_per_update) if use_forces else 0
    base_key = jax.random.PRNGKey(seed)

    def train_step(state: TrainState, batch):
        trainable = trainable_params(state.params)
        dtype = jnp.asarray(state.params["energy"]["scale"]).dtype
        n_atoms = jnp.asarray(batch.n_atoms).astype(dtype)
        e_valid = batch.structure_mask & batch.has_energy
        if K:
            f_valid = jnp.repeat((batch.graph.atom_mask & batch.has_forces[batch.atom_structure]), 3)
            key = jax.random.fold_in(base_key, state.step)
            scores = jnp.where(f_valid, jax.random.uniform(key, f_valid.shape), -1.0)
            _, sel = jax.lax.top_k(scores, min(K, f_valid.shape[0]))
            sel_valid = f_valid[sel]

        def observe(tr):
            pred = props(merge_trainable(state.params, tr), batch)
            y = [pred["energy"] / n_atoms]
            if K:
                y.append(pred["forces"].reshape(-1)[sel])
            y = jnp.concatenate(y)
            return y, (y, pred)

        H, (y, pred) = jax.jacrev(observe, has_aux=True)(trainable)
        scale = jnp.asarray(state.params["energy"]["scale"]).astype(dtype)
        e_unit = scale if energy_unit is None else jnp.asarray(energy_unit, dtype)
        f_unit = scale if force_unit is None else jnp.asarray(force_unit, dtype)
        y_ref = [jnp.asarray(batch.energy).astype(dtype) / n_atoms]
        valid = [e_valid]
        weight = [jnp.full(e_valid.shape, math.sqrt(loss_cfg.energy_weight), dtype) / e_unit]
        if K:
            y_ref.append(jnp.asarray(batch.forces).astype(dtype).reshape(-1)[sel])
            valid.append(sel_valid)
            weight.append(jnp.full(sel.shape, math.sqrt(loss_cfg.force_weight), dtype) / f_unit)
        y_ref, valid, weight = jnp.concatenate(y_ref), jnp.concatenate(valid), jnp.concatenate(weight)
        r = jnp.where(valid, weight, 0.0)
        xi = jnp.where(valid, (y_ref - y), 0.0) * r
        H = jax.tree.map(lambda h: h * r.reshape((-1,) + (1,) * (h.ndim - 1)).astype(h.dtype), H)
        terms = loss_terms(pred, batch)
        loss = combine_terms(terms, loss_cfg)
        # the filter skips the update itself (P untouched) when the loss or its own
        # intermediates are not finite; its update count says whether it did
        updates, opt_state = kalman.update(H, state.opt_state, trainable, errors=xi, valid=jnp.isfinite(loss))
        ok = opt_state.count > state.opt_state.count
        params = merge_trainable(state.params, optax.apply_updates(trainable, updates))
        return (TrainState(step=state.step + ok.astype(state.step.dtype), params=params,
                           opt_state=opt_state), {"loss": loss, "finite": ok, **terms})

    return jax.jit(train_step) if jit else train_step
