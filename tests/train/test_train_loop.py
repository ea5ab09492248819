"""The training loop: learning, outputs, exact resume, interrupts, NaN guard, saved models."""

import csv
import json
import math
import os
import signal

import jax
import numpy as np
import pytest

from jnnp.train.batch import Batcher
from jnnp.train.checkpoint import load_checkpoint, load_potential
from jnnp.train.loop import TrainSettings, evaluate, fit
from jnnp.train.normalize import refit_shifts
from jnnp.train.step import predict

CFG = TrainSettings(epochs=3, batch_size=4, learning_rate=5e-3, schedule="cosine", force_weight=1.0,
                    patience=10, seed=1, plots=False)


@pytest.fixture(scope="module")
def data(ethanol):
    return list(ethanol[:12]), list(ethanol[80:88])


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, potential, data):
    """An uninterrupted run of CFG (shared by several tests)."""
    d = tmp_path_factory.mktemp("uninterrupted")
    best, hist = fit(potential, *data, CFG.__class__(**{**CFG.to_dict(), "plots": True}), d, progress=False)
    return d, best, hist


def _same_tree(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_fit_learns_and_writes_outputs(reference_run, data):
    d, best, hist = reference_run
    assert hist.stop_reason == "completed" and len(hist) == 3
    losses = hist.column("train_loss")
    assert losses[-1] < losses[0]
    assert hist.column("val_loss")[-1] < hist.column("val_loss")[0]
    assert hist.best_epoch == int(np.argmin(hist.column("val_loss"))) + 1
    for name in ("metrics.csv", "metrics.json", "checkpoint.json", "checkpoint.msgpack", "model/model.json",
                 "model/model.msgpack", "learning_curve.png", "validation_parity.png"):
        assert (d / name).exists(), name
    header = (d / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "val_loss", "val_energy_rmse", "val_force_rmse"} <= set(header)
    assert all(math.isfinite(v) for v in hist.column("val_force_rmse"))
    rows = list(csv.DictReader(open(d / "validation_structures.csv")))      # the kept model's errors
    e = np.array([float(r["energy_error_meV_per_atom"]) for r in rows])
    m = json.loads((d / "metrics.json").read_text())["validation"]
    assert len(rows) == len(data[1]) and np.sqrt(np.mean(e**2)) == pytest.approx(m["energy_rmse"], rel=1e-9)


def test_best_model_has_refitted_shifts(reference_run, data):
    """`fit` ends by refitting the reference energies: for this one-composition training set the
    mean per-atom energy error of the returned (and saved) model on it is zero."""
    import json

    d, best, hist = reference_run
    train = data[0]
    err = [(o["energy"] - s.energy) / len(s.numbers) for o, s in zip(predict(best, train, batch_size=4), train)]
    assert abs(np.mean(err)) < 1e-9 < np.std(err)
    assert json.loads((d / "model" / "model.json").read_text())["metadata"]["shifts_refitted"] is True


def test_saved_model_predicts_identically(reference_run, data):
    d, best, hist = reference_run
    loaded = load_potential(d / "model")
    assert loaded.spec == best.spec
    assert _same_tree(loaded.params, best.params)
    val = data[1]
    for a, b in zip(predict(best, val, batch_size=4), predict(loaded, val, batch_size=4)):
        assert a["energy"] == b["energy"] and np.array_equal(a["forces"], b["forces"])
    # the training checkpoint holds the last state and the best parameters before the final
    # refit of the reference energies, which gives the returned model again
    ck = load_checkpoint(d)
    assert ck["state"]["epoch"] == 3 and ck["config"]["batch_size"] == 4
    ck_best = best.replace(params=jax.tree.unflatten(jax.tree.structure(best.params),
                                                     jax.tree.leaves(ck["extra"]["best_params"])))
    assert not _same_tree(ck_best.params, best.params)
    refit = refit_shifts(ck_best, Batcher(best.spec, data[0], CFG.batch_size))
    for a, b in zip(jax.tree.leaves(refit.params), jax.tree.leaves(best.params)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)


def test_resume_after_interrupts_is_exact(tmp_path, reference_run, potential, data):
    """SIGINT mid-epoch 1, then KeyboardInterrupt mid-epoch 2: resuming twice gives the same
    parameters (bit for bit) and history as the uninterrupted run."""
    d_ref, best_ref, hist_ref = reference_run

    def sigint_at(epoch, batch):
        def cb(ev):
            if ev["kind"] == "step" and (ev["epoch"], ev["batch"]) == (epoch, batch):
                os.kill(os.getpid(), signal.SIGINT)
        return cb

    def raise_at(epoch, batch):
        def cb(ev):
            if ev["kind"] == "step" and (ev["epoch"], ev["batch"]) == (epoch, batch):
                raise KeyboardInterrupt
        return cb

    _, h1 = fit(potential, *data, CFG, tmp_path, progress=False, callback=sigint_at(1, 2))
    assert h1.stop_reason == "interrupted" and len(h1) == 0
    assert load_checkpoint(tmp_path)["state"]["batch"] == 2
    _, h2 = fit(potential, *data, CFG, tmp_path, resume=True, progress=False, callback=raise_at(2, 1))
    assert h2.stop_reason == "interrupted" and len(h2) == 1
    best, h3 = fit(potential, *data, CFG, tmp_path, resume=True, progress=False)
    assert h3.stop_reason == "completed" and len(h3) == 3
    assert h3.column("train_loss") == hist_ref.column("train_loss")
    assert h3.column("val_loss") == hist_ref.column("val_loss")
    assert _same_tree(load_checkpoint(tmp_path)["potential"].params,
                      load_checkpoint(d_ref)["potential"].params)
    assert _same_tree(best.params, best_ref.params)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, potential, data):
    train, val = data

    def stop_after_epoch_1(ev):
        if ev["kind"] == "epoch" and ev["epoch"] == 1:
            raise KeyboardInterrupt

    fit(potential, train, val, CFG, tmp_path, progress=False, callback=stop_after_epoch_1)
    good = (tmp_path / "checkpoint.msgpack").read_bytes()
    poisoned = list(train)
    poisoned[5] = poisoned[5].replace(energy=float("nan"))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        best, hist = fit(potential, poisoned, val, CFG, tmp_path, resume=True, progress=False)
    assert hist.stop_reason.startswith("non-finite")
    assert "epoch 2" in hist.stop_reason and poisoned[5].provenance in hist.stop_reason
    assert (tmp_path / "checkpoint.msgpack").read_bytes() == good
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(best.params))
    assert hist.best_epoch == 1


