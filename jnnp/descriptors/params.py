"""Differentiable descriptor parameters: a pytree of per-element arrays built from a spec.

``params = {"alpha": (), "elements": ({"eta", "rs", "rc", "zeta", "rl": (n_c,)}, ...)}`` in the
spec's column order. λ, the compact subtypes and angular windows stay static in the spec.
Everything in this pytree can be differentiated (η, r_s, r_c, ζ, r_l and the inner-cutoff α).
"""

from __future__ import annotations

import numpy as np

from jnnp.descriptors.spec import DescriptorSpec

__all__ = ["FIELDS", "init_descriptor_params", "spec_with_params"]

FIELDS = ("eta", "rs", "rc", "zeta", "rl")


def init_descriptor_params(spec: DescriptorSpec, dtype=np.float64) -> dict:
    """Parameter pytree holding the spec's numeric values (numpy arrays of ``dtype``)."""
    return {
        "alpha": np.asarray(spec.cutoff_alpha, dtype=dtype),
        "elements": tuple({f: np.array([getattr(sf, f) for sf in fs], dtype=dtype) for f in FIELDS}
                          for fs in spec.functions),
    }


def spec_with_params(spec: DescriptorSpec, params: dict) -> DescriptorSpec:
    """A spec whose numeric fields are replaced by (concrete) values from ``params``."""
    import dataclasses

    funcs = []
    for fs, p in zip(spec.functions, params["elements"]):
        vals = {f: np.asarray(p[f], dtype=np.float64) for f in FIELDS}
        funcs.append(tuple(dataclasses.replace(sf, **{f: float(vals[f][k]) for f in FIELDS})
                           for k, sf in enumerate(fs)))
    return dataclasses.replace(spec, functions=tuple(funcs),
                               cutoff_alpha=float(np.asarray(params["alpha"])))
