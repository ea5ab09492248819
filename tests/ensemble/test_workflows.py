"""Sweep and committee configs: validation with key-path errors, and end-to-end runs (CLI) on a
tiny subset of the shipped ethanol data."""

import csv
import json

import numpy as np
import pytest

from _shared import REPO
from jnnp.cli import main
from jnnp.ensemble.config import load_committee_config, load_sweep_config
from jnnp.ensemble.plots import plot_sweep
from jnnp.errors import ConfigError
from md._models import fast_compiles

SWEEPS = sorted((REPO / "configs").glob("sweep_*.yaml"))
COMMITTEES = sorted((REPO / "configs").glob("committee_*.yaml"))
# tiny: 16 frames, radial-only descriptors with two functions per pair, one hidden layer of 3
TINY = ["data.index=':16'", "train.epochs=2", "model.hidden=[3]", "model.descriptor.n_radial=2",
        "model.descriptor.angular_eta=[]", "train.cache_graphs=false"]


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_config_validates(path):
    cfg = load_sweep_config(path)
    assert cfg.name and cfg.sweep.n_members() >= 2


@pytest.mark.parametrize("path", COMMITTEES, ids=[p.stem for p in COMMITTEES])
def test_committee_config_validates(path):
    cfg = load_committee_config(path)
    assert cfg.name and cfg.committee.members >= 2


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: x.npz}\ntrain: {optimizer: kalman}\n"
                   "sweep: {parameters: {hidden: [3], force_weight: [-1]}}\n")
    with pytest.raises(ConfigError) as info:
        load_sweep_config(bad)
    msg = str(info.value)
    assert "bad.yaml" in msg and "sweep.parameters.hidden" in msg and "sweep.parameters.force_weight.0" in msg
    assert "train: " in msg and "kalman" in msg
    bad.write_text("data: {path: x.npz}\nsweep: {mode: zip, parameters: {seed: [1, 2], learning_rate: [0.1]}}\n")
    with pytest.raises(ConfigError, match="sweep: .*equally long"):
        load_sweep_config(bad)
    bad.write_text("data: {path: x.npz}\nsweep: {parameters: {}}\n")
    with pytest.raises(ConfigError, match="sweep.parameters: .*at least one of"):
        load_sweep_config(bad)
    bad.write_text("data: {path: x.npz}\ncommittee: {members: 1, size: 3}\nselect: {k: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_committee_config(bad)
    msg = str(info.value)
    assert "committee.members" in msg and "committee.size" in msg
    bad.write_text("data: {path: x.npz}\nselect: {k: 2}\n")
    with pytest.raises(ConfigError, match="select.candidates is required"):
        load_committee_config(bad)


def test_sweep_dry_run_lists_members(capsys):
    assert main(["sweep", str(REPO / "configs" / "sweep_ethanol.yaml"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == load_sweep_config(REPO / "configs" / "sweep_ethanol.yaml").sweep.n_members()
    assert lines[0].startswith("member 0: ") and "force_weight=" in lines[0]


def test_sweep_plot(tmp_path):
    rows = [{"force_weight": fw, "seed": s, "val_energy_rmse": 10.0 / fw + s, "val_force_rmse": 50.0 + fw}
            for fw in (1.0, 10.0, 100.0) for s in (0, 1)]
    assert plot_sweep(rows, ["force_weight", "seed"], tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert not plot_sweep([], ["force_weight"], tmp_path / "empty.png")


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """``jnnp sweep configs/sweep_ethanol.yaml`` on 16 frames: 2 force weights × 2 data fractions."""
    out = tmp_path_factory.mktemp("sweep")
    args = ["sweep", str(REPO / "configs" / "sweep_ethanol.yaml"), "-q", "--set", f"run_dir={out}",
            "--set", "data.path=" + str(REPO / "tests" / "data" / "rmd17_ethanol_100.npz"),
            "--set", "sweep.parameters.learning_rate=[0.005]",
            "--set", "sweep.parameters.train_fraction=[0.5, 1.0]", "--set", "sweep.parameters.force_weight=[1, 10]"]
    for o in TINY:
        args += ["--set", o]
    with fast_compiles():
        assert main(args) == 0
    return out


@pytest.mark.slow
def test_sweep_end_to_end(sweep_run):
    out = sweep_run
    for name in ("sweep.csv", "sweep.json", "sweep.png", "history.csv", "members/committee.json", "split.json"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 4
    assert [(float(r["force_weight"]), float(r["train_fraction"])) for r in rows] == [
        (1.0, 0.5), (1.0, 1.0), (10.0, 0.5), (10.0, 1.0)]
    split = json.loads((out / "split.json").read_text())
    n_train = len(split["train"])
    assert [int(r["n_train"]) for r in rows] == [n_train // 2, n_train] * 2
    for r in rows:
        assert 1 <= int(r["best_epoch"]) <= 2
        for key in ("val_energy_rmse", "val_force_rmse", "test_energy_rmse", "test_force_rmse"):
            assert np.isfinite(float(r[key])) and float(r[key]) > 0, key
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["n_members"] == 4 and summary["stop_reason"] == "completed"
    history = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert len(history) == 4 * 2


@pytest.mark.slow
def test_cli_predict_and_select_with_a_committee(sweep_run, tmp_path, capsys):
    """The sweep's members folder is a committee: predict with uncertainty, then query by committee."""
    members = sweep_run / "members"
    data = str(REPO / "tests" / "data" / "rmd17_ethanol_100.npz")
    with fast_compiles():
        assert main(["predict", str(members), data, "--index", "90:96", "-o", str(tmp_path / "p.json")]) == 0
        assert main(["select", str(members), data, "--index", "90:96", "-k", "2", "-o", str(tmp_path / "sel")]) == 0
    pred = json.loads((tmp_path / "p.json").read_text())
    assert len(pred) == 6 and all(p["energy_std_eV"] > 0 for p in pred)
    assert all(np.asarray(p["forces_std_eV_per_A"]).shape == (9, 3) for p in pred)
    assert all(isinstance(p["extrapolations"], int) for p in pred)
    sel = json.loads((tmp_path / "sel" / "selection.json").read_text())
    disagreement = [max(p["force_disagreement_eV_per_A"]) for p in pred]
    assert [r["index"] for r in sel["selected"]] == list(np.argsort(disagreement)[::-1][:2])
    assert (tmp_path / "sel" / "selected.input.data").exists()
    assert "committee of 4" in capsys.readouterr().out
    # single models: extrapolation counts in predict's JSON and evaluate's report
    member = str(members / "member_000")
    with fast_compiles():
        assert main(["predict", member, data, "--index", "90:96", "-o", str(tmp_path / "m.json")]) == 0
        capsys.readouterr()
        assert main(["evaluate", member, data, "--index", "90:96"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)["extrapolation"]
    assert report["checked"] and len(report["per_structure"]) == 6
    assert [p["extrapolations"] for p in json.loads((tmp_path / "m.json").read_text())] == report["per_structure"]
    assert ("extrapolation warning" in out.err) == (report["total"] > 0)


@pytest.mark.slow
def test_committee_end_to_end(tmp_path):
    """``jnnp committee``: train, test, MD driven by the committee mean with the disagreement
    logged per sample, then query by committee on the trajectory."""
    args = ["committee", str(REPO / "configs" / "committee_ethanol.yaml"), "-q", "--set", f"run_dir={tmp_path}",
            "--set", "data.path=" + str(REPO / "tests" / "data" / "rmd17_ethanol_100.npz"),
            "--set", "committee.members=3", "--set", "md.steps=40", "--set", "md.thermo_every=5",
            "--set", "md.trajectory_every=5", "--set", "md.samples_per_chunk=4", "--set", "select.k=3",
            "--set", "select.min_separation=1"]
    for o in TINY:
        args += ["--set", o]
    with fast_compiles():
        assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test"]["mean"]["force_rmse"] > 0 and len(summary["test"]["members"]["force_rmse"]) == 3
    thermo = list(csv.DictReader((tmp_path / "md" / "thermo.csv").read_text().splitlines()))
    assert len(thermo) == 8
    for col in ("committee_energy_std_eV", "committee_force_std_max_eV_per_A", "extrapolations"):
        assert col in thermo[0] and all(np.isfinite(float(r[col])) for r in thermo)
    assert all(float(r["committee_force_std_max_eV_per_A"]) > 0 for r in thermo)
    assert summary["selection"]["n_candidates"] == 8 and len(summary["selection"]["selected"]) == 3
    # the MD observable (inside the jitted chunk) and the batched committee on the written
    # trajectory frames (8 decimals) agree on the disagreement of every frame
    scores = json.loads((tmp_path / "selection" / "selection.json").read_text())["scores"]
    logged = [float(r["committee_force_std_max_eV_per_A"]) for r in thermo]
    np.testing.assert_allclose(scores, logged, rtol=1e-5)
    for name in ("committee/committee.json", "md/committee.png", "selection/selected.extxyz",
                 "selection/selected.input.data", "test_metrics.json"):
        assert (tmp_path / name).exists(), name
