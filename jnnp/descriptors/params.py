"""Differentiable descriptor parameters: a pytree holding the spec's *trainable* numeric fields.

``params = {"alpha": () [if trainable], "elements": ({field: (n_c,)} for each element)}`` with one
entry per field in ``spec.trainable`` (η, r_s, r_c, ζ, r_l), in the spec's column order. Fields
that are not trainable are read from the spec as constants. λ, compact subtypes and angular
windows are always static.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jnnp.descriptors.spec import DescriptorSpec

__all__ = ["FIELDS", "init_descriptor_params", "spec_with_params", "field_values"]

FIELDS = ("eta", "rs", "rc", "zeta", "rl")


def field_values(spec: DescriptorSpec, c: int, field: str) -> np.ndarray:
    """(n_c,) float64 values of ``field`` for element index ``c`` as stored in the spec."""
    return np.array([getattr(sf, field) for sf in spec.functions[c]], dtype=np.float64)


def init_descriptor_params(spec: DescriptorSpec, dtype=np.float64) -> dict:
    """Parameter pytree with the spec's values of its trainable fields (numpy, ``dtype``)."""
    params = {"elements": tuple({f: field_values(spec, c, f).astype(dtype) for f in FIELDS
                                 if f in spec.trainable} for c in range(len(spec.elements)))}
    if "alpha" in spec.trainable:
        params["alpha"] = np.asarray(spec.cutoff_alpha, dtype=dtype)
    return params


def spec_with_params(spec: DescriptorSpec, params: dict) -> DescriptorSpec:
    """The spec with its trainable fields replaced by (concrete) values from ``params``."""
    funcs = []
    for fs, p in zip(spec.functions, params["elements"]):
        vals = {f: np.asarray(v, dtype=np.float64) for f, v in p.items()}
        funcs.append(tuple(dataclasses.replace(sf, **{f: float(v[k]) for f, v in vals.items()})
                           for k, sf in enumerate(fs)))
    alpha = float(np.asarray(params["alpha"])) if "alpha" in params else spec.cutoff_alpha
    return dataclasses.replace(spec, functions=tuple(funcs), cutoff_alpha=alpha)
