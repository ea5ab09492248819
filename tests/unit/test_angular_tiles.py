"""Tiled angular kernels (`jnnp.descriptors.angular`) against plain autodiff of the same sums.

Small tiles (so that a block spans many), padding rows at the end (the fixed capacities of MD
graphs and bucketed batches, whose tiles are skipped) and in the middle, forward, first and
second order (training differentiates the force pass again).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnnp.descriptors.angular import _live_tiles, make_exp_angular_block, make_narrow_angular_block
from jnnp.descriptors.cutoff import CUTOFF_TYPES, INNER_CUTOFF_TYPES, cutoff

CTYPE, ALPHA, S, TILE = 6, 0.0, 4, 3 * 4   # poly2 cutoff; chunks of 4 triplets; 3 chunks per tile
COLS = [{"w": 1.0, "lam": lam, "zeta": zeta, "eta": eta, "rs": rs, "rc": rc, "narrow": True}
        for lam, zeta, eta, rs, rc in [(1.0, 1.0, 0.1, 0.0, 3.0), (-1.0, 2.0, 0.1, 0.0, 3.0),
                                       (1.0, 4.0, 0.3, 0.5, 2.5), (-1.0, 3.5, 0.05, 0.0, 3.0)]]


def _problem(seed=0, n_atoms=12, pad_chunks=11):
    """Pair vectors of every directed pair of a random cluster, triplets (j < k) per centre in
    chunks of S, with padding chunks inserted after centre 3 and appended at the end."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 3.2, (n_atoms, 3))
    pairs = [(i, j) for i in range(n_atoms) for j in range(n_atoms) if i != j]
    index = {p: n for n, p in enumerate(pairs)}
    ij = np.array(pairs)
    rows, local = [], []
    for i in range(n_atoms):
        trip = [(index[i, j], index[i, k], index[j, k]) for j in range(n_atoms) for k in range(j + 1, n_atoms)
                if i not in (j, k)]
        trip += [(0, 0, 0)] * (-len(trip) % S)      # the centre's run padded to whole chunks
        ok = [t != (0, 0, 0) for t in trip]
        for c in range(len(trip) // S):
            rows.append((trip[c * S:(c + 1) * S], ok[c * S:(c + 1) * S]))
            local.append(i)
        if i == 3:                                   # masked chunks in the middle
            rows += [([(0, 0, 0)] * S, [False] * S)] * 2
            local += [i, i]
    rows += [([(0, 0, 0)] * S, [False] * S)] * pad_chunks  # capacity padding: whole tiles
    local += [n_atoms - 1] * pad_chunks
    t = np.array([r for r, _ in rows])
    mask = np.array([m for _, m in rows])
    return (jnp.asarray(x), jnp.asarray(ij), jnp.asarray(t[..., 0]), jnp.asarray(t[..., 1]), jnp.asarray(t[..., 2]),
            jnp.asarray(local, jnp.int32), jnp.asarray(mask), n_atoms)


def _norm(v):
    d2 = jnp.sum(v * v, -1)
    return jnp.where(d2 > 0, jnp.sqrt(jnp.where(d2 > 0, d2, 1.0)), 0.0)


def _reference(vec, tp, tq, tr, local, mask, n_seg, ctype=CTYPE, alpha=ALPHA):
    """The same sums by plain jnp on every triplet (autodiff differentiates it)."""
    ok = mask[..., None]
    v1, v2 = jnp.where(ok, vec[tp], 1.0), jnp.where(ok, vec[tq], 2.0)  # padding: a harmless shape
    r1, r2, r3 = (_norm(v) for v in (v1, v2, v2 - v1))
    cos = jnp.sum(v1 * v2, -1) / (r1 * r2)
    out = []
    for c in COLS:
        fc = [cutoff(ctype, r, c["rc"], alpha) for r in (r1, r2, r3)]
        ang = 2.0 ** (1 - c["zeta"]) * jnp.maximum(1.0 + c["lam"] * cos, 0.0) ** c["zeta"]
        rad = jnp.exp(-c["eta"] * sum((r - c["rs"]) ** 2 for r in (r1, r2, r3))) * fc[0] * fc[1] * fc[2]
        out.append(jax.ops.segment_sum(jnp.sum(jnp.where(mask, ang * rad, 0.0), -1), local, n_seg))
    return jnp.stack(out, 1)


@pytest.mark.parametrize("kind", ["narrow", "vector"])
def test_tiled_kernel_matches_autodiff_with_padding(kind):
    x, ij, tp, tq, tr, local, mask, n = _problem()
    live = _live_tiles(mask, TILE // S, -(-mask.shape[0] // (TILE // S)))
    assert live.shape[0] > 10 and int(jnp.sum(~live)) >= 3  # many tiles, whole padding tiles skipped
    vectors = lambda x: x[ij[:, 1]] - x[ij[:, 0]]
    if kind == "narrow":
        block = make_narrow_angular_block(CTYPE, ALPHA, COLS, tile_size=TILE)
        fn = lambda x: block(_norm(vectors(x)), tp, tq, tr, local, mask, n)
    else:
        block = make_exp_angular_block(CTYPE, ALPHA, COLS, tile_size=TILE)
        fn = lambda x: block(tuple(vectors(x)[:, d] for d in range(3)), tp, tq, local, mask, n)
    ref = lambda x: _reference(vectors(x), tp, tq, tr, local, mask, n)
    assert float(jnp.min(ref(x))) >= 0 and float(jnp.sum(ref(x) > 0)) > n
    np.testing.assert_allclose(fn(x), ref(x), rtol=1e-12, atol=1e-14)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(n, len(COLS))))
    grad = lambda f: jax.grad(lambda x: jnp.sum(w * f(x)))
    np.testing.assert_allclose(grad(fn)(x), grad(ref)(x), rtol=1e-10, atol=1e-12)
    # second order through the hand-written backward pass (what force training differentiates)
    force_loss = lambda f: jax.grad(lambda s: jnp.sum(grad(lambda x: s * f(x))(x) ** 2))
    np.testing.assert_allclose(force_loss(fn)(1.3), force_loss(ref)(1.3), rtol=1e-10)


@pytest.mark.parametrize("ctype", sorted(CUTOFF_TYPES.values()))
def test_narrow_backward_every_cutoff_type(ctype):
    """The narrow kernel's backward pass uses f_c'/f_c per leg (0 where f_c = 0): exact for every
    cutoff type, with an inner cutoff where the type has one and legs beyond r_c."""
    x, ij, tp, tq, tr, local, mask, n = _problem(seed=2, pad_chunks=3)
    alpha = 0.3 if ctype in INNER_CUTOFF_TYPES else 0.0
    vectors = lambda x: x[ij[:, 1]] - x[ij[:, 0]]
    r = _norm(vectors(x))
    assert float(jnp.max(r)) > 3.0 and float(jnp.min(r)) < 0.3 * 2.5   # beyond r_c and inside r_ci
    block = make_narrow_angular_block(ctype, alpha, COLS, tile_size=TILE)
    fn = lambda x: block(_norm(vectors(x)), tp, tq, tr, local, mask, n)
    ref = lambda x: _reference(vectors(x), tp, tq, tr, local, mask, n, ctype, alpha)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(n, len(COLS))))
    grad = lambda f: jax.grad(lambda x: jnp.sum(w * f(x)))
    np.testing.assert_allclose(grad(fn)(x), grad(ref)(x), rtol=1e-10, atol=1e-12)