def test_evaluate_helper(tmp_path, reference_run, data):
    _, best, _ = reference_run
    val = data[1]
    systems = ["a", "b"] * 4
    m = evaluate(best, val, batch_size=4, systems=systems, run_dir=tmp_path, name="test", plots=False)
    assert set(m["per_system"]) == {"a", "b"} and m["per_system"]["a"]["n_energies"] == 4
    assert set(m["per_element"]) == {"H", "C", "O"}
    assert m["n_energies"] == 8 and m["n_force_components"] == 8 * 9 * 3
    assert (tmp_path / "test_metrics.json").exists()
    out = predict(best, val, batch_size=4)
    e = np.array([(o["energy"] - s.energy) / 9 for o, s in zip(out, val)]) * 1000
    assert m["energy_rmse"] == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-10)
    rows = list(csv.DictReader(open(tmp_path / "test_structures.csv")))     # per-structure errors
    assert [int(r["index"]) for r in rows] == list(range(8))
    assert [(r["source"], int(r["frame"])) for r in rows] == [(s.source, s.index) for s in val]
    assert [float(r["energy_error_meV_per_atom"]) for r in rows] == pytest.approx(e, rel=1e-9)
    f = [np.sqrt(np.mean((o["forces"] - s.forces) ** 2)) * 1000 for o, s in zip(out, val)]
    assert [float(r["force_rmse_meV_per_A"]) for r in rows] == pytest.approx(f, rel=1e-8)


