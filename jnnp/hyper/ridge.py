"""Exact hypergradients on a convex sub-problem: a ridge readout on the symmetry functions.

The readout is the HDNNP with no hidden layer: E_s = Σ_i [scale · (w_c · x_i(θ) + b_c) + shift_c]
with x_i the scaled symmetry functions of atom i (element c). Energies *and* forces are linear in
the weights w = {w_c, b_c}:

    E_s = scale · Σ_c (w_c · X_sc + N_sc b_c) + Σ_c N_sc shift_c,   X_sc = Σ_{i ∈ s, c} x_i
    F_a = −scale · Σ_c w_c · ∂T_c/∂R_a,                               T_c = Σ_{i ∈ c} x_i

so each batch gives explicit design matrices (rows: structures, and force components from one
reverse-mode Jacobian of the per-element feature sums T with respect to the positions). The
training loss

    L_train(w, θ) = w_E · MSE(E/N) + w_F · MSE(F) + α Σ w²

(the `jnnp.train.loss` terms, pooled over the training set) is a strictly convex quadratic
½ wᵀM w − rᵀw + const with M = 2 (Σ_rows weight · a aᵀ + α I). Its minimiser is one dense solve;
the validation loss J(θ) = L_val(w*(θ), θ) is differentiated with the implicit function theorem
(`jnnp.hyper.implicit.implicit_solution` with the exact dense solve): the hypergradient is exact
to round-off, which the tests check against central finite differences of the exact solution.
Working with design matrices keeps the derivative order at two (descriptor → positions → θ);
differentiating the loss with forces as a black box would need third derivatives.

With ``rescale`` (default) the scaling statistics are recomputed from the training structures
at θ inside J, so a change of η or r_s is not hidden by stale statistics (min/max scaling is
differentiable almost everywhere).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.scaling import apply_scaling
from jnnp.hyper.implicit import dense_solve, implicit_solution
from jnnp.hyper.learnable import assemble
from jnnp.hyper.outer import OuterResult, run_outer
from jnnp.hyper.param import SFParameterization
from jnnp.hyper.stacked import scaling_from_stack, with_scaling
from jnnp.model.potential import PotentialSpec
from jnnp.train.loss import LossConfig

__all__ = ["RidgeProblem", "RidgeSettings", "linear_spec", "make_ridge_problem", "optimize_ridge"]


@dataclasses.dataclass(frozen=True)
class RidgeSettings:
    """``alpha``: ridge penalty per squared weight [loss units]; loss weights as in
    `jnnp.train.loss.LossConfig`; ``rescale``: scaling statistics recomputed at θ."""

    alpha: float = 1e-4
    energy_weight: float = 1.0
    force_weight: float = 10.0
    rescale: bool = True

    def __post_init__(self):
        if not self.alpha > 0:
            raise ValueError(f"the ridge penalty alpha must be > 0 (strict convexity), got {self.alpha}")

    @property
    def loss(self) -> LossConfig:
        return LossConfig(self.energy_weight, self.force_weight, 0.0)


def linear_spec(spec: PotentialSpec) -> PotentialSpec:
    """The same descriptor and scaling with a linear readout (no hidden layer)."""
    return dataclasses.replace(spec, hidden=(), activations=("l",), normalize_nodes=False)


@dataclasses.dataclass(frozen=True)
class RidgeProblem:
    """The functions of one ridge problem (all pure; ``data = (params0, train_stack)``).

    Attributes:
        train_loss: ``(w, raw, data) -> scalar``, the penalised training loss.
        solve: ``(raw, data) -> w*``, closed form (differentiating it directly differentiates
            through the dense solve; used as an independent check).
        solution: ``(raw, data) -> w*`` with the implicit (IFT) derivative.
        val_loss: ``(w, raw, data, val_stack) -> scalar``, unpenalised validation loss.
        objective: ``(raw, params0, train_stack, val_stack) -> (J, w*)``, through ``solution``.
    """

    train_loss: object
    solve: object
    solution: object
    val_loss: object
    objective: object


def _flat(networks) -> jnp.ndarray:
    """Readout weights in design-column order: per element [w_c (n_c), b_c]."""
    parts = []
    for net in networks:
        layer = net["params"]["layer_0"]
        parts += [jnp.ravel(layer["kernel"]), jnp.ravel(layer["bias"])]
    return jnp.concatenate(parts)


def _networks(flat, template):
    """Inverse of `_flat` with the structure of ``template`` (flax Dense parameters)."""
    out, k = [], 0
    for net in template:
        layer = net["params"]["layer_0"]
        n = layer["kernel"].shape[0]
        out.append({"params": {"layer_0": {"kernel": flat[k:k + n].reshape(n, 1), "bias": flat[k + n:k + n + 1]}}})
        k += n + 1
    return tuple(out)


def _design(spec: PotentialSpec, descriptor_fn, params, batch):
    """Design matrices of one batch for weights in `_flat` order.

    Returns (A_E (B, p) per-atom energy rows, y_E (B,), mask_E (B,), A_F (3A, p), y_F (3A,),
    mask_F (3A,)): predicted E_s/N_s = A_E w + (Σ_c N_sc shift_c)/N_s is folded into y_E.
    """
    dtype = jnp.asarray(params["energy"]["scale"]).dtype
    scale = jnp.asarray(params["energy"]["scale"], dtype)
    shift = jnp.asarray(params["energy"]["shift"], dtype)
    g = batch.graph
    graph = g.replace(pair_shift=jnp.asarray(g.pair_shift).astype(dtype))
    pos = jnp.asarray(batch.positions).astype(dtype)
    B, A = batch.structure_mask.shape[0], pos.shape[0]
    nel = len(spec.descriptor.elements)

    def scaled(p):
        G = descriptor_fn(params["descriptor"], p, jnp.eye(3, dtype=dtype), graph)
        return [apply_scaling(spec.scaling, params["scaling"][c], G[c], spec.scale_min, spec.scale_max)
                * jnp.asarray(g.element_mask[c])[:, None] for c in range(nel)]

    def sums(p):        # T_c: per-element feature sums over the whole batch (structures are disjoint)
        return jnp.concatenate([jnp.sum(x, axis=0) for x in scaled(p)])

    xs = scaled(pos)
    jac = jax.jacrev(sums)(pos).reshape(-1, 3 * A)          # (Σ n_c, 3A)
    cols_E, cols_F, counts, k = [], [], [], 0
    for c in range(nel):
        n = xs[c].shape[1]
        mask = jnp.asarray(g.element_mask[c]).astype(dtype)
        struct = jnp.asarray(batch.atom_structure)[jnp.asarray(g.element_atoms[c])]
        X = jax.ops.segment_sum(xs[c], struct, B)             # (B, n_c)
        N = jax.ops.segment_sum(mask, struct, B)               # (B,)
        cols_E += [X, N[:, None]]
        cols_F += [-jac[k:k + n].T, jnp.zeros((3 * A, 1), dtype)]
        counts.append(N)
        k += n
    n_atoms = jnp.asarray(batch.n_atoms).astype(dtype)
    A_E = scale * jnp.concatenate(cols_E, axis=1) / n_atoms[:, None]
    offset = sum(N * shift[c] for c, N in enumerate(counts))
    y_E = (jnp.asarray(batch.energy).astype(dtype) - offset) / n_atoms
    m_E = jnp.asarray(batch.structure_mask & batch.has_energy)
    A_F = scale * jnp.concatenate(cols_F, axis=1)
    y_F = jnp.asarray(batch.forces).astype(dtype).reshape(-1)
    m_F = jnp.repeat(jnp.asarray(g.atom_mask & batch.has_forces[batch.atom_structure]), 3)
    return A_E, y_E, m_E, A_F, y_F, m_F


def _normal_equations(spec, descriptor_fn, params, stack, cfg: LossConfig):
    """(Q, r, c) with the pooled loss = wᵀQw − 2 rᵀw + c over every batch of ``stack``."""
    def one(batch):
        A_E, y_E, m_E, A_F, y_F, m_F = _design(spec, descriptor_fn, params, batch)
        A_E, y_E = A_E * m_E[:, None], y_E * m_E
        A_F, y_F = A_F * m_F[:, None], y_F * m_F
        return (A_E.T @ A_E, A_E.T @ y_E, y_E @ y_E, jnp.sum(m_E),
                A_F.T @ A_F, A_F.T @ y_F, y_F @ y_F, jnp.sum(m_F))

    QE, rE, cE, nE, QF, rF, cF, nF = jax.tree.map(lambda x: jnp.sum(x, axis=0), jax.lax.map(one, stack))
    wE = cfg.energy_weight / jnp.maximum(nE, 1)
    wF = cfg.force_weight / jnp.maximum(nF, 1) if cfg.uses_forces else 0.0
    return wE * QE + wF * QF, wE * rE + wF * rF, wE * cE + wF * cF


def make_ridge_problem(spec: PotentialSpec, param: SFParameterization, settings: RidgeSettings = RidgeSettings()
                       ) -> RidgeProblem:
    """Build the ridge problem for a linear-readout ``spec`` (`linear_spec`) whose descriptor
    is ``param.trainable_spec``; params0 must be parameters of that spec (the readout weights
    in it are only a template: w* replaces them). Weights ``w`` are network pytrees."""
    if spec.hidden:
        raise ValueError("the ridge readout needs a spec without hidden layers (use linear_spec)")
    cfg = settings.loss
    descriptor_fn = make_descriptor_fn(spec.descriptor)

    def params_at(raw, params0, stack):
        p = assemble(param, params0, raw)
        if settings.rescale:
            dtype = jnp.asarray(params0["energy"]["scale"]).dtype
            p = with_scaling(p, scaling_from_stack(spec.descriptor, p["descriptor"], stack, dtype))
        return p

    def quadratic(raw, data, stack):
        params0, train_stack = data
        return _normal_equations(spec, descriptor_fn, params_at(raw, params0, train_stack), stack, cfg)

    def train_loss(w, raw, data):
        Q, r, c = quadratic(raw, data, data[1])
        x = _flat(w)
        return x @ Q @ x - 2 * r @ x + c + settings.alpha * x @ x

    def optimality(w, raw, data):       # ½ ∇_w L_train, in network-pytree form
        Q, r, _ = quadratic(raw, data, data[1])
        x = _flat(w)
        return _networks(Q @ x - r + settings.alpha * x, w)

    def solve(raw, data):
        Q, r, _ = quadratic(raw, data, data[1])
        x = jnp.linalg.solve(Q + settings.alpha * jnp.eye(Q.shape[0], dtype=Q.dtype), r)
        return _networks(x, data[0]["networks"])

    solution = implicit_solution(solve, optimality, dense_solve)

    def val_loss(w, raw, data, val_stack):
        Q, r, c = quadratic(raw, data, val_stack)
        x = _flat(w)
        return x @ Q @ x - 2 * r @ x + c

    def objective(raw, params0, train_stack, val_stack):
        data = (params0, train_stack)
        w = solution(raw, data)
        return val_loss(w, raw, data, val_stack), w

    return RidgeProblem(train_loss, solve, solution, val_loss, objective)


def optimize_ridge(spec: PotentialSpec, param: SFParameterization, params0: dict, raw0: dict, train_stack,
                   val_stack, settings: RidgeSettings = RidgeSettings(), *, steps: int = 20,
                   learning_rate: float = 0.05, progress: bool = False) -> OuterResult:
    """Adam on θ with the exact ridge hypergradient of the validation loss."""
    prob = make_ridge_problem(spec, param, settings)
    fn = jax.jit(jax.value_and_grad(prob.objective, has_aux=True))

    def evaluate(raw, _):
        return fn(raw, params0, train_stack, val_stack)

    return run_outer(evaluate, param, raw0, None, steps=steps, learning_rate=learning_rate, progress=progress,
                     label="ridge")
