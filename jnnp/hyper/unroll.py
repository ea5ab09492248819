"""Hypergradients through K unrolled training steps (truncated backpropagation through training).

The objective of the descriptor hyperparameters θ (raw, `jnnp.hyper.param`) is

    J(θ) = L_val( w_K(θ), θ ),   w_{k+1} = w_k + update_k( ∇_w L_train(w_k, θ; batch_k) ),

K steps of an optax optimiser (SGD or Adam) from given network weights w_0 (held fixed: the
gradient does not flow into w_0), cycling over the stacked training batches. ``jax.grad`` of J
is the exact gradient of this K-step objective — "truncated" because K is much shorter than a
full training run, so it is a biased estimate of the gradient of the fully trained model's
validation loss (short-horizon bias, Wu et al., ICLR 2018). Each step is wrapped in
`jax.checkpoint`, so the backward pass stores only the K carried (weights, optimiser state)
pairs and recomputes each step's activations: memory O(K · |w|) plus one step.

With ``rescale`` the SF scaling statistics are recomputed from the training batches at θ inside
J (differentiably), because stale statistics would hide the effect of θ on the scaled inputs.

`optimize_unrolled` runs the outer optax loop: each outer step evaluates J and its gradient and
updates θ; with ``warm_start`` the next inner run starts from this run's w_K (online,
"greedy" hyperparameter optimisation), otherwise always from w_0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jnnp.hyper.learnable import assemble
from jnnp.hyper.outer import OuterResult, run_outer
from jnnp.hyper.param import SFParameterization
from jnnp.hyper.stacked import batch_at, n_stacked, pooled_loss, scaling_from_stack, with_scaling
from jnnp.train.batch import make_batch_properties_fn
from jnnp.train.loss import LossConfig, combine_terms, loss_terms

__all__ = [
    "UnrollSettings",
    "make_inner_optimizer",
    "make_unrolled_objective",
    "optimize_unrolled",
    "unrolled_hypergradient",
]


@dataclasses.dataclass(frozen=True)
class UnrollSettings:
    """Inner training of the unrolled objective.

    Attributes:
        steps: K, the number of unrolled training steps.
        optimizer: ``"sgd"`` or ``"adam"`` (plain optax, no clipping: the objective stays smooth).
        learning_rate: inner learning rate.
        energy_weight, force_weight: weights of both the training and the validation loss.
        l2: weight of an L2 penalty (l2 · Σ w²) on the network weights in the training loss.
        rescale: recompute SF scaling statistics from the training batches at θ (differentiably).
        remat: wrap each inner step in `jax.checkpoint`.
    """

    steps: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-2
    energy_weight: float = 1.0
    force_weight: float = 10.0
    l2: float = 0.0
    rescale: bool = True
    remat: bool = True

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.steps < 1:
            raise ValueError(f"need at least one unrolled step, got {self.steps}")

    @property
    def loss(self) -> LossConfig:
        return LossConfig(self.energy_weight, self.force_weight, 0.0)


def make_inner_optimizer(settings: UnrollSettings) -> optax.GradientTransformation:
    """Plain SGD or Adam. Adam gets ``eps_root`` > 0: √(ν + eps_root) keeps the derivative of the
    update finite for weights whose gradient is exactly zero (e.g. inputs that are zero on the
    data), where √ν would give 0 · ∞ = NaN in the backward pass."""
    if settings.optimizer == "sgd":
        return optax.sgd(settings.learning_rate)
    return optax.adam(settings.learning_rate, eps_root=1e-12)


def _l2(tree):
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def make_unrolled_objective(spec, param: SFParameterization, settings: UnrollSettings):
    """``objective(raw, params0, train_stack, val_stack) -> (J, w_K)``.

    Args of the returned function:
        raw: raw SF parameters θ (the differentiated argument).
        params0: potential parameters (``params0["networks"]`` = w_0; energy shift/scale and,
            without ``rescale``, scaling statistics are taken from it).
        train_stack, val_stack: `jnnp.hyper.stacked.stack_batches` of the training and
            validation structures (graphs for ``param.graph_spec``).

    ``spec`` is the `PotentialSpec` with descriptor ``param.trainable_spec``. J is the pooled
    validation loss [loss units of `jnnp.train.loss`]; differentiable w.r.t. raw (and params0).
    """
    props = make_batch_properties_fn(spec, forces=settings.loss.uses_forces)
    opt = make_inner_optimizer(settings)
    cfg = settings.loss

    def objective(raw, params0, train_stack, val_stack):
        params = assemble(param, params0, raw)
        if settings.rescale:
            dtype = jnp.asarray(params0["energy"]["scale"]).dtype
            params = with_scaling(params, scaling_from_stack(spec.descriptor, params["descriptor"], train_stack,
                                                             dtype))
        nb = n_stacked(train_stack)

        def train_loss(w, batch):
            p = dict(params)
            p["networks"] = w
            loss = combine_terms(loss_terms(props(p, batch), batch), cfg)
            return loss + settings.l2 * _l2(w) if settings.l2 else loss

        def step(carry, k):
            w, s = carry
            loss, g = jax.value_and_grad(train_loss)(w, batch_at(train_stack, k % nb))
            upd, s = opt.update(g, s, w)
            return (optax.apply_updates(w, upd), s), loss

        body = jax.checkpoint(step) if settings.remat else step
        w0 = params["networks"]
        (wK, _), _ = jax.lax.scan(body, (w0, opt.init(w0)), jnp.arange(settings.steps))
        p = dict(params)
        p["networks"] = wK
        return pooled_loss(props, p, val_stack, cfg), wK

    return objective


def unrolled_hypergradient(spec, param: SFParameterization, settings: UnrollSettings):
    """Jitted ``fn(raw, params0, train_stack, val_stack) -> ((J, w_K), dJ/draw)``."""
    obj = make_unrolled_objective(spec, param, settings)
    return jax.jit(jax.value_and_grad(obj, has_aux=True))


def optimize_unrolled(spec, param: SFParameterization, params0: dict, raw0: dict, train_stack, val_stack,
                      settings: UnrollSettings, *, outer_steps: int = 20, outer_learning_rate: float = 0.05,
                      warm_start: bool = True, progress: bool = False) -> OuterResult:
    """Adam on θ with the K-step unrolled hypergradient (module docstring); ``carry`` of the
    result holds the potential parameters of the last inner run's start (with ``warm_start``
    the networks move on by K steps per outer step)."""
    fn = unrolled_hypergradient(spec, param, settings)

    def evaluate(raw, params):
        return fn(raw, params, train_stack, val_stack)

    def carry_on(params, wK):
        if not warm_start:
            return params
        out = dict(params)
        out["networks"] = wK
        return out

    return run_outer(evaluate, param, raw0, jax.tree.map(jnp.asarray, params0), steps=outer_steps,
                     learning_rate=outer_learning_rate, update_carry=carry_on, progress=progress,
                     label="unrolled")
