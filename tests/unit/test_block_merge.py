"""Blocks with the same functions are evaluated as one (`jnnp.descriptors.compute`).

Automatic grids repeat one function set for every element pair and triplet, so a 2-element grid
has 4 pair and 6 triplet blocks but only one distinct set of each: one kernel per kind. Merged
and block-by-block evaluation must give the same descriptors and the same gradients, on chunked
graphs (hand-written angular VJPs, with and without j→k legs) and on plain ones (autodiff path),
and for weighted functions (12, 13), whose per-block Z weights are applied after the merged sum.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnnp import testing as T
from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.grids import symmetry_function_grid
from jnnp.descriptors.plan import make_plan
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.descriptors.cutoff import cutoff
from jnnp.geometry.graph import build_graph
from jnnp.geometry.pairs import all_image_pairs

RC = 4.0


def _cell():
    s = T.small_periodic_cell(seed=3, n_atoms=9, near_cutoff=False)
    return s.positions, s.numbers, s.cell


def _weighted_spec():
    funcs = [sf for c in (1, 8) for sf in (
        SymFunc(12, c, (), RC, eta=0.3, rs=0.8), SymFunc(12, c, (), RC, eta=1.0),
        SymFunc(13, c, (), RC, eta=0.1, rs=0.5, lam=-1.0, zeta=2.0),
        SymFunc(13, c, (), RC, eta=0.05, lam=1.0, zeta=1.0))]
    return DescriptorSpec.from_functions((1, 8), funcs, cutoff_type=6)


SPECS = {
    "wide grid": symmetry_function_grid((1, 8), RC, n_radial=3, angular_eta=(0.02,), zeta=(1.0, 4.0)),
    "narrow grid": symmetry_function_grid((1, 8), RC, n_radial=2, angular_eta=(0.02,), zeta=(2.0,),
                                          angular_type=3, cutoff_type="cos"),
    "weighted": _weighted_spec(),
}


@pytest.mark.parametrize("name, chunk", [("wide grid", 4), ("narrow grid", 4), ("weighted", 4),
                                         ("weighted", 1)])  # chunk 1: the plain-autodiff path
def test_merged_blocks_equal_separate_blocks(name, chunk):
    spec = SPECS[name]
    pos, numbers, cell = _cell()
    g = build_graph(make_plan(spec), pos, numbers, cell, True, chunk=chunk)
    merged, separate = make_descriptor_fn(spec), make_descriptor_fn(spec, merge_blocks=False)
    n_pair, n_trip = len(merged.plan.pair_blocks), len(merged.plan.triplet_blocks)
    assert (n_pair, n_trip) == (4, 6)
    assert [len(x) for x in merged.groups] == [1, 1], "blocks with equal functions not merged"
    assert [len(x) for x in separate.groups] == [n_pair, n_trip]
    assert g.jk  # host graphs list the j→k legs: narrow blocks take the pair-factor kernel

    rng = np.random.default_rng(0)
    weights = [jnp.asarray(rng.normal(size=(int(np.sum(numbers == z)), len(fs))))
               for z, fs in zip(spec.elements, spec.functions)]

    def value_and_grad(fn):
        def scalar(p):
            G = fn({"elements": ({},) * 2}, p, jnp.asarray(cell), g)
            return sum(jnp.sum(w * x) for w, x in zip(weights, G)), G
        (_, G), dG = T.cheap_jit(jax.value_and_grad(scalar, has_aux=True))(jnp.asarray(pos))
        return [np.asarray(x) for x in G], np.asarray(dG)

    G1, d1 = value_and_grad(merged)
    G2, d2 = value_and_grad(separate)
    for a, b in zip(G1, G2):
        assert np.abs(b).max() > 1e-3
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    assert np.abs(d2).max() > 1e-3
    np.testing.assert_allclose(d1, d2, rtol=1e-11, atol=1e-12)


def _weighted_reference(spec, pos, numbers, cell):
    """Types 12 and 13 by explicit sums over every neighbour and every pair of neighbours."""
    pl = all_image_pairs(pos, cell, True, RC)
    fc = lambda r: np.asarray(cutoff(spec.cutoff_type, jnp.asarray(r), RC))  # noqa: E731
    out = []
    for c, z in enumerate(spec.elements):
        atoms = np.flatnonzero(numbers == z)
        G = np.zeros((len(atoms), len(spec.functions[c])))
        for a, i in enumerate(atoms):
            nb = np.flatnonzero(pl.centers == i)
            v, r, Z = pl.vectors[nb], pl.distances[nb], numbers[pl.neighbors[nb]]
            j, k = np.triu_indices(len(nb), 1)
            r3 = np.linalg.norm(v[k] - v[j], axis=1)
            cos = np.sum(v[j] * v[k], axis=1) / (r[j] * r[k])
            f3 = fc(r3) * (r3 < RC)
            for col, sf in enumerate(spec.functions[c]):
                if sf.type == 12:
                    G[a, col] = np.sum(Z * np.exp(-sf.eta * (r - sf.rs) ** 2) * fc(r))
                else:
                    G[a, col] = np.sum(Z[j] * Z[k] * 2.0 ** (1 - sf.zeta) * (1 + sf.lam * cos) ** sf.zeta
                                       * np.exp(-sf.eta * ((r[j] - sf.rs) ** 2 + (r[k] - sf.rs) ** 2
                                                           + (r3 - sf.rs) ** 2))
                                       * fc(r[j]) * fc(r[k]) * f3)
        out.append(G)
    return out


@pytest.mark.parametrize("chunk", [1, 4])
def test_weighted_functions_equal_explicit_sums(chunk):
    """Each block's Z weights are applied once, to its own centres, after the merged sum."""
    spec = SPECS["weighted"]
    pos, numbers, cell = _cell()
    g = build_graph(make_plan(spec), pos, numbers, cell, True, chunk=chunk)
    G = T.cheap_jit(make_descriptor_fn(spec))({"elements": ({},) * 2}, jnp.asarray(pos), jnp.asarray(cell), g)
    for a, b in zip(G, _weighted_reference(spec, pos, numbers, cell)):
        assert np.abs(b).max() > 1e-2
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)
