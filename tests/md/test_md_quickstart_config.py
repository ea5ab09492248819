"""configs/md_quickstart.yaml runs through ``jnnp md`` with a model like the quick start's.

The quick start's own training is exercised by tests/integration/test_configs.py; here the model
directory holds an untrained potential with the quick start's model section (descriptor grid
shrunk as in that test, to keep the compile short), saved where the config is pointed with
``--set md.model=...``.
"""

import json

import jax
import numpy as np
import pytest
from _shared import REPO

from jnnp.cli import main
from jnnp.config import load_config
from jnnp.data import read
from jnnp.md.output import read_thermo
from jnnp.model.potential import init_potential
from jnnp.pipeline import build_potential_spec
from jnnp.train.checkpoint import save_model

SHRINK = ["model.hidden=[4]", "model.descriptor.n_radial=3", "model.descriptor.zeta=[1.0]"]


@pytest.mark.slow
def test_md_quickstart_config_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    md = load_config(REPO / "configs" / "md_quickstart.yaml")
    assert md.md.model == "runs/quickstart/model"  # where `jnnp train configs/quickstart.yaml` saves it
    assert md.md.structure == load_config(REPO / "configs" / "quickstart.yaml").data.path
    qs = load_config(REPO / "configs" / "quickstart.yaml", SHRINK)
    start = read(md.md.structure)[md.md.structure_index]
    elements = sorted({int(z) for z in start.numbers})
    save_model(tmp_path / "model", init_potential(build_potential_spec(qs, elements), jax.random.PRNGKey(0)))

    rc = main(["md", "configs/md_quickstart.yaml", "-q", "--set", f"md.model={tmp_path / 'model'}",
               "--set", f"run_dir={tmp_path / 'run'}", "--set", "md.steps=40", "--set", "md.thermo_every=5",
               "--set", "md.trajectory_every=20", "--set", "md.samples_per_chunk=4"])
    assert rc == 0
    out = tmp_path / "run" / "md"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["ensemble"] == "nvt_langevin" and summary["n_atoms"] == 9
    thermo = read_thermo(out / "thermo.csv")
    assert len(thermo["step"]) == 8 and np.all(np.isfinite(thermo["e_tot_eV"]))
    assert np.all(np.isnan(thermo["pressure_GPa"]))  # a molecule: no cell, no pressure
    assert (out / "trajectory.extxyz").stat().st_size > 0 and (out / "restart.npz").exists()
