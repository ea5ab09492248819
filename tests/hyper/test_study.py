"""The descriptor study: configs, key-path errors, CLI, and a tiny end-to-end run."""

import json

import pytest
from _hyper_problem import fast_compiles
from _shared import REPO, SHARED_DATA, TEST_DATA

from jnnp.cli import main
from jnnp.errors import ConfigError, ModelFormatError
from jnnp.hyper.config import load_hyper_config
from jnnp.hyper.study import METHOD_RUNNERS, grid_spec

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
        "learnable.batch_size=6", "hand.match_grid_size=false", "seeds=[0]"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_hand_sets_have_the_grid_size_and_chemistry(path, monkeypatch):
    """Each shipped hand-chosen set loads, has the grid's size per element (the fair comparison)
    and differs from the grid: centred (r_s = 0) and shell-shifted radial functions, narrow angular."""
    monkeypatch.chdir(REPO)
    cfg = load_hyper_config(path)
    assert "hand" in cfg.methods
    elements = {"hyper_ethanol": (1, 6, 8), "hyper_tio2": (8, 22)}[path.stem]
    desc, info = METHOD_RUNNERS["hand"](cfg, elements, [], [], False, {})
    grid = grid_spec(cfg, elements)
    assert desc.n_features == grid.n_features and info["path"] == cfg.hand.path
    for fs in desc.functions:
        radial = [sf for sf in fs if sf.type == 2]
        assert any(sf.rs == 0 for sf in radial) and any(sf.rs > 0 for sf in radial)
        assert {sf.type for sf in fs} == {2, 3}
        assert all(sf.rc == grid.cutoff for sf in radial)


def test_hand_set_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_hyper_config(REPO / "configs/hyper_ethanol.yaml")
    small = tmp_path / "small.nn"
    small.write_text("# too few\n" + "".join(f"symfunction_short {e} 2 H 0.1 0.0 4.0\n" for e in ("C", "H", "O")))
    cfg_small = cfg.model_copy(update={"hand": cfg.hand.model_copy(update={"path": str(small)})})
    with pytest.raises(ValueError, match=r"small.nn: \[1, 1, 1\] functions per element.*grid has \[42, 42, 42\]"):
        METHOD_RUNNERS["hand"](cfg_small, (1, 6, 8), [], [], False, {})
    relaxed = cfg_small.model_copy(update={"hand": cfg_small.hand.model_copy(update={"match_grid_size": False})})
    assert METHOD_RUNNERS["hand"](relaxed, (1, 6, 8), [], [], False, {})[0].n_features == (1, 1, 1)
    bad = tmp_path / "bad.nn"
    bad.write_text("symfunction_short C 2 H 0.1 0.0 4.0\nsymfunction_short H 2 N 0.1 0.0 4.0\n")
    cfg_bad = cfg.model_copy(update={"hand": cfg.hand.model_copy(update={"path": str(bad)})})
    with pytest.raises(ModelFormatError, match="bad.nn.*line 2"):
        METHOD_RUNNERS["hand"](cfg_bad, (1, 6, 8), [], [], False, {})
    (tmp_path / "nohand.yaml").write_text("data: {path: x.npz}\nmethods: [grid, hand]\n")
    with pytest.raises(ConfigError, match="hand.path"):
        load_hyper_config(tmp_path / "nohand.yaml")


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
    assert list(s["methods"]) == ["grid", "grid_centered", "hand", "cur", "fps", "ridge", "unrolled", "learnable"]
    assert s["functions_per_element"] == [12, 12, 12] and s["reported"] == "test"   # 3·2 radial + 6 angular
    grid = s["methods"]["grid"]["descriptor"]
    for name, m in s["methods"].items():
        size = [42, 42, 42] if name == "hand" else [12, 12, 12]  # the hand set is not shrunk
        assert [len(v) for v in m["descriptor"].values()] == size, name
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
