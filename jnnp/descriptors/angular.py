"""Exponential angular symmetry functions (n2p2 types 3, 9, 13) of one triplet block, with an
explicit backward pass.

For a block of T triplets (centre i, neighbours j, k) and K functions with static parameters,

    G_k(i) = Σ_t w_k · 2^(1−ζ_k) (1 + λ_k cos θ_t)^ζ_k · exp(−η_k Σ_legs (r − r_s,k)²) · Π_legs f_c(r)

where the legs are r_ij, r_ik (and r_jk for the narrow types 3, 13). Autodiff through this stores
many (T, K) intermediates; the hand-written VJP below recomputes the cheap factors and contracts
the K functions per triplet first (as n2p2 accumulates its per-triplet force terms), so the
backward pass touches (T, K) arrays only once. The math is checked against autodiff and finite
differences in the tests.

For narrow functions on a graph that also lists the pair index of each triplet's third leg j→k
(host-built graphs, `jnnp.geometry.Graph.jk`), `make_narrow_angular_block` goes further, as n2p2's
symmetry-function groups do: the radial factor exp(−η Σ (r − r_s)²) Π f_c(r) is a product of one
factor per leg, e(r) = exp(−η (r − r_s)²) f_c(r), so e (and f_c'/f_c for the backward pass) are
computed once per *pair* and distinct (η, r_s, r_c), cos θ_ijk follows from the three leg lengths
(law of cosines), and the per-triplet work is products of gathered pair values: no transcendental
function per triplet.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.cutoff import cutoff as _cutoff

__all__ = ["make_exp_angular_block", "make_narrow_angular_block"]


def _safe_div(a, b):
    ok = b != 0
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def _norm(x, y, z):
    d2 = x * x + y * y + z * z
    ok = d2 > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, d2, 1.0)), 0.0)


def _take(x, idx):
    return x.at[idx].get(mode="promise_in_bounds")


def _tile_rows(C: int, S: int, tile_size: int) -> tuple[int, int]:
    """Rows per tile R (≈ tile_size triplets, at most C) and number of tiles."""
    R = max(1, min(tile_size // S, C))
    return R, -(-C // R)


def _tile(arrays, k, R: int, C: int):
    """Rows [s, s + R) of every (C, …) array, s = min(k R, C − R): the last tile is shifted back to
    stay in bounds (instead of padding copies of the index arrays) and overlaps its predecessor;
    also returns the rows' flag "first visit" (row ≥ k R) so that overlapping rows count once."""
    s = jnp.minimum(k * R, C - R)
    rows = tuple(jax.lax.dynamic_slice_in_dim(a, s, R, axis=0) for a in arrays)
    return s, rows, (s + jnp.arange(R) >= k * R)


def _live_tiles(mask, R: int, n: int):
    """(n,) bool: tile k (rows [min(k R, C − R), +R)) holds a valid triplet. Padding (fixed-capacity
    graphs of MD, bucketed training batches) sits in whole tiles at the end, which are skipped
    with a ``lax.cond`` rather than a dynamic trip count, so the loops stay reverse-differentiable
    (training differentiates the force pass again)."""
    C = mask.shape[0]
    live = jnp.any(mask, axis=1)
    starts = jnp.minimum(jnp.arange(n) * R, C - R)
    counts = jnp.cumsum(jnp.concatenate([jnp.zeros(1, jnp.int32), live.astype(jnp.int32)]))
    return counts[starts + R] > counts[starts]


def _tiled_sums(tile_fn, arrays, chunk_local, n_seg: int, K: int, dtype, tile_size: int):
    """Per-centre sums (n_seg, K) of ``tile_fn(*rows) -> (R, K)`` per-chunk sums over (C, S) arrays,
    one tile of rows at a time (intermediates stay in cache, no triplet-sized temporaries); the
    last array is the (C, S) mask, and tiles without a valid triplet are skipped."""
    C, S = arrays[0].shape
    if C == 0:
        return jnp.zeros((n_seg, K), dtype)
    R, n = _tile_rows(C, S, tile_size)
    live = _live_tiles(arrays[-1], R, n)

    def body(k, acc):
        def compute(acc):
            s, rows, _ = _tile(arrays, k, R, C)  # overlapping rows are recomputed identically
            return jax.lax.dynamic_update_slice_in_dim(acc, tile_fn(*rows).astype(dtype), s, axis=0)
        return jax.lax.cond(live[k], compute, lambda acc: acc, acc)

    sums = jax.lax.fori_loop(0, n, body, jnp.zeros((C, K), dtype))
    return jax.ops.segment_sum(sums, chunk_local, n_seg, indices_are_sorted=True)


