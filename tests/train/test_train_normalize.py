"""Reference energies, energy unit and symmetry-function statistics from the training split."""

import numpy as np
import pytest

from jnnp.data.structure import Structure
from jnnp.descriptors.scaling import scaling_statistics
from jnnp.train.batch import Batcher
from jnnp.train.normalize import (_descriptor_energy_fn, descriptor_statistics, energy_scale,
                                  normalize_potential, refit_shifts)
from jnnp.train.reference import composition_matrix, fit_reference_energies, residual_energies


def _synthetic(e_ref, n=12, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        counts = rng.integers(0, 5, size=3)
        counts[rng.integers(0, 3)] += 1
        numbers = np.repeat([1, 6, 8], counts)
        pos = rng.uniform(0, 10, size=(len(numbers), 3))
        e = float(counts @ e_ref) + noise * rng.normal()
        out.append(Structure(positions=pos, numbers=numbers, energy=e))
    return out


def test_reference_energies_exact():
    e_ref = np.array([-13.6, -1027.4, -2041.9])
    structs = _synthetic(e_ref)
    np.testing.assert_allclose(fit_reference_energies(structs, (1, 6, 8)), e_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(residual_energies(structs, (1, 6, 8), e_ref), 0.0, atol=1e-9)
    # unlabelled structures are ignored
    structs.append(Structure(positions=np.zeros((1, 3)), numbers=[1]))
    np.testing.assert_allclose(fit_reference_energies(structs, (1, 6, 8)), e_ref, rtol=0, atol=1e-9)


def test_reference_energies_single_composition(ethanol):
    """One composition: minimum-norm solution reproducing the mean energy."""
    structs = list(ethanol[:10])
    e = fit_reference_energies(structs, (1, 6, 8))
    X = composition_matrix(structs, (1, 6, 8))
    assert np.allclose(X[0] @ e, np.mean([s.energy for s in structs]))


def test_reference_energies_errors():
    with pytest.raises(ValueError, match="no structure with an energy"):
        fit_reference_energies([Structure(positions=np.zeros((1, 3)), numbers=[1])], (1,))
    with pytest.raises(ValueError, match="not among"):
        composition_matrix([Structure(positions=np.zeros((1, 3)), numbers=[2])], (1,))


def test_energy_scale_kinds():
    e_ref = np.array([-1.0, -2.0, -3.0])
    structs = _synthetic(e_ref, n=30, noise=0.5)
    r = residual_energies(structs, (1, 6, 8), e_ref)
    assert energy_scale(structs, (1, 6, 8), e_ref, "energy_std") == pytest.approx(np.std(r))
    assert energy_scale(structs, (1, 6, 8), e_ref, 0.3) == 0.3
    assert energy_scale(structs, (1, 6, 8), e_ref, "force_rms") == 1.0      # no forces: fallback
    assert energy_scale(structs, (1, 6, 8), e_ref, "auto") == pytest.approx(np.std(r))
    with pytest.raises(ValueError):
        energy_scale(structs, (1, 6, 8), e_ref, "bogus")


def test_descriptor_statistics_streaming(ethanol, potential):
    """Streaming statistics over batches equal n2p2's statistics of all rows at once."""
    structs = list(ethanol[:7])
    batcher = Batcher(potential.spec, structs, 4)
    stats = descriptor_statistics(potential.spec, potential.params, batcher)
    fn = _descriptor_energy_fn(potential.spec, "float64")
    rows = [[] for _ in stats]
    for batch in batcher.batches():
        G, _ = fn(potential.params, batch)
        for c in range(len(stats)):
            rows[c].append(np.asarray(G[c])[np.asarray(batch.graph.element_mask[c])])
    for c, st in enumerate(stats):
        all_rows = np.concatenate(rows[c])
        assert len(all_rows) == 7 * (6, 2, 1)[c]
        ref = scaling_statistics(all_rows)
        for k in ("min", "max", "mean", "sigma"):
            np.testing.assert_allclose(st[k], ref[k], rtol=1e-10, atol=1e-12)


def test_normalize_potential(ethanol, potential):
    structs = list(ethanol[:8])
    b = Batcher(potential.spec, structs, 4)
    pot = normalize_potential(potential, structs, batcher=b, scale="force_rms", center_network=False)
    f = np.concatenate([s.forces.ravel() for s in structs])
    assert float(pot.params["energy"]["scale"]) == pytest.approx(np.sqrt(np.mean(f**2)))
    np.testing.assert_allclose(pot.params["energy"]["shift"], fit_reference_energies(structs, (1, 6, 8)))
    assert float(np.min(pot.params["scaling"][0]["max"] - pot.params["scaling"][0]["min"])) >= 0
    # centring: the mean energy error of the initial model vanishes
    from jnnp.train.step import predict

    pot_c = normalize_potential(potential, structs, batcher=b, scale="force_rms")
    err = [o["energy"] - s.energy for o, s in zip(predict(pot_c, structs, batch_size=4), structs)]
    assert abs(np.mean(err)) < 1e-8


def _with_shift(pot, shift):
    return pot.replace(params={**pot.params, "energy": {**pot.params["energy"], "shift": np.asarray(shift)}})


def test_refit_shifts_solves_the_per_atom_least_squares(radial_potential):
    """After the refit the per-atom energy errors satisfy the normal equations of the per-atom
    least-squares problem (they are orthogonal to every column of composition/N), on the chosen
    subset; the training error does not grow; forces do not change."""
    from jnnp.train.step import predict

    e_ref = np.array([-13.6, -1027.4, -2041.9])
    structs = _synthetic(e_ref, n=16, noise=0.3)
    b = Batcher(radial_potential.spec, structs, 4)
    pot = normalize_potential(radial_potential, structs, batcher=b, scale=0.5)
    bad = _with_shift(pot, np.asarray(pot.params["energy"]["shift"]) + [0.3, -0.2, 0.5])
    n = np.array([len(s.numbers) for s in structs], float)
    X = composition_matrix(structs, (1, 6, 8)) / n[:, None]
    E = np.array([s.energy for s in structs])

    def per_atom_errors(p):
        out = predict(p, structs, batcher=b)
        return (np.array([o["energy"] for o in out]) - E) / n, [o["forces"] for o in out]

    err_bad, f_bad = per_atom_errors(bad)
    fixed = refit_shifts(bad, b)
    err, f = per_atom_errors(fixed)
    np.testing.assert_allclose(X.T @ err, 0.0, atol=1e-9)
    assert np.abs(X.T @ err_bad).max() > 1e-2  # the test starts from a real offset
    assert np.sum(err**2) < np.sum(err_bad**2)
    for a, c in zip(f, f_bad):
        np.testing.assert_array_equal(a, c)
    # a subset: normal equations on its rows only
    include = np.arange(len(structs)) % 2 == 0
    err_sub, _ = per_atom_errors(refit_shifts(bad, b, include=include))
    np.testing.assert_allclose(X[include].T @ err_sub[include], 0.0, atol=1e-9)
    assert np.abs(X.T @ err_sub).max() > 1e-6  # the other half was not fitted


def test_refit_shifts_single_composition_keeps_the_split(ethanol, potential):
    """One composition cannot separate the elements: the minimum-norm correction keeps the
    difference of the per-element shifts and removes the mean per-atom energy error."""
    from jnnp.train.step import predict

    structs = list(ethanol[:8])
    b = Batcher(potential.spec, structs, 4)
    pot = normalize_potential(potential, structs, batcher=b, scale="force_rms")
    off = _with_shift(pot, np.asarray(pot.params["energy"]["shift"]) + 0.01)
    fixed = refit_shifts(off, b)
    err = [(o["energy"] - s.energy) / len(s.numbers) for o, s in zip(predict(fixed, structs, batcher=b), structs)]
    assert abs(np.mean(err)) < 1e-9
    delta = np.asarray(fixed.params["energy"]["shift"]) - np.asarray(off.params["energy"]["shift"])
    w = composition_matrix(structs[:1], (1, 6, 8))[0]
    # the offset added to every element is taken back along the composition only
    np.testing.assert_allclose(delta, -0.01 * w.sum() / (w @ w) * w, rtol=1e-6)
