"""The command line: user errors exit 1 with one line; convert → predict reproduces n2p2."""

import json

from _shared import REPO, shared_path
from jnnp.cli import main


def test_validate_ok_and_bad(tmp_path, capsys):
    assert main(["validate", str(REPO / "configs" / "quickstart.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: -1\n")
    assert main(["validate", str(bad)]) == 1
    assert "train.epochs" in capsys.readouterr().err


def test_schema_is_json(capsys):
    assert main(["schema", "md"]) == 0
    assert "timestep_fs" in json.loads(capsys.readouterr().out)["properties"]


def test_convert_then_predict_matches_n2p2_model(tmp_path, capsys):
    model = shared_path("n2p2-examples", "H2O_RPBE-D3", "reference-fit-7241")
    data = shared_path("n2p2-examples", "H2O_RPBE-D3", "input.data")
    units = ["--model-length-unit", "bohr", "--model-energy-unit", "hartree"]
    assert main(["convert", str(model), str(tmp_path / "m"), "--to", "jnnp", *units]) == 0
    out = []
    for m, extra in ((model, units), (tmp_path / "m", [])):
        assert main(["predict", str(m), str(data), "--index", "0", "--length-unit", "bohr",
                     "--energy-unit", "hartree", "-o", str(tmp_path / "p.json"), *extra]) == 0
        out.append(json.loads((tmp_path / "p.json").read_text())[0])
    assert out[0]["energy_eV"] == out[1]["energy_eV"]
    assert out[0]["forces_eV_per_A"] == out[1]["forces_eV_per_A"]