def _tiled_scatter(tile_fn, arrays, chunk_local, g, accumulators, tile_size: int):
    """Accumulate per-triplet cotangents into pair arrays, one tile at a time (the last array is
    the (C, S) mask; tiles without a valid triplet are skipped).

    ``tile_fn(gl, *rows)`` gets the (R, K) cotangent of each chunk's centre and returns, per
    accumulator, a sequence of (index (R, S), value (R, S)) to scatter-add into it.
    """
    C, S = arrays[0].shape
    if C == 0:
        return accumulators
    R, n = _tile_rows(C, S, tile_size)
    live = _live_tiles(arrays[-1], R, n)

    def body(k, accs):
        def compute(accs):
            _, rows, fresh = _tile(arrays + (chunk_local,), k, R, C)
            gl = g.at[rows[-1]].get(mode="promise_in_bounds") * fresh[:, None]
            out = []
            for acc, terms in zip(accs, tile_fn(gl, *rows[:-1])):
                for idx, val in terms:
                    acc = acc.at[idx.reshape(-1)].add(val.reshape(-1), mode="promise_in_bounds")
                out.append(acc)
            return tuple(out)
        return jax.lax.cond(live[k], compute, lambda accs: accs, accs)

    return jax.lax.fori_loop(0, n, body, tuple(accumulators))


def _angular_power(cos, lam, zeta, derivative: bool):
    """2^(1−ζ) (1 + λ cos)^ζ and (optionally) its derivative w.r.t. cos; 0 where 1 + λ cos ≤ 0."""
    b = 1.0 + lam * cos
    pos = b > 0
    bs = jnp.where(pos, b, 1.0)
    c = 2.0 ** (1.0 - zeta)

    def pw(e):
        if float(e).is_integer() and 0 <= e <= 64:
            return jax.lax.integer_pow(bs, int(e))
        return jnp.power(bs, e)

    p = jnp.where(pos, c * pw(zeta), 0.0)
    if not derivative:
        return p, None
    return p, jnp.where(pos, (c * zeta * lam) * pw(zeta - 1.0), 0.0)


