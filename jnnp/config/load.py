"""Load YAML configs into validated `RunConfig` objects; errors name the key path."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from jnnp.config.schema import RunConfig
from jnnp.errors import ConfigError

__all__ = ["apply_overrides", "format_validation_error", "load_config", "load_model"]


def format_validation_error(err: ValidationError, source: str = "") -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "<root>"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
        lines.append(f"{source}{key}: {e['msg']}{got}")
    return "\n".join(lines)


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply ``["train.epochs=5", "model.hidden=[10,10]"]`` (YAML values) to a raw dict."""
    raw = dict(raw)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_model(model, path, overrides=()):
    """Read a YAML file into the pydantic ``model`` class, applying ``overrides``; errors name the
    file and key path (relative paths inside stay relative to the working directory)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"{path}: ")) from None


def load_config(path, overrides=()) -> RunConfig:
    """Read a run config (`RunConfig`) from YAML; see `load_model`."""
    return load_model(RunConfig, path, overrides)
