"""The descriptor study: configs, key-path errors, CLI, and a tiny end-to-end run."""

import json

import pytest
from _hyper_problem import fast_compiles
from _shared import REPO, SHARED_DATA, TEST_DATA

from jnnp.cli import main
from jnnp.errors import ConfigError
from jnnp.hyper.config import load_hyper_config

CONFIGS = sorted((REPO / "configs").glob("hyper_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_hyper_configs_validate(path):
    cfg = load_hyper_config(path)
    paths = [cfg.data.path] if isinstance(cfg.data.path, str) else cfg.data.path
    if any("shared/data" in p for p in paths) and not SHARED_DATA.exists():
        pytest.skip("config refers to ../shared/data")
    assert cfg.name and cfg.methods
    assert main(["hyper", str(path), "--validate"]) == 0


def test_bad_keys_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: x.npz}\nridge:\n  alpah: 1.0\ngrid:\n  n_radial: -2\nmethods: [grid, magic]\n")
    with pytest.raises(ConfigError) as info:
        load_hyper_config(bad)
    msg = str(info.value)
    assert "bad.yaml" in msg and "ridge.alpah" in msg and "grid.n_radial" in msg and "methods.1" in msg
    assert main(["hyper", str(bad), "--validate"]) == 1
    (tmp_path / "noval.yaml").write_text("data: {path: x.npz, split: {validation: 0.0}}\n")
    with pytest.raises(ConfigError, match="validation"):
        load_hyper_config(tmp_path / "noval.yaml")


TINY = ["data.test_path=null", "data.index=':30'", "data.split={validation: 0.2, test: 0.2, seed: 0}",
        "grid.n_radial=2", "grid.zeta=[1.0]", "grid.lambdas=[1.0]", "pool.n_radial=4",
        "pool.angular_eta=[0.05, 0.2]", "pool.zeta=[1.0, 4.0]", "pool.frames=10", "network.hidden=[4]",
        "train.epochs=2", "train.batch_size=6", "train.warmup_epochs=0", "ridge.steps=2", "ridge.frames_train=8",
        "ridge.frames_validation=4", "ridge.batch_size=4", "unrolled.outer_steps=1", "unrolled.inner_steps=2",
        "unrolled.frames_train=4", "unrolled.frames_validation=4", "unrolled.batch_size=4", "learnable.epochs=1",
        "learnable.batch_size=6", "seeds=[0]"]


@pytest.mark.slow
def test_ethanol_study_runs_on_a_tiny_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    run = tmp_path / "study"
    args = ["hyper", "configs/hyper_ethanol.yaml", "-q", "--set", f"run_dir={run}", "--set",
            f"data.path={TEST_DATA / 'rmd17_ethanol_100.npz'}"]
    for item in TINY:
        args += ["--set", item]
    with fast_compiles():       # compile time dominates: 7 descriptor sets, each trained once
        assert main(args) == 0
    s = json.loads((run / "study.json").read_text())
    assert list(s["methods"]) == ["grid", "grid_centered", "cur", "fps", "ridge", "unrolled", "learnable"]
    assert s["functions_per_element"] == [12, 12, 12] and s["reported"] == "test"   # 3·2 radial + 6 angular
    grid = s["methods"]["grid"]["descriptor"]
    for name, m in s["methods"].items():
        assert [len(v) for v in m["descriptor"].values()] == [12, 12, 12], name
        run0 = m["runs"][0]
        assert run0["test"]["force_rmse"] > 0 and run0["validation"]["force_rmse"] > 0, name
        assert m["method_s"] >= 0 and run0["train_s"] > 0
    # the gradient methods moved the grid's functions; the selections come from the pool
    for name in ("ridge", "unrolled", "learnable"):
        assert s["methods"][name]["descriptor"] != grid, name
    assert len(s["methods"]["ridge"]["history"]) == 3
    assert "joint_model" in s["methods"]["learnable"]
    for f in ("study.png", "descriptors.png", "grid/seed0/metrics.json"):
        assert (run / f).exists(), f