def make_exp_angular_block(ctype: int, alpha: float, columns, tile_size: int = 8192):
    """Build ``block_fn(v1, v2, chunk_local, mask, n_seg) -> (n_seg, K)`` with a custom VJP.

    Args:
        ctype, alpha: n2p2 cutoff type and inner-cutoff fraction (static).
        columns: per function a dict with static floats ``w, lam, zeta, eta, rs, rc`` and bool
            ``narrow``.

    The returned function takes the Cartesian components of all pair vectors r_ij [Å] as a tuple
    of three (P,) arrays, the pair indices ``tp``, ``tq`` (C, S) of each triplet's legs r_ij and
    r_ik (C chunks of S triplets, every chunk belonging to one centre), ``chunk_local`` (C,)
    sorted centre index of each chunk, ``mask`` (C, S) bool and the static number of centres.
    The work is done in tiles of about ``tile_size`` triplets (``lax.fori_loop``) so that the
    intermediates stay in cache. Differentiable (reverse mode) w.r.t. the pair vectors.
    """
    cols = tuple(dict(c) for c in columns)
    rcs = sorted({c["rc"] for c in cols})
    any_narrow = any(c["narrow"] for c in cols)

    def fc_and_derivative(r, rc):
        return jax.jvp(lambda x: _cutoff(ctype, x, rc, alpha), (r,), (jnp.ones_like(r),))

    def geometry(v1, v2):
        v3 = tuple(b - a for a, b in zip(v1, v2))
        r1, r2, r3 = _norm(*v1), _norm(*v2), _norm(*v3)
        cos = _safe_div(v1[0] * v2[0] + v1[1] * v2[1] + v1[2] * v2[2], r1 * r2)
        fc = {}
        for rc in rcs:
            fc[rc] = (fc_and_derivative(r1, rc), fc_and_derivative(r2, rc),
                      fc_and_derivative(r3, rc) if any_narrow else None)
        return v3, r1, r2, r3, cos, fc

    def power(cos, lam, zeta, minus):
        """2^(1−ζ) b^(ζ−minus) for b = 1 + λ cos > 0, else 0."""
        b = 1.0 + lam * cos
        pos = b > 0
        bs = jnp.where(pos, b, 1.0)
        e = zeta - minus
        if float(e).is_integer() and 0 <= e <= 64:
            p = jax.lax.integer_pow(bs, int(e))
        else:
            p = jnp.power(bs, e)
        return jnp.where(pos, 2.0 ** (1.0 - zeta) * p, 0.0)

    def terms(geo, c):
        v3, r1, r2, r3, cos, fc = geo
        (f1, d1), (f2, d2), leg3 = fc[c["rc"]]
        u1, u2 = r1 - c["rs"], r2 - c["rs"]
        s = u1 * u1 + u2 * u2
        if c["narrow"]:
            f3, d3 = leg3
            u3 = r3 - c["rs"]
            s = s + u3 * u3
            F = f1 * f2 * f3
        else:
            f3 = d3 = u3 = None
            F = f1 * f2
        E = c["w"] * jnp.exp(-c["eta"] * s)
        return E, F, (f1, d1, f2, d2, f3, d3, u1, u2, u3)

    def tile_sums(vxyz, tp, tq, mask):
        """(R, S) tile of triplets → (R, K) per-chunk sums."""
        v1 = tuple(_take(x, tp) for x in vxyz)
        v2 = tuple(_take(x, tq) for x in vxyz)
        geo = geometry(v1, v2)
        m = mask.astype(geo[1].dtype)
        sums = []
        for c in cols:
            E, F, _ = terms(geo, c)
            sums.append(jnp.sum(power(geo[4], c["lam"], c["zeta"], 0) * E * F * m, axis=-1))
        return jnp.stack(sums, axis=1)

    def tile_grads(vxyz, tp, tq, mask, gl):
        """VJP of `tile_sums` for one tile: gl (R, K) → cotangents of v1, v2 components (R, S)."""
        v1 = tuple(_take(x, tp) for x in vxyz)
        v2 = tuple(_take(x, tq) for x in vxyz)
        geo = geometry(v1, v2)
        v3, r1, r2, r3, cos, _ = geo
        m = mask.astype(gl.dtype)
        g_r1 = g_r2 = g_r3 = g_cos = 0.0
        for k, c in enumerate(cols):
            E, F, (f1, d1, f2, d2, f3, d3, u1, u2, u3) = terms(geo, c)
            gE = gl[:, k:k + 1] * E
            q = gE * power(cos, c["lam"], c["zeta"], 0)
            g_cos = g_cos + gE * F * (c["zeta"] * c["lam"]) * power(cos, c["lam"], c["zeta"], 1)
            m2e = -2.0 * c["eta"]
            if c["narrow"]:
                g_r1 = g_r1 + q * (F * m2e * u1 + d1 * f2 * f3)
                g_r2 = g_r2 + q * (F * m2e * u2 + f1 * d2 * f3)
                g_r3 = g_r3 + q * (F * m2e * u3 + f1 * f2 * d3)
            else:
                g_r1 = g_r1 + q * (F * m2e * u1 + d1 * f2)
                g_r2 = g_r2 + q * (F * m2e * u2 + f1 * d2)
        g_cos = g_cos * m
        inv12 = g_cos * _safe_div(1.0, r1 * r2)
        a1 = _safe_div(g_r1 * m, r1) - g_cos * cos * _safe_div(1.0, r1 * r1)
        a2 = _safe_div(g_r2 * m, r2) - g_cos * cos * _safe_div(1.0, r2 * r2)
        gv1 = [a1 * x1 + inv12 * x2 for x1, x2 in zip(v1, v2)]
        gv2 = [a2 * x2 + inv12 * x1 for x1, x2 in zip(v1, v2)]
        if any_narrow:
            a3 = _safe_div(g_r3 * m, r3)
            gv1 = [g - a3 * x3 for g, x3 in zip(gv1, v3)]
            gv2 = [g + a3 * x3 for g, x3 in zip(gv2, v3)]
        return gv1, gv2

    def forward(vxyz, tp, tq, chunk_local, mask, n_seg):
        return _tiled_sums(lambda *rows: tile_sums(vxyz, *rows), (tp, tq, mask), chunk_local, n_seg,
                           len(cols), vxyz[0].dtype, tile_size)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
    def block_fn(vxyz, tp, tq, chunk_local, mask, n_seg):
        return forward(vxyz, tp, tq, chunk_local, mask, n_seg)

    def fwd(vxyz, tp, tq, chunk_local, mask, n_seg):
        return forward(vxyz, tp, tq, chunk_local, mask, n_seg), (vxyz, tp, tq, chunk_local, mask)

    def bwd(n_seg, res, g):
        vxyz, tp, tq, chunk_local, mask = res

        def grads(gl, tp, tq, m):
            gv1, gv2 = tile_grads(vxyz, tp, tq, m, gl)
            return tuple(((tp, a1), (tq, a2)) for a1, a2 in zip(gv1, gv2))

        acc = _tiled_scatter(grads, (tp, tq, mask), chunk_local, g, tuple(jnp.zeros_like(x) for x in vxyz),
                             tile_size)
        return acc, None, None, None, None

    block_fn.defvjp(fwd, bwd)
    return block_fn


