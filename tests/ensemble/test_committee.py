"""Committees: vmapped mean/std against an explicit loop over members, the mean as one potential,
MD observables, save/load, and query by committee (selection and written files)."""

import jax
import numpy as np
import pytest

from jnnp.data import read
from jnnp.descriptors.scaling import apply_scaling
from jnnp.ensemble.committee import (Committee, committee_compute, committee_observables, committee_predict,
                                     committee_statistics, is_committee_dir, load_committee, mean_potential,
                                     save_committee)
from jnnp.ensemble.select import query_by_committee, select_top_k, write_selection
from jnnp.model import PotentialSpec, compute, graph_for, init_potential
from md._models import cheap_potential, descriptor_spec, fast_compiles, random_box

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def committee():
    """Three radial-only Si/Cu potentials with one spec and different network weights."""
    with fast_compiles():
        return Committee.from_potentials([cheap_potential(angular=False, seed=s) for s in SEEDS])


@pytest.fixture(scope="module")
def candidates():
    """Six copies of the 24-atom box with displacements small enough (≤ 0.005 Å per component)
    to keep every pair on its side of the cutoff, hence one graph shape for all."""
    s = random_box()
    rng = np.random.default_rng(7)
    return [s.replace(positions=s.positions + rng.uniform(-0.005, 0.005, s.positions.shape), index=i)
            for i in range(6)]


def _explicit(committee, structure, ddof=0):
    outs = [compute(p, structure, stress=False) for p in committee.members()]
    e = np.array([o["energy"] for o in outs])
    f = np.stack([o["forces"] for o in outs])
    a = np.stack([o["energies"] for o in outs])
    return e, f, a


