"""Spec JSON round trip, atomic model/checkpoint files, metrics and their files (no compilation)."""

import json

import jax
import numpy as np
import pytest

from jnnp.model import PotentialSpec, init_potential
from jnnp.testing import all_types_spec
from jnnp.train.batch import Batcher
from jnnp.train.checkpoint import (load_checkpoint, load_potential, save_checkpoint, save_model,
                                   spec_from_dict, spec_to_dict)
from jnnp.train.kalman import kalman_filter
from jnnp.train.metrics import (ErrorAccumulator, error_stats, plot_learning_curve, plot_parity,
                                write_history_csv, write_json)
from jnnp.train.optim import make_optimizer
from jnnp.train.step import init_train_state


def _same(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_spec_json_round_trip_every_type():
    desc = all_types_spec((1, 8), cutoff_type=6, alpha=0.1, trainable=("eta", "rs"))
    spec = PotentialSpec(desc, hidden=(7, 5), activations=("s", "p", "l"), normalize_nodes=True, scaling="sigma", scale_min=-1.0,
                         scale_max=1.0, source_units=("bohr", "hartree"))
    d = json.loads(json.dumps(spec_to_dict(spec)))
    back = spec_from_dict(d)
    assert back == spec and hash(back) == hash(spec)
    assert back.source_units == ("bohr", "hartree")
    assert back.descriptor.functions == spec.descriptor.functions


def test_model_round_trip_and_errors(tmp_path, spec):
    pot = init_potential(spec, jax.random.PRNGKey(3))
    save_model(tmp_path / "m", pot, metadata={"note": "x"})
    assert not list((tmp_path / "m").glob("*.tmp"))
    for path in (tmp_path / "m", tmp_path / "m" / "model.json", tmp_path / "m" / "model.msgpack"):
        back = load_potential(path)
        assert back.spec == spec and _same(back.params, pot.params)
    import jax.numpy as jnp

    assert load_potential(tmp_path / "m", dtype=jnp.float32).params["networks"][0]["params"]["layer_0"][
        "kernel"].dtype == jnp.float32
    # parameters of another spec are refused
    other_spec = PotentialSpec(spec.descriptor, hidden=(4,), activations=("t", "l"))
    other = init_potential(other_spec, jax.random.PRNGKey(0))
    save_model(tmp_path / "o", other)
    (tmp_path / "m" / "model.msgpack").write_bytes((tmp_path / "o" / "model.msgpack").read_bytes())
    with pytest.raises(ValueError, match="spec hash"):
        load_potential(tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        load_potential(tmp_path / "nothing")


@pytest.mark.parametrize("opt", ["adam-plateau", "adamw", "kalman"])
def test_checkpoint_round_trip(tmp_path, spec, opt):
    pot = init_potential(spec, jax.random.PRNGKey(1))
    optimizer = (kalman_filter() if opt == "kalman" else
                 make_optimizer(opt.split("-")[0], schedule="plateau" if "plateau" in opt else "cosine"))
    st = init_train_state(pot.params, optimizer)
    save_checkpoint(tmp_path, pot, opt_state=st.opt_state, step=7, extra={"best_params": pot.params},
                    state={"epoch": 2, "history": [{"loss": 0.5}]}, config={"lr": 1e-3},
                    split={"train": [0, 2]})
    ck = load_checkpoint(tmp_path, opt_state_template=st.opt_state,
                         extra_template={"best_params": pot.params})
    assert ck["step"] == 7 and ck["state"]["epoch"] == 2 and ck["split"] == {"train": [0, 2]}
    assert jax.tree.structure(ck["opt_state"]) == jax.tree.structure(st.opt_state)
    assert _same(ck["opt_state"], st.opt_state) and _same(ck["extra"]["best_params"], pot.params)
    assert load_potential(tmp_path / "checkpoint.json").spec == spec


def test_error_accumulator(ethanol, spec):
    structs = list(ethanol[:5])
    b = Batcher(spec, structs, 4)
    systems = ["x", "y", "x", "y", "x"]
    acc = ErrorAccumulator(spec.elements, systems)
    rng = np.random.default_rng(0)
    e_err, f_err = [], []
    for batch in b.batches():
        de = rng.normal(size=batch.n_structures) * 0.01
        df = rng.normal(size=batch.forces.shape) * 0.1
        acc.add(batch, {"energy": batch.energy + de, "forces": batch.forces + df})
        for k in range(batch.n_structures):
            if batch.structure_mask[k]:
                e_err.append(de[k] / 9)
        f_err.append(df[batch.graph.atom_mask])
    s = acc.summary()
    assert s["energy_rmse"] == pytest.approx(1000 * np.sqrt(np.mean(np.square(e_err))))
    f = np.concatenate(f_err)
    assert s["force_rmse"] == pytest.approx(1000 * np.sqrt(np.mean(f**2)))
    assert s["force_mae"] == pytest.approx(1000 * np.mean(np.abs(f)))
    assert s["n_energies"] == 5 and s["n_force_components"] == 5 * 27
    assert set(s["per_element"]) == {"H", "C", "O"} and s["per_element"]["O"]["n_force_components"] == 15
    assert s["per_system"]["x"]["n_energies"] == 3 and s["per_system"]["y"]["n_force_components"] == 54
    assert np.isnan(error_stats([])["rmse"])


def test_metric_files_and_plots(tmp_path, ethanol, spec):
    history = [{"epoch": 1, "train_loss": 2.0, "val_loss": float("nan"), "train_energy_rmse": 5.0,
                "best": True},
               {"epoch": 2, "train_loss": 1.0, "val_loss": 1.5, "train_energy_rmse": 4.0, "best": False}]
    write_history_csv(history, tmp_path / "metrics.csv")
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,val_loss,train_energy_rmse,best" and len(lines) == 3
    write_json({"a": np.float64(1.5), "b": float("inf"), "c": np.arange(2)}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1.5, "b": None, "c": [0, 1]}
    pytest.importorskip("matplotlib")
    assert plot_learning_curve(history, tmp_path / "lc.png")
    b = Batcher(spec, list(ethanol[:3]), 4)
    acc = ErrorAccumulator(spec.elements)
    batch = b.batch([0, 1, 2])
    acc.add(batch, {"energy": batch.energy + 0.01, "forces": batch.forces * 1.1})
    assert plot_parity(acc, tmp_path / "parity.png", title="test")
    for name in ("lc.png", "parity.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
