"""``jnnp diffmd``: the config (key-path errors, consistency rules, configs/diffmd_*.yaml) and
(slow) a tiny end-to-end study whose outputs obey an exact identity."""

import json

import numpy as np
import pytest
import yaml
from _shared import REPO, SHARED_DATA

from jnnp.cli import main
from jnnp.errors import ConfigError
from jnnp.md.diffmd import load_diffmd_config

CONFIGS = sorted((REPO / "configs").glob("diffmd_*.yaml"))

TINY = {"name": "tiny", "model": "MODEL", "structure": "BOX", "trainable_descriptor": ["eta", "rs"],
        "ensemble": "nvt_langevin", "timestep_fs": 1.0, "temperature_k": 100.0, "friction_per_fs": 0.05,
        "equilibration_steps": 50, "skin": 1.0, "neighbors": "host",
        "observables": {"energy": True, "rdf": {"pair": [29, 29], "bin_r": 2.3, "r_max": 3.6, "n_bins": 12,
                                                "sigma": 0.15}},
        "direct": {"samples": 8, "sample_every": 3},
        "reweight": {"samples": 40, "sample_every": 5, "segment_samples": 20, "n_blocks": 4}}


def _write(tmp_path, cfg, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_files_validate(path, monkeypatch, capsys):
    assert CONFIGS, "configs/diffmd_*.yaml"
    monkeypatch.chdir(REPO)
    cfg = load_diffmd_config(path)
    if "shared/data" in cfg.structure and SHARED_DATA.exists():
        assert (REPO / cfg.structure).exists() and (REPO / cfg.model).exists()
    assert main(["diffmd", str(path), "--validate"]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"observables": {"energy": True, "densty": True}}, "observables.densty"),
    ({"observables": {"energy": True, "density": True}}, "npt_nose_hoover"),
    ({"ensemble": "nve"}, "canonical"),
    ({"reweight": {"samples": 40, "segment_samples": 30}}, "segment_samples"),
    ({"direct": None, "reweight": None}, "at least one method"),
    ({"trainable_descriptor": ["lam"]}, "trainable_descriptor.0"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    path = _write(tmp_path, {**TINY, **change})
    with pytest.raises(ConfigError) as info:
        load_diffmd_config(path)
    assert message in str(info.value) and "cfg.yaml" in str(info.value)


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    """16 Cu atoms, 24 differentiated steps and 40 reweighted frames. Exact identity: the
    per-element energy shift adds N·shift to U without changing the dynamics, so
    d⟨E_pot⟩/d shift = N and d⟨g⟩/d shift = 0 for both methods."""
    import ase
    import ase.io
    import jax
    from test_gradients import BOX_RC, _random_box, _spec

    from jnnp.testing import random_potential
    from jnnp.train.checkpoint import save_model

    jax.config.update("jax_enable_x64", True)
    s = _random_box()
    save_model(tmp_path / "model", random_potential(_spec(BOX_RC, False), 4, structures=[s], energy_scale=0.1))
    ase.io.write(tmp_path / "box.extxyz", ase.Atoms(numbers=s.numbers, positions=s.positions, cell=s.cell, pbc=True))
    cfg = _write(tmp_path, {**TINY, "model": str(tmp_path / "model"), "structure": str(tmp_path / "box.extxyz"),
                            "run_dir": str(tmp_path / "run")})
    assert main(["diffmd", str(cfg), "-q"]) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "gradients.json").read_text())
    assert (run / "diffmd.png").stat().st_size > 0
    grads = np.load(run / "gradients.npz")
    for method in ("direct", "reweight"):
        obs = summary[method]["observables"]
        assert set(obs) == {"energy", "g_29_29_bin"}
        assert set(obs["energy"]["descriptor_gradient"]["Cu"]) == {"eta", "rs"}
        np.testing.assert_allclose(grads[f"{method}/energy/energy/shift"], [s.n_atoms], rtol=1e-9)
        np.testing.assert_allclose(grads[f"{method}/g_29_29_bin/energy/shift"], [0.0], atol=1e-9)
        assert all(np.isfinite(v).all() for k, v in grads.items() if k.startswith(method))
    assert summary["reweight"]["frames"] == 40
    assert -1.0 <= summary["comparison"]["energy"]["cosine"] <= 1.0