def test_committee_matches_explicit_loop(committee, candidates):
    with fast_compiles():
        out = committee_compute(committee, candidates[0])
        e, f, a = _explicit(committee, candidates[0])
    assert committee.n_members == 3 and committee.shared_descriptor
    np.testing.assert_allclose(out["members"]["energy"], e, rtol=1e-12)
    np.testing.assert_allclose(out["members"]["forces"], f, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out["energy_mean"], e.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["energy_std"], e.std(), rtol=1e-9)
    np.testing.assert_allclose(out["forces_mean"], f.mean(0), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(out["forces_std"], f.std(0), rtol=1e-8, atol=1e-13)
    np.testing.assert_allclose(out["force_disagreement"], np.sqrt((f.var(0)).sum(-1)), rtol=1e-8, atol=1e-13)
    np.testing.assert_allclose(out["energies_mean"], a.mean(0), rtol=1e-12)
    np.testing.assert_allclose(out["energies_std"], a.std(0), rtol=1e-8, atol=1e-14)
    assert out["energy_std"] > 1e-6 and out["force_disagreement"].min() > 0  # members really differ


def test_statistics_ddof():
    rng = np.random.default_rng(0)
    out = {"energy": rng.normal(size=4), "forces": rng.normal(size=(4, 5, 3)), "energies": rng.normal(size=(4, 5))}
    st = committee_statistics(out, ddof=1)
    np.testing.assert_allclose(st["energy_std"], out["energy"].std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(st["forces_std"], out["forces"].std(0, ddof=1), rtol=1e-12)
    with pytest.raises(ValueError, match="more than ddof"):
        committee_statistics({k: v[:1] for k, v in out.items()}, ddof=1)


def test_batched_predict_and_query_by_committee(committee, candidates, tmp_path):
    with fast_compiles():
        stats = committee_predict(committee, candidates, batch_size=4)
        explicit = [_explicit(committee, s) for s in candidates]
        sel = query_by_committee(committee, candidates, 3, by="force", batch_size=4)
    for st, (e, f, a) in zip(stats, explicit):
        np.testing.assert_allclose(st["energy_mean"], e.mean(), rtol=1e-12)
        np.testing.assert_allclose(st["forces_std"], f.std(0), rtol=1e-8, atol=1e-13)
        np.testing.assert_allclose(st["energies_mean"], a.mean(0), rtol=1e-12)
    # the selection: the three frames with the largest max_i |σ_F,i| from the explicit loop
    scores = np.array([np.sqrt(f.var(0).sum(-1)).max() for e, f, a in explicit])
    np.testing.assert_allclose(sel.scores, scores, rtol=1e-8)
    assert sel.indices.tolist() == np.argsort(-scores)[:3].tolist()
    files = write_selection(candidates, sel, tmp_path / "sel")
    for name in ("extxyz", "n2p2", "csv", "json", "png"):
        assert files[name].exists(), name
    back = read(files["extxyz"])
    assert len(back) == 3
    for s, i in zip(back, sel.indices):
        np.testing.assert_allclose(s.positions, candidates[i].positions, atol=1e-7)
        assert s.energy is None and s.forces is None  # model predictions are never written as labels
    n2p2 = read(files["n2p2"])
    np.testing.assert_allclose(n2p2[0].positions, candidates[sel.indices[0]].positions, atol=1e-12)
    assert "query-by-committee rank 1" in files["n2p2"].read_text()


def test_select_top_k():
    s = np.array([0.1, 0.9, 0.8, np.nan, 0.85, 0.2])
    assert select_top_k(s, 3).tolist() == [3, 1, 4]  # NaN (diverged prediction) first
    assert select_top_k(s[[0, 1, 2, 4, 5]], 2, min_separation=2).tolist() == [1, 3]
    assert select_top_k(s[:3], 10).tolist() == [1, 2, 0]
    with pytest.raises(ValueError):
        select_top_k(s, 0)


def test_mean_potential_is_the_committee_mean(committee, candidates):
    mean = mean_potential(committee)
    assert mean.spec.hidden == tuple(3 * h for h in committee.spec.hidden) and mean.spec.scaling == "none"
    with fast_compiles():
        out = compute(mean, candidates[0], stress=False)
        ref = committee_compute(committee, candidates[0])
    np.testing.assert_allclose(out["energy"], ref["energy_mean"], rtol=1e-12)
    np.testing.assert_allclose(out["forces"], ref["forces_mean"], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(out["energies"], ref["energies_mean"], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("scaling,normalize_nodes", [("scale_center", True), ("sigma", False), ("center", True)])
def test_mean_potential_networks(scaling, normalize_nodes):
    """Network level (no descriptors, no compilation): every scaling kind and n2p2's
    normalize_nodes, two hidden layers, members with different scaling statistics and scales."""
    spec = PotentialSpec(descriptor_spec(angular=False), hidden=(5, 3), activations=("t", "s", "l"),
                         normalize_nodes=normalize_nodes, scaling=scaling, scale_min=-1.0, scale_max=1.0)
    rng = np.random.default_rng(1)
    pots = []
    for k in range(3):
        p = init_potential(spec, jax.random.PRNGKey(k))
        params = dict(p.params)
        params["scaling"] = tuple({"min": rng.uniform(0, 1, n), "max": rng.uniform(2, 3, n), "mean": rng.uniform(1, 2, n),
                                   "sigma": rng.uniform(0.2, 0.5, n)} for n in spec.descriptor.n_features)
        params["energy"] = {"scale": np.asarray(rng.uniform(0.5, 2.0)), "shift": rng.normal(size=2)}
        pots.append(p.replace(params=params))
    mean = mean_potential(Committee.from_potentials(pots))
    for c, n in enumerate(spec.descriptor.n_features):
        G = rng.uniform(0, 3, (7, n))
        ref = np.mean([np.asarray(p.spec.network().apply(p.params["networks"][c], apply_scaling(
            scaling, p.params["scaling"][c], G, spec.scale_min, spec.scale_max))) * p.params["energy"]["scale"]
            + p.params["energy"]["shift"][c] for p in pots], axis=0)
        got = (np.asarray(mean.spec.network().apply(mean.params["networks"][c], G)) * mean.params["energy"]["scale"]
               + mean.params["energy"]["shift"][c])
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_md_observables(committee, candidates):
    s = candidates[0]
    graph = graph_for(committee.member(0), s)
    obs = committee_observables(committee)
    with fast_compiles():
        vals = jax.jit(lambda R, cell, g: {k: f(R, cell, g) for k, f in obs.items()})(s.positions, s.cell, graph)
        ref = committee_compute(committee, s)
    np.testing.assert_allclose(vals["committee_energy_std_eV"], ref["energy_std"], rtol=1e-9)
    np.testing.assert_allclose(vals["committee_force_std_max_eV_per_A"], ref["force_disagreement"].max(), rtol=1e-9)
    np.testing.assert_allclose(vals["committee_force_std_mean_eV_per_A"], ref["force_disagreement"].mean(), rtol=1e-9)


def test_save_load(committee, tmp_path):
    save_committee(tmp_path / "c", committee, metadata={"note": "test"})
    assert is_committee_dir(tmp_path / "c") and not is_committee_dir(tmp_path)
    back = load_committee(tmp_path / "c")
    assert back.spec == committee.spec
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(committee.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    other = init_potential(PotentialSpec(descriptor_spec(angular=False), hidden=(3,), activations=("t", "l")),
                           jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="different potential spec"):
        Committee.from_potentials([committee.member(0), other])
    with pytest.raises(FileNotFoundError, match="committee.json"):
        load_committee(tmp_path)
