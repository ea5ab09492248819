"""Checkpoints and saved models: flax msgpack for arrays (never pickle), JSON for static specs.

A saved *model* is two files in a folder: ``model.json`` (format, `PotentialSpec` with its
`DescriptorSpec` and `SymFunc` list, free-form metadata) and ``model.msgpack`` (the parameter
pytree: network weights, scaling statistics, energy scale and shifts). `load_potential` needs
nothing else, in particular not the training data.

A training *checkpoint* is ``checkpoint.json`` (spec, training configuration, data split) and
``checkpoint.msgpack``, which alone holds everything that changes during training (parameters,
optimiser state, step, extra pytrees such as the best parameters, and the loop's bookkeeping as
a JSON string), so that one atomic file replacement moves from one consistent state to the next.
Every file is written to a temporary file in the same folder and moved into place with
``os.replace``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from jnnp.atomic import atomic_write_bytes

from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.model.potential import Potential, PotentialSpec, init_potential

__all__ = ["spec_to_dict", "spec_from_dict", "save_model", "load_potential", "save_checkpoint",
           "load_checkpoint", "checkpoint_exists", "MODEL_FORMAT", "CHECKPOINT_FORMAT"]

MODEL_FORMAT = "jnnp-model"
CHECKPOINT_FORMAT = "jnnp-checkpoint"
VERSION = 1


# ----------------------------------------------------------------------------------------------
# Static specs ⇄ JSON
# ----------------------------------------------------------------------------------------------

def _symfunc_to_dict(sf: SymFunc) -> dict:
    d = dataclasses.asdict(sf)
    d["neighbors"] = list(sf.neighbors)
    return d


def _descriptor_to_dict(spec: DescriptorSpec) -> dict:
    return {"elements": list(spec.elements),
            "functions": [[_symfunc_to_dict(sf) for sf in fs] for fs in spec.functions],
            "cutoff_type": spec.cutoff_type, "cutoff_alpha": spec.cutoff_alpha,
            "trainable": list(spec.trainable)}


def _descriptor_from_dict(d: dict) -> DescriptorSpec:
    funcs = tuple(tuple(SymFunc(**{**f, "neighbors": tuple(int(z) for z in f["neighbors"])}) for f in fs)
                  for fs in d["functions"])
    return DescriptorSpec(elements=tuple(int(z) for z in d["elements"]), functions=funcs,
                          cutoff_type=int(d["cutoff_type"]), cutoff_alpha=float(d["cutoff_alpha"]),
                          trainable=tuple(d.get("trainable", ())))


def spec_to_dict(spec: PotentialSpec) -> dict:
    """JSON-ready dict of a `PotentialSpec` (inverse: `spec_from_dict`)."""
    return {"descriptor": _descriptor_to_dict(spec.descriptor), "hidden": list(spec.hidden),
            "activations": list(spec.activations), "normalize_nodes": spec.normalize_nodes,
            "scaling": spec.scaling, "scale_min": spec.scale_min, "scale_max": spec.scale_max,
            "source_units": list(spec.source_units)}


def spec_from_dict(d: dict) -> PotentialSpec:
    """The `PotentialSpec` of a dict written by `spec_to_dict`."""
    return PotentialSpec(descriptor=_descriptor_from_dict(d["descriptor"]),
                         hidden=tuple(int(h) for h in d["hidden"]), activations=tuple(d["activations"]),
                         normalize_nodes=bool(d["normalize_nodes"]), scaling=d["scaling"],
                         scale_min=float(d["scale_min"]), scale_max=float(d["scale_max"]),
                         source_units=tuple(d.get("source_units", ("angstrom", "eV"))))


def _spec_hash(spec_dict: dict) -> str:
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def _to_host(tree):
    return jax.tree.map(np.asarray, tree)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=_json_default)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def _template_params(spec: PotentialSpec):
    return init_potential(spec, jax.random.PRNGKey(0)).params


def save_model(directory, potential: Potential, metadata: dict | None = None) -> Path:
    """Write ``model.json`` and ``model.msgpack`` of ``potential`` into ``directory``.

    Returns the directory. ``metadata`` (JSON-serialisable) is stored in model.json.
    """
    directory = Path(directory)
    sd = spec_to_dict(potential.spec)
    h = _spec_hash(sd)
    body = {"format": MODEL_FORMAT, "version": VERSION, "spec": sd, "spec_hash": h,
            "metadata": metadata or {}}
    payload = serialization.msgpack_serialize(
        {"format": MODEL_FORMAT, "version": VERSION, "spec_hash": h,
         "params": serialization.to_state_dict(_to_host(potential.params))})
    _atomic_write(directory / "model.json", _dumps(body).encode())
    _atomic_write(directory / "model.msgpack", payload)
    return directory


def _model_files(path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        for stem in ("model", "best_model", "checkpoint"):
            if (path / f"{stem}.json").exists():
                return path / f"{stem}.json", path / f"{stem}.msgpack"
        raise FileNotFoundError(f"{path}: no model.json (a jnnp model folder holds model.json and "
                                "model.msgpack)")
    if path.suffix in (".json", ".msgpack"):
        return path.with_suffix(".json"), path.with_suffix(".msgpack")
    raise FileNotFoundError(f"{path}: expected a model folder or a .json/.msgpack file")


def load_potential(path, dtype=None) -> Potential:
    """Load a model saved by `save_model` (a folder, or its model.json/model.msgpack), or the
    current parameters of a training checkpoint (``checkpoint.json``).

    Args:
        path: folder or file.
        dtype: optional floating dtype to cast the parameters to (e.g. ``jnp.float32``).
    """
    jpath, mpath = _model_files(path)
    body = json.loads(jpath.read_text())
    if body.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ValueError(f"{jpath}: not a jnnp model (format {body.get('format')!r})")
    spec = spec_from_dict(body["spec"])
    state = serialization.msgpack_restore(mpath.read_bytes())
    if state.get("spec_hash") != body.get("spec_hash"):
        raise ValueError(f"{mpath}: parameters do not belong to the spec in {jpath.name} "
                         "(spec hash mismatch)")
    params = serialization.from_state_dict(_template_params(spec), state["params"])
    pot = Potential(spec, params)
    return pot.astype(dtype) if dtype is not None else pot


# ----------------------------------------------------------------------------------------------
# Training checkpoints
# ----------------------------------------------------------------------------------------------

def checkpoint_exists(directory) -> bool:
    d = Path(directory)
    return (d / "checkpoint.json").exists() and (d / "checkpoint.msgpack").exists()


def save_checkpoint(directory, potential: Potential, *, opt_state=None, step: int = 0, extra=None,
                    state: dict | None = None, config: dict | None = None, split: dict | None = None) -> Path:
    """Write ``checkpoint.json`` (spec, config, split) and ``checkpoint.msgpack`` atomically.

    Args:
        directory: run folder.
        potential: current model (spec + parameters).
        opt_state: optimiser state pytree (restored with a template, see `load_checkpoint`).
        step: number of optimiser updates.
        extra: further pytrees of arrays (e.g. ``{"best_params": ...}``), restored as raw nested
            dicts (or into a template).
        state: JSON-serialisable loop bookkeeping (epoch, history, ...), stored in the msgpack.
        config: JSON-serialisable training configuration; split: data split record.
    """
    directory = Path(directory)
    sd = spec_to_dict(potential.spec)
    h = _spec_hash(sd)
    side = {"format": CHECKPOINT_FORMAT, "version": VERSION, "spec": sd, "spec_hash": h,
            "config": config or {}, "split": split or {}}
    jpath = directory / "checkpoint.json"
    text = _dumps(side)
    if not jpath.exists() or jpath.read_text() != text:
        _atomic_write(jpath, text.encode())
    payload = {"format": CHECKPOINT_FORMAT, "version": VERSION, "spec_hash": h, "step": int(step),
               "params": serialization.to_state_dict(_to_host(potential.params)),
               "opt_state": serialization.to_state_dict(_to_host(opt_state)) if opt_state is not None else {},
               "extra": serialization.to_state_dict(_to_host(extra)) if extra is not None else {},
               "state": _dumps(state or {})}
    _atomic_write(directory / "checkpoint.msgpack", serialization.msgpack_serialize(payload))
    return directory


def load_checkpoint(directory, *, opt_state_template=None, extra_template=None) -> dict:
    """Read a checkpoint written by `save_checkpoint`.

    Returns a dict with ``potential``, ``opt_state`` (restored into ``opt_state_template`` if
    given, else the raw nested dict), ``step``, ``extra``, ``state``, ``config``, ``split``.
    """
    directory = Path(directory)
    side = json.loads((directory / "checkpoint.json").read_text())
    if side.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{directory}: not a jnnp checkpoint")
    raw = serialization.msgpack_restore((directory / "checkpoint.msgpack").read_bytes())
    if raw.get("spec_hash") != side.get("spec_hash"):
        raise ValueError(f"{directory}: checkpoint.msgpack does not match checkpoint.json (spec hash)")
    spec = spec_from_dict(side["spec"])
    params = serialization.from_state_dict(_template_params(spec), raw["params"])
    opt_state = raw["opt_state"]
    if opt_state_template is not None:
        opt_state = serialization.from_state_dict(opt_state_template, opt_state)
    extra = raw["extra"]
    if extra_template is not None:
        extra = serialization.from_state_dict(extra_template, extra)
    return {"potential": Potential(spec, params), "opt_state": opt_state, "step": int(raw["step"]),
            "extra": extra, "state": json.loads(raw["state"]), "config": side.get("config", {}),
            "split": side.get("split", {})}
