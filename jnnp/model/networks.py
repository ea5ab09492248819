"""Per-element feed-forward networks (Flax linen), n2p2 layout: Dense → activation per layer."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

import jax.numpy as jnp

from jnnp.model.activations import get_activation

__all__ = ["ElementMLP", "init_network_params", "apply_network"]


class ElementMLP(nn.Module):
    """y = a_L(W_L … a_1(W_1 x + b_1) … + b_L), the atomic-energy network of one element.

    Attributes:
        features: neurons per layer, hidden layers then the output layer (1).
        activations: n2p2 activation characters, one per layer (e.g. ``("t", "t", "l")``).
        normalize_nodes: divide each neuron's input sum by its number of inputs (n2p2
            ``normalize_nodes``).
        param_dtype: dtype of freshly initialised parameters.

    Input (..., n_in) scaled symmetry functions; output (...,) in normalised energy units.
    """

    features: Sequence[int]
    activations: Sequence[str]
    normalize_nodes: bool = False
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for k, (width, act) in enumerate(zip(self.features, self.activations)):
            n_in = x.shape[-1]
            x = nn.Dense(width, name=f"layer_{k}", param_dtype=self.param_dtype,
                         kernel_init=nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"))(x)
            if self.normalize_nodes:
                x = x / n_in
            x = get_activation(act)(x)
        return x[..., 0]


def init_network_params(module: ElementMLP, n_in: int, key) -> dict:
    """Fresh parameters ``{'params': {'layer_k': {'kernel': (n_in, n_out), 'bias': (n_out,)}}}``."""
    return module.init(key, jnp.zeros((1, n_in), module.param_dtype))


def apply_network(module: ElementMLP, params: dict, x):
    """Evaluate; x (..., n_in) → (...,). Differentiable w.r.t. params and x."""
    return module.apply(params, x)


def n_weights(features: Sequence[int], n_in: int) -> int:
    sizes = [n_in, *features]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
