"""The descriptor function: atom-centred symmetry functions of a structure, pure and jittable.

`make_descriptor_fn(spec)` returns ``descriptor_fn(params, positions, cell, graph)`` giving, per
element c, the (N_c, n_c) matrix of unscaled symmetry functions of the atoms of that element, in
n2p2's column order. Each pair block (c, e) and triplet block (c, e1, e2) of the graph is visited
once; all functions that read a block are evaluated together as a (rows, columns) array and
summed onto their centre atoms with a sorted segment sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors import compact as _compact
from jnnp.descriptors.cutoff import cutoff as _cutoff
from jnnp.descriptors.plan import make_plan
from jnnp.descriptors.spec import DescriptorSpec
from jnnp.geometry.edges import edge_vectors, safe_norm

__all__ = ["make_descriptor_fn"]


def _exp_radial(r, p, cut):
    """exp(−η (r − r_s)²) f_c(r); r: (R, 1), params (1, k)."""
    return jnp.exp(-p["eta"] * (r - p["rs"]) ** 2) * cut(r, p["rc"])


def _angular_power(cos, lam, zeta):
    """2^(1−ζ) (1 + λ cos θ)^ζ with a finite gradient where 1 + λ cos θ = 0."""
    base = 1.0 + lam * cos
    pos = base > 0
    return jnp.where(pos, jnp.exp2(1.0 - zeta) * jnp.power(jnp.where(pos, base, 1.0), zeta), 0.0)


class _Columns:
    """Static per-block column information: types, λ, subtypes, windows (numpy)."""

    def __init__(self, spec: DescriptorSpec, c: int, block):
        fs = spec.functions[c]
        self.cols = np.asarray(block.columns, dtype=np.int32)
        self.weights = np.asarray(block.weights, dtype=np.float64)
        self.types = np.array([fs[k].type for k in block.columns])
        self.lam = np.array([fs[k].lam for k in block.columns])
        self.subtypes = tuple(fs[k].subtype for k in block.columns)
        self.left, self.right = _compact.angle_bounds_radians(
            [fs[k].angle_left for k in block.columns], [fs[k].angle_right for k in block.columns])

    def subset(self, types) -> np.ndarray:
        return np.flatnonzero(np.isin(self.types, list(types)))


def _gather(params_c, cols, dtype):
    return {f: jnp.asarray(v, dtype)[cols][None, :] for f, v in params_c.items()}


def make_descriptor_fn(spec: DescriptorSpec):
    """Build ``descriptor_fn(params, positions, cell, graph) -> tuple[(N_c, n_c) arrays]``.

    Args of the returned function:
        params: descriptor parameter pytree (`jnnp.descriptors.init_descriptor_params`).
        positions: (N, 3) [Å]; cell: (3, 3) lattice rows [Å] (zeros for free systems).
        graph: `jnnp.geometry.Graph` built for this spec's plan.

    Returns per element c the symmetry-function values of its atoms (dimensionless), with
    padding rows (element_mask False) set to zero.
    Differentiable w.r.t.: positions, cell, every entry of ``params``.
    """
    plan = make_plan(spec)
    nel = len(spec.elements)
    pair_cols = [_Columns(spec, b.key[0], b) for b in plan.pair_blocks]
    trip_cols = [_Columns(spec, b.key[0], b) for b in plan.triplet_blocks]
    ctype = spec.cutoff_type

    def descriptor_fn(params, positions, cell, graph):
        dtype = positions.dtype
        alpha = jnp.asarray(params["alpha"], dtype)

        def cut(r, rc):
            return _cutoff(ctype, r, rc, alpha)

        vec = edge_vectors(positions, cell, graph.pair_i, graph.pair_j, graph.pair_shift)
        out = [jnp.zeros((graph.element_atoms[c].shape[0], len(spec.functions[c])), dtype)
               for c in range(nel)]

        for b, info, (idx, local, mask) in zip(plan.pair_blocks, pair_cols, graph.pair_blocks):
            c = b.key[0]
            p = _gather(params["elements"][c], info.cols, dtype)
            r = safe_norm(vec[idx])[:, None]
            vals = jnp.zeros((r.shape[0], len(info.cols)), dtype)
            sel = info.subset({2, 12})
            if sel.size:
                vals = vals.at[:, sel].set(_exp_radial(r, _take(p, sel), cut))
            sel = info.subset({20, 23})
            if sel.size:
                vals = vals.at[:, sel].set(_compact.compact_radial(
                    _pick(info.subtypes, sel), r, p["rl"][:, sel], p["rc"][:, sel]))
            vals = vals * jnp.asarray(info.weights, dtype) * mask[:, None]
            out[c] = out[c].at[:, info.cols].add(
                jax.ops.segment_sum(vals, local, out[c].shape[0], indices_are_sorted=True))

        for b, info, (tp, tq, local, mask) in zip(plan.triplet_blocks, trip_cols, graph.triplet_blocks):
            c = b.key[0]
            p = _gather(params["elements"][c], info.cols, dtype)
            v1, v2 = vec[tp], vec[tq]
            r1, r2, r3 = safe_norm(v1), safe_norm(v2), safe_norm(v2 - v1)
            rr = r1 * r2
            ok = rr > 0
            cos = jnp.where(ok, jnp.sum(v1 * v2, axis=-1) / jnp.where(ok, rr, 1.0), 0.0)
            r1, r2, r3, cos = r1[:, None], r2[:, None], r3[:, None], cos[:, None]
            vals = jnp.zeros((r1.shape[0], len(info.cols)), dtype)
            sel = info.subset({3, 9, 13})
            if sel.size:
                q = _take(p, sel)
                narrow = jnp.asarray(np.isin(info.types[sel], (3, 13)))
                d2 = (r1 - q["rs"]) ** 2 + (r2 - q["rs"]) ** 2 + jnp.where(narrow, (r3 - q["rs"]) ** 2, 0.0)
                fc = cut(r1, q["rc"]) * cut(r2, q["rc"]) * jnp.where(narrow, cut(r3, q["rc"]), 1.0)
                lam = jnp.asarray(info.lam[sel], dtype)
                vals = vals.at[:, sel].set(_angular_power(cos, lam, q["zeta"]) * jnp.exp(-q["eta"] * d2) * fc)
            sel = info.subset({21, 22, 24, 25})
            if sel.size:
                q = _take(p, sel)
                subs = _pick(info.subtypes, sel)
                narrow = jnp.asarray(np.isin(info.types[sel], (21, 24)))
                rad = (_compact.compact_radial(subs, r1, q["rl"], q["rc"])
                       * _compact.compact_radial(subs, r2, q["rl"], q["rc"])
                       * jnp.where(narrow, _compact.compact_radial(subs, r3, q["rl"], q["rc"]), 1.0))
                ang = _compact.compact_angular(subs, cos, info.left[sel], info.right[sel])
                vals = vals.at[:, sel].set(rad * ang)
            vals = vals * jnp.asarray(info.weights, dtype) * mask[:, None]
            out[c] = out[c].at[:, info.cols].add(
                jax.ops.segment_sum(vals, local, out[c].shape[0], indices_are_sorted=True))

        return tuple(o * m[:, None] for o, m in zip(out, graph.element_mask))

    descriptor_fn.plan = plan
    return descriptor_fn


def _take(p, sel):
    return {k: v[:, sel] for k, v in p.items()}


def _pick(seq, sel):
    return tuple(seq[i] for i in sel)