def test_fit_with_weight_average(tmp_path, radial_potential, data):
    """With ``ema_decay`` the validation scores and the kept model are the averaged weights, not
    the last step's; an interrupted and resumed run still equals the uninterrupted one."""
    cfg = TrainSettings(**{**CFG.to_dict(), "ema_decay": 0.9, "refit_shifts": False})
    best, hist = fit(radial_potential, *data, cfg, tmp_path / "a", progress=False)
    ck = load_checkpoint(tmp_path / "a")
    kept = best.replace(params=jax.tree.unflatten(jax.tree.structure(best.params),
                                                  jax.tree.leaves(ck["extra"]["best_params"])))
    assert _same_tree(kept.params, best.params)
    val_loss = evaluate(best, data[1], batch_size=4, loss=cfg.loss, plots=False)["loss"]
    assert val_loss == pytest.approx(hist[hist.best_epoch - 1]["val_loss"], rel=1e-10)
    # the last epoch is the best one, and the kept weights are its average, not its iterate
    assert hist.best_epoch == len(hist)
    assert not _same_tree(ck["potential"].params["networks"], best.params["networks"])

    def raise_at(ev):
        if ev["kind"] == "step" and (ev["epoch"], ev["batch"]) == (2, 2):
            raise KeyboardInterrupt

    fit(radial_potential, *data, cfg, tmp_path / "b", progress=False, callback=raise_at)
    resumed, h2 = fit(radial_potential, *data, cfg, tmp_path / "b", resume=True, progress=False)
    assert h2.column("val_loss") == hist.column("val_loss")
    assert _same_tree(resumed.params, best.params)


def test_settings_validation():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainSettings(optimizer="kalman", ema_decay=0.99)
    with pytest.raises(ValueError):
        TrainSettings(optimizer="sgd")
    with pytest.raises(ValueError):
        TrainSettings(schedule="step")


@pytest.mark.slow
def test_fit_with_kalman(tmp_path, potential, data):
    cfg = TrainSettings(epochs=2, batch_size=1, optimizer="kalman", kalman_forces_per_update=4, plots=False)
    best, hist = fit(potential, data[0][:6], data[1], cfg, tmp_path, progress=False)
    assert hist.stop_reason == "completed"
    assert hist.column("val_loss")[-1] < hist.column("val_loss")[0] or hist.best_epoch >= 1


def test_keep_last_returns_the_final_epoch(tmp_path, radial_potential, data):
    """``keep="last"`` returns, saves and validates the final epoch's weights even where an earlier
    epoch had the lower validation loss (a high constant learning rate makes it bounce here);
    ``best_epoch`` still names that earlier epoch."""
    cfg = TrainSettings(**{**CFG.to_dict(), "epochs": 4, "learning_rate": 0.2, "schedule": "constant",
                           "warmup_epochs": 0, "refit_shifts": False, "keep": "last"})
    last, hist = fit(radial_potential, *data, cfg, tmp_path / "last", progress=False)
    assert hist.best_epoch < len(hist)                  # the case where best and last differ
    final = load_checkpoint(tmp_path / "last")["potential"]
    assert _same_tree(last.params, final.params)
    assert _same_tree(load_potential(tmp_path / "last" / "model").params, last.params)
    val_loss = evaluate(last, data[1], batch_size=4, loss=cfg.loss, plots=False)["loss"]
    assert val_loss == pytest.approx(hist[-1]["val_loss"], rel=1e-10)
    best, _ = fit(radial_potential, *data, TrainSettings(**{**cfg.to_dict(), "keep": "best"}), tmp_path / "best",
                  progress=False)
    assert not _same_tree(best.params, last.params)
    with pytest.raises(ValueError, match="keep"):
        TrainSettings(keep="first")
