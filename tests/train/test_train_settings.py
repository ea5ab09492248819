"""TrainConfig (YAML schema) and TrainSettings (library) have one set of fields and defaults."""

import dataclasses

import pytest

from jnnp.config import load_config
from jnnp.config.schema import TrainConfig
from jnnp.errors import ConfigError
from jnnp.pipeline import train_settings
from jnnp.train.loop import TrainSettings


def test_same_fields_and_defaults():
    lib = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    schema = TrainConfig().model_dump()
    assert lib == schema


def test_every_config_key_reaches_the_settings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  optimizer: kalman\n  kalman_lambda: 0.99\n  kalman_forces_per_update: 3\n"
                    "  energy_scale: 2.5\n  plateau_patience: 4\n  plots: false\n")
    s = train_settings(load_config(path))
    assert (s.optimizer, s.kalman_lambda, s.kalman_forces_per_update, s.energy_scale, s.plateau_patience,
            s.plots) == ("kalman", 0.99, 3, 2.5, 4, False)


@pytest.mark.parametrize("item", ["train.growth=1.0", "train.kalman_lambda=1.5", "train.energy_scale=median",
                                  "train.plateau_factor=0"])
def test_bad_values_name_the_key(tmp_path, item):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match=item.split("=")[0].replace(".", r"\.")):
        load_config(path, [item])
