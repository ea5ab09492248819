"""Energy-only training on cached symmetry functions equals training on neighbour-graph batches."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from jnnp.train.batch import Batcher, make_batch_energy_fn
from jnnp.train.checkpoint import load_checkpoint
from jnnp.train.features import FeatureBatcher, features_apply, make_feature_energy_fn, structure_features
from jnnp.train.loop import TrainSettings, fit
from jnnp.train.loss import LossConfig
from jnnp.train.normalize import normalize_potential

CFG = TrainSettings(epochs=3, batch_size=4, learning_rate=5e-3, schedule="cosine", force_weight=0.0,
                    patience=10, seed=1, plots=False)


@pytest.fixture(scope="module")
def data(ethanol):
    return list(ethanol[:12]), list(ethanol[80:87])


def test_features_and_energies_match_the_graph_path(potential, data):
    train = data[0]
    pot = normalize_potential(potential, train, batch_size=4)
    batcher = Batcher(pot.spec, train, 4)
    feats = structure_features(pot.spec, pot.params, batcher)
    for s, f in zip(train, feats):  # one row per atom of each element, in atom order
        assert [len(f_c) for f_c in f] == [int(np.sum(s.numbers == z)) for z in pot.spec.elements]
    fb = FeatureBatcher(batcher, feats)
    efn = jax.jit(make_feature_energy_fn(pot.spec))
    gfn = jax.jit(make_batch_energy_fn(pot.spec))
    members = [7, 2, 11]  # a partial batch, out of order
    e_feat = np.asarray(efn(pot.params, fb.batch(members)))
    e_graph = np.asarray(gfn(pot.params, batcher.batch(members)))
    np.testing.assert_allclose(e_feat, e_graph, rtol=1e-13, atol=1e-12)
    assert e_feat[3] == 0.0 and np.all(np.abs(e_feat[:3]) > 1.0)
    # same capacities as the graph batches: no extra shapes to compile
    caps = batcher.sizer.sizes(members)["elements"]
    assert [x.shape[0] for x in fb.batch(members).features] == list(caps)


def test_when_features_apply(spec):
    assert features_apply(spec, LossConfig(force_weight=0.0), "adam")
    assert not features_apply(spec, LossConfig(force_weight=1.0), "adam")
    assert not features_apply(spec, LossConfig(force_weight=0.0, stress_weight=1.0), "adam")
    assert not features_apply(spec, LossConfig(force_weight=0.0), "kalman")
    trainable = dataclasses.replace(spec, descriptor=spec.descriptor.with_trainable(("eta",)))
    assert not features_apply(trainable, LossConfig(force_weight=0.0), "adam")


def test_cached_fit_equals_uncached_fit_and_resumes(tmp_path, radial_potential, data):
    potential = radial_potential
    cached, h_c = fit(potential, *data, CFG, tmp_path / "cached", progress=False)
    plain, h_p = fit(potential, *data, dataclasses.replace(CFG, cache_features=False), tmp_path / "plain",
                     progress=False)
    assert len(h_c) == len(h_p) == 3 and h_c.best_epoch == h_p.best_epoch
    for key in ("train_loss", "train_energy_rmse", "val_loss", "val_energy_rmse", "val_energy_mae"):
        np.testing.assert_allclose(h_c.column(key), h_p.column(key), rtol=1e-9, err_msg=key)
    for a, b in zip(jax.tree.leaves(cached.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    # per-epoch validation on features has no forces; the final validation does
    assert all(math.isnan(v) for v in h_c.column("val_force_rmse"))
    assert all(math.isfinite(v) for v in h_p.column("val_force_rmse"))
    import json

    summary = json.loads((tmp_path / "cached" / "metrics.json").read_text())
    assert summary["validation"]["force_rmse"] is not None

    def stop_at(epoch, batch):
        def cb(ev):
            if ev["kind"] == "step" and (ev["epoch"], ev["batch"]) == (epoch, batch):
                raise KeyboardInterrupt
        return cb

    d = tmp_path / "resumed"
    _, h1 = fit(potential, *data, CFG, d, progress=False, callback=stop_at(2, 2))
    assert h1.stop_reason == "interrupted"
    resumed, h2 = fit(potential, *data, CFG, d, resume=True, progress=False)
    assert h2.column("val_loss") == h_c.column("val_loss")
    for a, b in zip(jax.tree.leaves(load_checkpoint(d)["potential"].params),
                    jax.tree.leaves(load_checkpoint(tmp_path / "cached")["potential"].params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_lbfgs_is_full_batch_decreases_the_loss_and_resumes(tmp_path, radial_potential, data):
    potential = radial_potential
    train, val = data
    cfg = dataclasses.replace(CFG, optimizer="lbfgs", batch_size=len(train), epochs=6, eval_batch_size=4)
    with pytest.raises(ValueError, match="full-batch"):
        fit(potential, train, val, dataclasses.replace(cfg, batch_size=4), tmp_path / "bad", progress=False)
    best, hist = fit(potential, train, val, cfg, tmp_path / "ref", progress=False)
    loss = hist.column("train_loss")
    assert len(loss) == 6 and all(b <= a for a, b in zip(loss, loss[1:])) and loss[-1] < 0.5 * loss[0]
    assert all(math.isnan(v) for v in hist.column("lr"))

    def stop_after(epoch):
        def cb(ev):
            if ev["kind"] == "epoch" and ev["epoch"] == epoch:
                raise KeyboardInterrupt
        return cb

    d = tmp_path / "resumed"
    fit(potential, train, val, cfg, d, progress=False, callback=stop_after(3))
    again, h2 = fit(potential, train, val, cfg, d, resume=True, progress=False)
    assert h2.column("train_loss") == loss
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(best.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
