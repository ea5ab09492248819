"""Every config in configs/ validates, and the quick start runs end to end on a tiny subset."""

import json

import pytest

from _shared import REPO, SHARED_DATA
from jnnp.config import load_config
from jnnp.errors import ConfigError

# sweep_*/committee_* configs have their own schemas: validated in tests/ensemble/test_workflows.py;
# hyper_* (descriptor studies) in tests/hyper/test_study.py; diffmd_* in tests/md/test_diffmd.py
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml")
                 if not p.name.startswith(("sweep_", "committee_", "hyper_", "diffmd_")))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path):
    cfg = load_config(path)
    for p in (cfg.data and cfg.data.path, cfg.md and cfg.md.structure):
        if p and "shared/data" in p and not SHARED_DATA.exists():
            pytest.skip("config refers to ../shared/data")
    assert cfg.name


def test_bad_key_names_the_key_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden: [10, -3]\ntrain:\n  epoch: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    msg = str(info.value)
    assert "model.hidden.1" in msg and "train.epoch" in msg and "bad.yaml" in msg


@pytest.mark.slow
def test_quickstart_runs_on_a_tiny_subset(tmp_path, monkeypatch):
    from jnnp.pipeline import train_from_config

    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / "quickstart.yaml", [
        f"run_dir={tmp_path / 'qs'}", "data.index=':16'", "train.epochs=2", "model.hidden=[4]",
        "model.descriptor.n_radial=3", "model.descriptor.zeta=[1.0]", "md.steps=20", "md.thermo_every=5",
        "md.trajectory_every=10", "md.samples_per_chunk=2"])
    summary = train_from_config(cfg, progress=False)
    assert summary["test"]["n_energies"] > 0
    for f in ("model/model.json", "metrics.csv", "metrics.json", "test_metrics.json", "test_structures.csv",
              "md/thermo.csv", "md/summary.json"):
        assert (tmp_path / "qs" / f).exists(), f
    assert json.loads((tmp_path / "qs" / "summary.json").read_text())["md"]["steps"] == 20
