"""The benchmark configs follow their protocols, and every benchmark script runs on a tiny subset.

Fast tests read the data and check splits and descriptor sizes (no JAX compilation); the slow
ones train each config for one epoch on a few frames through the benchmark scripts and check the
results files they write.
"""

import importlib
import json
import math

import pytest
from _shared import REPO, shared_path

from jnnp.config import load_config
from jnnp.pipeline import build_potential_spec, load_data
from jnnp.train.splits import read_indices


def _cfg(name, overrides=()):
    return load_config(REPO / "configs" / f"{name}.yaml", list(overrides))


@pytest.fixture
def in_repo(monkeypatch):
    """Run from the repository root (configs use paths relative to it), benchmarks importable."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))


def _bench(module):
    return importlib.import_module(module)


# ---- protocols (fast) ------------------------------------------------------------------------

def test_rmd17_is_950_train_50_validation_of_train01_and_all_of_test01(in_repo):
    shared_path("rmd17")
    train, val, test, _ = load_data(_cfg("rmd17"))
    assert (len(train), len(val), len(test)) == (950, 50, 1000)
    assert all(s.source.endswith("rmd17_ethanol_train_01.npz") for s in train + val)
    assert all(s.source.endswith("rmd17_ethanol_test_01.npz") for s in test)


def test_mica_water_splits_each_system_and_never_reads_the_duplicate_test_folders(in_repo):
    root = shared_path("mica-water-scan-2024")
    cfg = _cfg("mica_water")
    train, val, test, _ = load_data(cfg)
    assert len(train) + len(val) + len(test) == 6117      # SOURCE.md: the set.000 frames (6357 with test/)
    systems = {s.source for s in train + val + test}
    assert len(systems) == 10 and not any("/test/" in s for s in systems)
    for system in systems:
        n = sum(s.source == system for s in train + val + test)
        assert sum(s.source == system for s in test) == round(0.1 * n), system
        assert sum(s.source == system for s in val) == round(0.05 * n), system
    # the config lists every system folder of the data set
    on_disk = {p.parent.parent.resolve() for p in root.rglob("set.000/coord.npy") if "test" not in p.parts}
    assert {(REPO / p).resolve() for p in cfg.data.path} == on_disk


def test_li8mo2ni7ti7o32_split_and_descriptor(in_repo):
    shared_path("li8mo2ni7ti7o32-cooper-2020")
    cfg = _cfg("li8mo2ni7ti7o32")
    train, val, test, _ = load_data(cfg)
    assert (len(train), len(val), len(test)) == (701, 41, 82)
    spec = build_potential_spec(cfg, sorted({int(z) for z in train[0].numbers}))
    assert spec.descriptor.n_features == (100,) * 5         # as the config's comment says


def test_tio2_energy_is_tio2_with_the_energy_only_settings():
    """configs/tio2_energy.yaml changes only what its comment names (no force term, 5000 epochs,
    aenet's test set, the final model kept), so the two stay comparable; its test set is aenet
    set003's 770 structures."""
    energy = _cfg("tio2_energy")
    same = _cfg("tio2", ["name=tio2_energy", "run_dir=runs/tio2_energy", "train.force_weight=0",
                         "train.epochs=5000", "train.patience=100000", "train.max_time_s=null", "train.keep=last",
                         "data.split.test_indices=configs/sets/tio2_aenet_set003_test.txt"])
    assert energy == same
    test = read_indices(REPO / energy.data.split.test_indices)
    assert len(test) == len(set(test.tolist())) == 770 and test.min() >= 0 and test.max() < 7815
    assert test[0] == 5 and 5721 in test           # structure0006.xsf first; structure5722.xsf (aenet's worst)


def test_rmd17_cur_is_rmd17_with_the_cur_recipe(in_repo):
    """configs/rmd17_cur.yaml changes only what its comment names; its selection keeps 180 of the
    396 pool functions per element, chosen on training frames (here 4 of them, to stay fast)."""
    shared_path("rmd17")
    cur = _cfg("rmd17_cur")
    same = _cfg("rmd17", ["name=rmd17_cur_ethanol", "run_dir=runs/rmd17_cur/ethanol", "model.descriptor.n_radial=16",
                          "model.descriptor.radial_mode=[shifted, centered]", "model.descriptor.r_min=0.5",
                          "model.descriptor.angular_eta=[0.005, 0.02, 0.05, 0.1, 0.3]",
                          "model.descriptor.zeta=[1, 2, 4, 8, 16]", "model.descriptor.select=cur",
                          "model.descriptor.select_n=180", "train.epochs=2800", "train.optimizer=adamw",
                          "train.weight_decay=0.01", "train.ema_decay=0.999", "train.max_time_s=7200",
                          "model.hidden=[128, 128]"])
    assert cur == same
    train = load_data(cur)[0]
    pool = build_potential_spec(_cfg("rmd17_cur", ["model.descriptor.select=null"]), (1, 6, 8))
    spec = build_potential_spec(_cfg("rmd17_cur", ["model.descriptor.select_frames=4"]), (1, 6, 8), train)
    assert pool.descriptor.n_features == (396,) * 3 and spec.descriptor.n_features == (180,) * 3
    for chosen, candidates in zip(spec.descriptor.functions, pool.descriptor.functions):
        assert set(chosen) <= set(candidates)


@pytest.mark.parametrize("name, elements, n_features", [("tio2", (8, 22), 72), ("tio2_energy", (8, 22), 72),
                                                        ("mica_water", (1, 8, 13, 14, 19), 170)])
def test_descriptor_sizes_match_the_config_comments(name, elements, n_features):
    cfg = _cfg(name)
    spec = build_potential_spec(cfg, elements)
    assert spec.descriptor.n_features == (n_features,) * len(elements)
    rcs = {sf.rc for fs in spec.descriptor.functions for sf in fs if not sf.is_radial}
    assert rcs == {cfg.model.descriptor.angular_cutoff}


# ---- the scripts on tiny subsets (slow: each compiles a training step) -------------------------

TINY = ["train.epochs=1", "model.hidden=[4]", "model.descriptor.n_radial=2",
        "model.descriptor.angular_eta=[0.01]", "model.descriptor.zeta=[1.0]",
        "model.descriptor.lambdas=[1.0]", "train.growth=4.0", "train.plots=false"]

BENCHMARK_KEYS = {"test", "validation", "training", "data", "settings", "machine", "published"}


def _check_errors(e):
    for k in ("energy_rmse_meV_per_atom", "energy_mae_meV_per_atom", "force_rmse_meV_per_A",
              "force_mae_meV_per_A"):
        assert math.isfinite(e[k]) and e[k] > 0, k


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.slow
@pytest.mark.parametrize("name, data, extra", [
    ("tio2", "tio2-artrith-urban-2016",
     ["data.index=':8'", "data.split.validation=0.25", "data.split.test=0.25"]),
    ("li8mo2ni7ti7o32", "li8mo2ni7ti7o32-cooper-2020",
     ["data.index=':8'", "data.split.validation=0.25", "data.split.test=0.25"]),
    ("mica_water", "mica-water-scan-2024",
     ["data.index=':3'", "data.split.validation=0.34", "data.split.test=0.34", "model.descriptor.cutoff=3.0",
      "model.descriptor.angular_cutoff=2.0", "train.batch_size=10"]),
])
def test_train_benchmark_runs_on_a_tiny_subset(in_repo, tmp_path, capsys, name, data, extra):
    shared_path(data)
    tb = _bench("train_benchmarks")
    tb.main([name, "--results-dir", str(tmp_path), "--quiet",
             *_sets([f"run_dir={tmp_path / 'run'}", *TINY, *extra])])
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert BENCHMARK_KEYS <= set(saved) and saved["benchmark"] == name
    _check_errors(saved["test"])
    assert saved["training"]["epochs_run"] == 1 and saved["training"]["wall_s"] > 0
    assert saved["training"]["throughput"]["structures_per_s"] > 0
    assert saved["settings"]["model"]["hidden"] == [4]
    if name == "mica_water":
        per_system = saved["test"]["per_system"]
        assert len(per_system) == 10 and "interface/row/meta/1al" in per_system
        for e in saved["test"]["per_system"].values():
            _check_errors(e)
    out = capsys.readouterr().out
    assert f"{name} (test)" in out and "F RMSE" in out


@pytest.mark.slow
def test_rmd17_benchmark_runs_on_a_tiny_subset(in_repo, tmp_path, capsys):
    shared_path("rmd17")
    _bench("rmd17").main(["--molecules", "ethanol", "--results-dir", str(tmp_path), "--quiet",
                          *_sets([f"run_dir={tmp_path / 'run'}", "data.index=':20'",
                                  "data.split.validation=0.2", *TINY])])
    saved = json.loads((tmp_path / "rmd17.json").read_text())["ethanol"]
    assert saved["n_atoms"] == 9 and saved["data"]["n_test"] == 1000
    assert math.isclose(saved["energy_mae_meV"], 9 * saved["test"]["energy_mae_meV_per_atom"])
    assert saved["force_mae_meV_per_A"] > 0 and saved["published_ani_force_mae_meV_per_A"] == 13.4
    diag = saved["test_diagnostics"]
    worst = [w["force_mae_meV_per_A"] for w in diag["worst_frames"]]
    assert worst == sorted(worst, reverse=True) and diag["force_mae_median_frame_meV_per_A"] <= worst[-1]
    # every frame has 9 atoms: the whole-set MAE is the mean of the 1000 frame MAEs
    assert sum(worst) / 1000 <= saved["force_mae_meV_per_A"] * (1 + 1e-9)
    assert 0 < diag["n_frames_extrapolating"] < 1000  # 16 training frames: many test frames leave their range
    assert all(isinstance(w["extrapolating"], bool) for w in diag["worst_frames"])
    assert "F MAE median frame" in capsys.readouterr().out
    # post hoc from the saved model: the same numbers, the entry kept
    _bench("rmd17").main(["--molecules", "ethanol", "--results-dir", str(tmp_path), "--diagnose-only"])
    again = json.loads((tmp_path / "rmd17.json").read_text())["ethanol"]
    assert again == saved
    # the committee evaluation agrees with the benchmark's own test errors; a committee of one
    # model twice is that model
    _bench("rmd17_committee").main(["ethanol", str(tmp_path / "run"), str(tmp_path / "run"),
                                    "--results-dir", str(tmp_path)])
    com = json.loads((tmp_path / "rmd17_committee.json").read_text())["ethanol"]
    member = com["members"][0]
    assert math.isclose(member["force_mae_meV_per_A"], saved["force_mae_meV_per_A"], rel_tol=1e-9)
    assert math.isclose(member["energy_mae_meV"], saved["energy_mae_meV"], rel_tol=1e-9)
    assert math.isclose(member["median_frame"], diag["force_mae_median_frame_meV_per_A"], rel_tol=1e-9)
    assert math.isclose(com["committee"]["force_mae_meV_per_A"], member["force_mae_meV_per_A"], rel_tol=1e-12)
    assert com["member_force_mae_std"] == 0.0 and "committee of 2" in capsys.readouterr().out


@pytest.mark.slow
def test_kalman_vs_adam_runs_on_a_tiny_subset(in_repo, tmp_path):
    shared_path("rmd17")
    kva = _bench("kalman_vs_adam")
    kva.main(["--results-dir", str(tmp_path), "--run-dir", str(tmp_path / "runs"), "--quiet",
              *_sets(["data.index=':16'", "data.split.validation=0.25", "train.epochs=2", "model.hidden=[4]",
                      "train.plots=false"])])
    res = json.loads((tmp_path / "kalman_vs_adam.json").read_text())
    assert (tmp_path / "kalman_vs_adam.png").stat().st_size > 0
    assert set(res["runs"]) == {"adam", "kalman"}
    for r in res["runs"].values():
        assert [p["epoch"] for p in r["curve"]] == [1, 2]
        assert all(p["time_s"] > 0 and math.isfinite(p["val_force_rmse"]) for p in r["curve"])
    assert res["runs"]["kalman"]["settings"]["batch_size"] == 1
    assert res["runs"]["adam"]["settings"]["batch_size"] == 8
    # default targets: the lowest force RMSE both reached is reached by both, and so are looser ones
    targets = res["targets"]["force_rmse_meV_per_A"]
    assert len(targets) == 3 and all(t["time_s"]["adam"] and t["time_s"]["kalman"] for t in targets)


def test_time_to_reach_and_default_targets(in_repo):
    kva = _bench("kalman_vs_adam")
    curve_a = [{"time_s": 1.0, "val_force_rmse": 100.0}, {"time_s": 2.0, "val_force_rmse": 50.0}]
    curve_b = [{"time_s": 3.0, "val_force_rmse": 80.0}, {"time_s": 5.0, "val_force_rmse": 60.0}]
    assert kva.time_to_reach(curve_a, "val_force_rmse", 60.0) == 2.0
    assert kva.time_to_reach(curve_b, "val_force_rmse", 50.0) is None
    assert kva.default_targets({"a": {"curve": curve_a}, "b": {"curve": curve_b}}, "val_force_rmse") == \
        [60.0, 75.0, 90.0]