def make_narrow_angular_block(ctype: int, alpha: float, columns, tile_size: int = 8192):
    """Build ``block_fn(r, tp, tq, tr, chunk_local, mask, n_seg) -> (n_seg, K)`` with a custom VJP
    for a block of narrow exponential angular functions (n2p2 types 3, 13), static parameters.

    Args:
        ctype, alpha: n2p2 cutoff type and inner-cutoff fraction (static).
        columns: per function a dict with static floats ``w, lam, zeta, eta, rs, rc``.

    The returned function takes all pair distances ``r`` (P,) [Å], the pair indices ``tp``,
    ``tq``, ``tr`` (C, S) of each triplet's legs i→j, i→k and j→k (C chunks of S triplets, each
    chunk belonging to one centre), ``chunk_local`` (C,) sorted centre index of each chunk,
    ``mask`` (C, S) bool and the static number of centres. Differentiable (reverse mode) w.r.t.
    ``r``. Legs of zero length give zero (finite gradients), as in the generic path.

    Backward pass: with E_g = Π_legs e_g(r) the radial factor of group g = (η, r_s, r_c) and Q_g
    the cotangent weight of E_g, the derivative along leg a is
    Σ_g Q_g E_g (φ(r_a) − 2η_g (r_a − r_s,g)) with φ = f_c'/f_c, so the per-triplet sums
    A_rc = Σ_{g: r_c} Q_g E_g, B = Σ_g η_g Q_g E_g and B' = Σ_g η_g r_s,g Q_g E_g serve all three
    legs. φ is set to 0 where f_c = 0 (there E_g = 0 as well). The Q_g (and the cos-derivative
    weights) come out of one small batched matrix product, which XLA:CPU does not fuse, so the
    angular powers are evaluated once per tile instead of once per consumer.
    """
    cols = tuple(dict(c) for c in columns)
    groups = sorted({(c["eta"], c["rs"], c["rc"]) for c in cols})
    gid = [groups.index((c["eta"], c["rs"], c["rc"])) for c in cols]
    pows = sorted({(c["lam"], c["zeta"]) for c in cols})
    pid = [pows.index((c["lam"], c["zeta"])) for c in cols]
    rcs = sorted({g[2] for g in groups})
    K, G, NP = len(cols), len(groups), len(pows)
    # weights[k] maps (power p, or its derivative NP + p) to (group g, or the cos weight G + g)
    weights = np.zeros((K, 2 * NP, 2 * G))
    for k, c in enumerate(cols):
        weights[k, pid[k], gid[k]] = weights[k, NP + pid[k], G + gid[k]] = c["w"]

    def cutoff_jvp(r, rc):
        return jax.jvp(lambda x: _cutoff(ctype, x, rc, alpha), (r,), (jnp.ones_like(r),))

    def pair_factors(r):
        """Per group, e = exp(−η (r − r_s)²) f_c(r) of every pair: a list of G (P,) arrays."""
        fc = {rc: _cutoff(ctype, r, rc, alpha) for rc in rcs}
        return [jnp.exp(-eta * (r - rs) ** 2) * fc[rc] for eta, rs, rc in groups]

    def legs(r, tp, tq, tr):
        r1, r2, r3 = _take(r, tp), _take(r, tq), _take(r, tr)
        inv12 = _safe_div(1.0, r1 * r2)
        cos = (r1 * r1 + r2 * r2 - r3 * r3) * 0.5 * inv12
        return r1, r2, r3, cos, inv12

    def tile_sums(r, es, tp, tq, tr, m):
        cos = legs(r, tp, tq, tr)[3]
        P = [_angular_power(cos, lam, zeta, False)[0] for lam, zeta in pows]
        E = [_take(e, tp) * _take(e, tq) * _take(e, tr) * m for e in es]
        return jnp.stack([jnp.sum(c["w"] * P[pid[k]] * E[gid[k]], axis=-1) for k, c in enumerate(cols)], axis=1)

    def tile_grads(r, es, phis, tp, tq, tr, m, gl):
        """VJP of `tile_sums` for one tile: gl (R, K) → cotangents of the three leg lengths (R, S)."""
        r1, r2, r3, cos, inv12 = legs(r, tp, tq, tr)
        P = [_angular_power(cos, lam, zeta, True) for lam, zeta in pows]
        W = jnp.einsum("rk,kpg->rpg", gl, weights.astype(gl.dtype))
        Qm = jnp.einsum("rsp,rpg->rsg", jnp.stack([p for p, _ in P] + [d for _, d in P], axis=-1), W)
        A = dict.fromkeys(rcs, 0.0)
        B = B2 = g_cos = 0.0
        for g, (eta, rs, rc) in enumerate(groups):
            E = _take(es[g], tp) * _take(es[g], tq) * _take(es[g], tr)
            QE = Qm[..., g] * E
            A[rc] = A[rc] + QE
            B = B + eta * QE
            if rs != 0.0:
                B2 = B2 + (eta * rs) * QE
            g_cos = g_cos + Qm[..., G + g] * E
        out = []
        # ∂cos/∂r1 = 1/r2 − cos/r1, ∂cos/∂r2 = 1/r1 − cos/r2, ∂cos/∂r3 = −r3/(r1 r2)
        for ra, idx, dcos in ((r1, tp, r1 * inv12 - cos * _safe_div(1.0, r1)),
                              (r2, tq, r2 * inv12 - cos * _safe_div(1.0, r2)),
                              (r3, tr, -r3 * inv12)):
            ga = 2.0 * (B2 - ra * B) + g_cos * dcos
            for rc, phi in zip(rcs, phis):
                ga = ga + _take(phi, idx) * A[rc]
            out.append(ga * m)
        return tuple(out)

    def forward(r, es, tp, tq, tr, chunk_local, mask, n_seg):
        return _tiled_sums(lambda tp, tq, tr, m: tile_sums(r, es, tp, tq, tr, m.astype(r.dtype)),
                           (tp, tq, tr, mask), chunk_local, n_seg, K, r.dtype, tile_size)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
    def block_fn(r, tp, tq, tr, chunk_local, mask, n_seg):
        return forward(r, pair_factors(r), tp, tq, tr, chunk_local, mask, n_seg)

    def fwd(r, tp, tq, tr, chunk_local, mask, n_seg):
        es = pair_factors(r)
        return forward(r, es, tp, tq, tr, chunk_local, mask, n_seg), (r, es, tp, tq, tr, chunk_local, mask)

    def bwd(n_seg, res, g):
        r, es, tp, tq, tr, chunk_local, mask = res
        phis = []
        for rc in rcs:
            f, df = cutoff_jvp(r, rc)
            phis.append(_safe_div(df, f))

        def grads(gl, tp, tq, tr, m):
            return (tuple(zip((tp, tq, tr), tile_grads(r, es, phis, tp, tq, tr, m.astype(r.dtype), gl))),)

        (acc,) = _tiled_scatter(grads, (tp, tq, tr, mask), chunk_local, g, (jnp.zeros_like(r),), tile_size)
        return acc, None, None, None, None, None

    block_fn.defvjp(fwd, bwd)
    return block_fn
