"""Padded batches: union-graph invariants, capacities, cache, and exact energies/forces/stress."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnnp
from jnnp.descriptors.plan import make_plan
from jnnp.geometry.graph import build_graph, graph_sizes, pad_graph
from jnnp.model.evaluate import compiled_properties
from jnnp.data.structure import Structure
from jnnp.testing import small_periodic_cell
from jnnp.train.batch import Batcher, BatchSizer, build_graphs
from jnnp.train.step import predict


def _check_union_invariants(batch, plan):
    g = batch.graph
    A, P = g.n_atoms, g.pair_i.shape[0]
    assert g.pair_i.max() < A and g.pair_j.max() < A
    for c, (atoms, mask) in enumerate(zip(g.element_atoms, g.element_mask)):
        assert atoms.max(initial=0) < A
        assert np.all(g.species[atoms[mask]] == c)
        assert np.all(mask[:mask.sum()]) and not np.any(mask[mask.sum():])   # valid entries first
    for b, (idx, local, mask) in zip(plan.pair_blocks, g.pair_blocks):
        c, e = b.key
        assert np.all(np.diff(local) >= 0) and idx.max(initial=0) < P
        assert local.max(initial=0) < g.element_atoms[c].shape[0]
        assert np.all(g.species[g.pair_i[idx[mask]]] == c) and np.all(g.species[g.pair_j[idx[mask]]] == e)
        # the local index names the centre atom
        assert np.all(g.element_atoms[c][local[mask]] == g.pair_i[idx[mask]])
        assert not np.any(mask[mask.sum():])
    for b, (p, q, r, local, mask) in zip(plan.triplet_blocks, g.triplet_blocks):
        c = b.key[0]
        assert np.all(np.diff(local) >= 0) and max(p.max(initial=0), q.max(initial=0), r.max(initial=0)) < P
        assert local.max(initial=0) < g.element_atoms[c].shape[0]
        assert np.all(g.pair_i[p[mask]] == g.pair_i[q[mask]])
        if b.narrow and g.jk:  # the third leg j→k, offset into the union's pair list like p and q
            assert np.all(g.pair_i[r[mask]] == g.pair_j[p[mask]]) and np.all(g.pair_j[r[mask]] == g.pair_j[q[mask]])
        assert np.all(g.element_atoms[c][local[mask]] == g.pair_i[p[mask]])
    # atoms never pair across structures
    s = batch.atom_structure
    valid = np.zeros(P, bool)
    for idx, _, mask in g.pair_blocks:
        valid[idx[mask]] = True
    assert np.all(s[g.pair_i[valid]] == s[g.pair_j[valid]])


def test_union_graph_invariants(ethanol, spec):
    batcher = Batcher(spec, ethanol[:10], 4)
    batches = list(batcher.batches(epoch=3, seed=1))
    assert len(batches) == 3
    for batch in batches:
        _check_union_invariants(batch, batcher.plan)
    # the last batch has 2 structures and two masked slots
    assert batches[-1].structure_mask.tolist() == [True, True, False, False]
    assert sorted(int(i) for b in batches for i in b.index if i >= 0) == list(range(10))


def test_capacity_levels_few_shapes(ethanol, spec):
    batcher = Batcher(spec, ethanol, 8)
    keys = {b.shape_key for b in batcher.batches(epoch=0, seed=0)}
    keys |= {b.shape_key for b in batcher.batches(epoch=1, seed=0)}
    assert len(keys) <= 2
    sizer = batcher.sizer
    big = sizer.sizes(list(range(8)) * 3)          # far more than a batch: a higher level still fits
    need = sizer.needs[list(range(8)) * 3].sum(0)
    caps = np.array([big["atoms"], big["pairs"], *big["elements"], *big["pair_blocks"],
                     *big["triplet_blocks"]])
    assert np.all(caps >= need)


def test_shuffle_is_seeded(ethanol, spec):
    batcher = Batcher(spec, ethanol[:12], 4)
    a = batcher.order(5, seed=7)
    assert np.array_equal(a, batcher.order(5, seed=7))
    assert not np.array_equal(a, batcher.order(6, seed=7))
    assert sorted(a.tolist()) == list(range(12))


def test_graph_disk_cache(tmp_path, ethanol, spec):
    structs = list(ethanol[:5])
    g1 = build_graphs(spec, structs, cache_dir=tmp_path)
    files = list(tmp_path.glob("graphs-*.npz"))
    assert len(files) == 1
    g2 = build_graphs(spec, structs, cache_dir=tmp_path)
    for a, b in zip(g1, g2):
        assert a.chunk == b.chunk
        assert jax.tree.structure(a) == jax.tree.structure(b)
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    # a different structure set gets another cache file
    build_graphs(spec, structs[:3], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("graphs-*.npz"))) == 2


def _periodic_and_molecule():
    cells = [small_periodic_cell(triclinic=True, seed=1, n_atoms=6),
             small_periodic_cell(triclinic=False, seed=2, n_atoms=9),
             small_periodic_cell(triclinic=True, seed=3, n_atoms=7)]
    mol = Structure(positions=[[0, 0, 0], [1.1, 0, 0], [-0.4, 1.0, 0.1], [1.5, 1.0, 0.3]],
                    numbers=[6, 1, 1, 8])
    return cells + [mol]


@pytest.fixture(scope="module")
def references(ethanol, potential):
    """Per-structure results of jnnp.compute's compiled program (`compiled_properties`, one
    graph per structure, as `jnnp.compute` calls it), with every graph padded to common
    capacities so that the module compiles it only once."""
    structures = list(ethanol[20:26]) + _periodic_and_molecule()
    plan = make_plan(potential.spec.descriptor)
    graphs = [build_graph(plan, s.positions, s.numbers, s.cell, s.pbc, chunk=1) for s in structures]
    sizes = [graph_sizes(g) for g in graphs]
    common = {k: (max(x[k] for x in sizes) if isinstance(sizes[0][k], int)
                  else tuple(max(v) for v in zip(*(x[k] for x in sizes)))) for k in sizes[0]}
    fn = compiled_properties(potential.spec, True, True)
    out = []
    for s, g in zip(structures, graphs):
        pos = np.zeros((common["atoms"], 3))
        pos[:s.n_atoms] = s.positions
        r = fn(potential.params, jnp.asarray(pos), jnp.asarray(s.cell), pad_graph(g, common, plan))
        out.append({"energy": float(r["energy"]), "forces": np.asarray(r["forces"])[:s.n_atoms],
                    "stress": np.asarray(r["stress"])})
    return structures, out


def test_batched_equals_per_structure_molecules(references, potential):
    """Energies and forces of padded batches of 4 (the second one half empty) equal the
    per-structure results."""
    structs, refs = references[0][:6], references[1][:6]
    out = predict(potential, structs, batch_size=4)
    for s, o, ref in zip(structs, out, refs):
        assert abs(o["energy"] - ref["energy"]) < 1e-10
        np.testing.assert_allclose(o["forces"], ref["forces"], rtol=0, atol=1e-10)


def test_batched_equals_per_structure_periodic(references, potential):
    """Periodic cells of different shape and size (atoms see their own images) batched with a
    molecule: each keeps its own cell; energies, forces and stress equal the per-structure ones."""
    structs, refs = references[0][6:], references[1][6:]
    out = predict(potential, structs, batch_size=3, stress=True)
    for s, o, ref in zip(structs, out, refs):
        assert abs(o["energy"] - ref["energy"]) < 1e-10
        np.testing.assert_allclose(o["forces"], ref["forces"], rtol=0, atol=1e-10)
        if s.periodic:
            np.testing.assert_allclose(o["stress"], ref["stress"], rtol=0, atol=1e-10)
        else:
            assert np.all(o["stress"] == 0)


@pytest.mark.slow
def test_compute_agrees_with_reference_program(references, potential):
    """The reference equals jnnp.compute itself (one structure: one more compilation)."""
    s, ref = references[0][0], references[1][0]
    out = jnnp.compute(potential, s, stress=False)
    assert abs(out["energy"] - ref["energy"]) < 1e-10
    np.testing.assert_allclose(out["forces"], ref["forces"], rtol=0, atol=1e-10)


def test_sizer_validates():
    with pytest.raises(ValueError):
        BatchSizer([], 4)
