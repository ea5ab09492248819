"""Extrapolation warnings: symmetry-function values outside the training range are counted."""

import jax
import numpy as np
import pytest

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.scaling import identity_statistics, scaling_statistics
from jnnp.model import graph_for
from jnnp.model.extrapolation import (describe_function, extrapolation_observables, extrapolation_report,
                                      has_statistics, make_extrapolation_fn)
from md._models import cheap_potential, fast_compiles, random_box


def _descriptors_and_counts(pot, s):
    """(G per element, extrapolation counts, MD observables) of one structure, one program."""
    dfn = make_descriptor_fn(pot.spec.descriptor)
    efn = make_extrapolation_fn(pot.spec)
    obs = extrapolation_observables(pot)

    @jax.jit
    def both(params, R, cell, graph):
        return (dfn(params["descriptor"], R, cell, graph), efn(params, R, cell, graph),
                {k: f(R, cell, graph) for k, f in obs.items()})

    g = graph_for(pot, s)
    G, counts, o = both(pot.params, s.positions, s.cell, g)
    G = [np.asarray(x)[np.asarray(m)] for x, m in zip(G, g.element_mask)]
    return G, jax.device_get(counts), jax.device_get(o)


@pytest.fixture(scope="module")
def trained():
    """The cheap radial potential with scaling statistics fitted on the box itself, the box and a
    copy compressed by 8 % (shorter distances: radial values above the training maxima)."""
    with fast_compiles():
        pot = cheap_potential(angular=False)
        box = random_box()
        dfn = jax.jit(make_descriptor_fn(pot.spec.descriptor))
        g = graph_for(pot, box)
        G = [np.asarray(x)[np.asarray(m)] for x, m in zip(dfn(pot.params["descriptor"], box.positions, box.cell, g),
                                                            g.element_mask)]
    params = dict(pot.params)
    params["scaling"] = tuple(scaling_statistics(x) for x in G)
    squeezed = box.replace(positions=box.positions * 0.92, cell=box.cell * 0.92)
    return pot.replace(params=params), box, squeezed


def test_counts_on_a_compressed_structure(trained):
    pot, box, squeezed = trained
    with fast_compiles():
        _, c0, o0 = _descriptors_and_counts(pot, box)
        G, c, o = _descriptors_and_counts(pot, squeezed)
    assert int(c0["total"]) == 0 and int(o0["extrapolations"]) == 0  # the training structure itself
    total = atoms = 0
    for k, (Gc, st) in enumerate(zip(G, pot.params["scaling"])):
        below, above = Gc < st["min"], Gc > st["max"]
        assert c["below"][k].tolist() == below.sum(0).tolist()
        assert c["above"][k].tolist() == above.sum(0).tolist()
        np.testing.assert_allclose(c["g_max"][k], Gc.max(0), rtol=1e-12)
        total += int((below | above).sum())
        atoms += int((below | above).any(1).sum())
    assert total > 0 and int(c["total"]) == total and int(c["atoms"]) == atoms
    assert int(o["extrapolations"]) == total and int(o["extrapolating_atoms"]) == atoms
    assert sum(int(x.sum()) for x in c["above"]) > 0  # compression raises radial values


def test_report_over_a_data_set(trained):
    pot, box, squeezed = trained
    with fast_compiles():
        G, c, _ = _descriptors_and_counts(pot, squeezed)
        rep = extrapolation_report(pot, [box, squeezed, box], batch_size=2)
    assert rep.checked
    assert rep.per_structure.tolist() == [0, int(c["total"]), 0]
    assert rep.atoms_per_structure.tolist() == [0, int(c["atoms"]), 0]
    assert rep.n_structures_affected == 1 and rep.total == int(c["total"])
    by_key = {(f["element"], f["index"]): f for f in rep.functions}
    for k, el in enumerate(("Si", "Cu")):
        for i in range(len(c["below"][k])):
            n = int(c["below"][k][i] + c["above"][k][i])
            assert ((el, i) in by_key) == (n > 0)
            if n:
                f = by_key[(el, i)]
                assert f["above"] == int(c["above"][k][i]) and f["seen_max"] > f["train_max"]
    lines = rep.lines()
    assert lines[0].startswith("extrapolation warning:") and f"{rep.total} symmetry-function values" in lines[0]
    d = rep.to_dict()
    assert d["structures"][0]["values"] == rep.total and d["total"] == rep.total


def test_unfitted_statistics_are_reported_not_ignored(trained):
    pot, box, squeezed = trained
    params = dict(pot.params)
    params["scaling"] = tuple(identity_statistics(n) for n in pot.spec.descriptor.n_features)
    raw = pot.replace(params=params)
    assert has_statistics(pot) and not has_statistics(raw)
    rep = extrapolation_report(raw, [squeezed])
    assert not rep.checked and "not checked" in rep.lines()[0]
    with pytest.raises(ValueError, match="no symmetry-function statistics"):
        extrapolation_observables(raw)


def test_describe_function(trained):
    pot = trained[0]
    sf = pot.spec.descriptor.functions[0][1]
    assert describe_function(sf).startswith("type 2 Si-") and "rc=4" in describe_function(sf)
