"""Exact hypergradients on a convex sub-problem: a ridge readout on the symmetry functions.

The readout is the HDNNP with no hidden layer: E_s = Σ_i [scale · (w_c · x_i(θ) + b_c) + shift_c]
with x_i the scaled symmetry functions of atom i (element c). Energies *and* forces are linear in
the weights w = {w_c, b_c}, so the training loss

    L_train(w, θ) = w_E · MSE(E/N) + w_F · MSE(F) + α Σ w²

(`jnnp.train.loss` terms pooled over the training set) is a strictly convex quadratic in w. Its
minimiser is computed in closed form (Hessian by forward-over-reverse differentiation, one dense
solve), and the validation loss J(θ) = L_val(w*(θ), θ) is differentiated with the implicit
function theorem (`jnnp.hyper.implicit.implicit_solution` with the exact dense solve): the
hypergradient is exact to round-off, which the tests check against central finite differences
of the exact solution.

With ``rescale`` (default) the scaling statistics are recomputed from the training structures
at θ inside J, so a change of η or r_s is not hidden by stale statistics (min/max scaling is
differentiable almost everywhere).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jnnp.hyper.implicit import dense_solve, implicit_solution
from jnnp.hyper.learnable import assemble
from jnnp.hyper.outer import OuterResult, run_outer
from jnnp.hyper.param import SFParameterization
from jnnp.hyper.stacked import pooled_loss, scaling_from_stack, with_scaling
from jnnp.model.potential import PotentialSpec
from jnnp.train.batch import make_batch_properties_fn
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


def _l2(tree):
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def make_ridge_problem(spec: PotentialSpec, param: SFParameterization, settings: RidgeSettings = RidgeSettings()
                       ) -> RidgeProblem:
    """Build the ridge problem for a linear-readout ``spec`` (`linear_spec`) whose descriptor
    is ``param.trainable_spec``; params0 must be parameters of that spec (the readout weights
    in it are ignored: w* replaces them)."""
    if spec.hidden:
        raise ValueError("the ridge readout needs a spec without hidden layers (use linear_spec)")
    cfg = settings.loss
    props = make_batch_properties_fn(spec, forces=cfg.uses_forces)

    def params_at(raw, params0, stack):
        p = assemble(param, params0, raw)
        if settings.rescale:
            dtype = jnp.asarray(params0["energy"]["scale"]).dtype
            p = with_scaling(p, scaling_from_stack(spec.descriptor, p["descriptor"], stack, dtype))
        return p

    def train_loss(w, raw, data):
        params0, stack = data
        p = params_at(raw, params0, stack)
        p["networks"] = w
        return pooled_loss(props, p, stack, cfg) + settings.alpha * _l2(w)

    def solve(raw, data):
        params0, _ = data
        w0 = jax.tree.map(jnp.zeros_like, params0["networks"])
        x0, unravel = ravel_pytree(w0)

        def grad_flat(x):
            return ravel_pytree(jax.grad(train_loss)(unravel(x), raw, data))[0]

        g0 = grad_flat(x0)
        H = jax.jacfwd(grad_flat)(x0)   # exact: the loss is quadratic in w
        return unravel(-jnp.linalg.solve(H, g0))

    solution = implicit_solution(solve, jax.grad(train_loss), dense_solve)

    def val_loss(w, raw, data, val_stack):
        params0, stack = data
        p = params_at(raw, params0, stack)
        p["networks"] = w
        return pooled_loss(props, p, val_stack, cfg)

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
