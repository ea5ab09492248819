"""Fixed-shape stacked batches and differentiable losses and scaling statistics over them.

Hypergradients need the training and validation losses as one differentiable function of the
descriptor hyperparameters: inside a `lax.scan` over training steps, or inside an implicit
solve. `stack_batches` pads every batch of a data set to common capacities and stacks them along
a leading axis (a `Batch` pytree with shape (n_batches, ...) per leaf); `pooled_loss` and
`scaling_from_stack` map over that axis with `lax.map` (one compiled body).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.plan import make_plan
from jnnp.train.batch import Batch, BatchSizer, build_graphs, collate
from jnnp.train.loss import LossConfig, combine_terms, loss_terms

__all__ = [
    "batch_at",
    "n_stacked",
    "pooled_loss",
    "pooled_terms",
    "scaling_from_stack",
    "stack_batches",
    "with_scaling",
]


def stack_batches(graph_spec, structures, batch_size: int) -> Batch:
    """All ``structures`` (in order) as ⌈n / batch_size⌉ batches padded to one common shape and
    stacked: every leaf gets a leading batch axis.

    Args:
        graph_spec: `DescriptorSpec` the neighbour graphs are built for (e.g.
            `SFParameterization.graph_spec`).
        structures: labelled `Structure` sequence (non-empty).
        batch_size: structure slots per batch.
    """
    structures = list(structures)
    if not structures:
        raise ValueError("cannot stack batches of an empty data set")
    graphs = build_graphs(graph_spec, structures)
    plan = make_plan(graph_spec)
    sizer = BatchSizer(graphs, batch_size)
    groups = [list(range(k, min(k + batch_size, len(structures)))) for k in range(0, len(structures), batch_size)]
    all_sizes = [sizer.sizes(g) for g in groups]

    def biggest(key):
        vals = [s[key] for s in all_sizes]
        return max(vals) if isinstance(vals[0], int) else tuple(int(max(v)) for v in zip(*vals))

    sizes = {k: biggest(k) for k in all_sizes[0]}
    batches = [collate([structures[i] for i in g], [graphs[i] for i in g], sizes, plan, batch_size, indices=g)
               for g in groups]
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def n_stacked(stack: Batch) -> int:
    """Number of batches in a stack."""
    return int(stack.structure_mask.shape[0])


def batch_at(stack: Batch, k):
    """Batch number ``k`` (int or traced int) of a stack."""
    return jax.tree.map(lambda x: jnp.asarray(x)[k], stack)


def pooled_terms(properties_fn, params, stack: Batch) -> dict:
    """MSE terms pooled over all batches of ``stack`` (count-weighted, so equal to the terms of
    one batch holding every structure); ``*_count`` summed. Differentiable in params."""
    def one(batch):
        terms = loss_terms(properties_fn(params, batch), batch)
        return {k: v for k, v in terms.items()}

    per = jax.lax.map(one, stack)
    out = {}
    for k in ("energy", "force", "stress"):
        if f"{k}_mse" in per:
            n = per[f"{k}_count"].astype(per[f"{k}_mse"].dtype)
            out[f"{k}_count"] = jnp.sum(n)
            out[f"{k}_mse"] = jnp.sum(per[f"{k}_mse"] * n) / jnp.maximum(jnp.sum(n), 1.0)
    return out


def pooled_loss(properties_fn, params, stack: Batch, cfg: LossConfig):
    """Weighted loss (`jnnp.train.loss.combine_terms`) of the pooled terms of ``stack``."""
    return combine_terms(pooled_terms(properties_fn, params, stack), cfg)


def scaling_from_stack(descriptor_spec, desc_params, stack: Batch, dtype=jnp.float64) -> tuple:
    """Per element ``{"min", "max", "mean", "sigma"}`` of the unscaled descriptors over every
    real atom of ``stack`` (n2p2 definitions, as `jnnp.train.normalize.descriptor_statistics`),
    as a differentiable function of ``desc_params`` (min/max: a.e.). Elements without atoms get
    the identity statistics."""
    dfn = make_descriptor_fn(descriptor_spec)

    def one(batch):
        pos = jnp.asarray(batch.positions).astype(dtype)
        g = batch.graph.replace(pair_shift=jnp.asarray(batch.graph.pair_shift).astype(dtype))
        return dfn(desc_params, pos, jnp.eye(3, dtype=dtype), g)

    G = jax.lax.map(one, stack)
    stats = []
    for c, Gc in enumerate(G):
        m = jnp.asarray(stack.graph.element_mask[c])[..., None]
        n = jnp.sum(m)
        if Gc.shape[-1] == 0:
            stats.append({k: jnp.zeros(0, dtype) for k in ("min", "max", "mean", "sigma")})
            continue
        safe_n = jnp.maximum(n, 1)
        mean = jnp.sum(jnp.where(m, Gc, 0.0), axis=(0, 1)) / safe_n
        var = jnp.sum(jnp.where(m, (Gc - mean) ** 2, 0.0), axis=(0, 1)) / safe_n
        pos = var > 0
        sigma = jnp.where(pos, jnp.sqrt(jnp.where(pos, var, 1.0)), 0.0)
        lo = jnp.min(jnp.where(m, Gc, jnp.inf), axis=(0, 1))
        hi = jnp.max(jnp.where(m, Gc, -jnp.inf), axis=(0, 1))
        has = n > 0
        stats.append({"min": jnp.where(has, lo, 0.0), "max": jnp.where(has, hi, 1.0),
                      "mean": jnp.where(has, mean, 0.0), "sigma": jnp.where(has, sigma, 1.0)})
    return tuple(stats)


def with_scaling(params: dict, stats) -> dict:
    """``params`` with ``params["scaling"]`` replaced."""
    out = dict(params)
    out["scaling"] = tuple(stats)
    return out
