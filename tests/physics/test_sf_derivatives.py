"""Derivatives of every symmetry-function type against central finite differences.

The full Jacobian dG/dR of the descriptor matrix (every atom, every column) of a triclinic cell
narrower than 2 r_c is compared with central differences (h = 1e-5 Å), per SF type:

* reverse mode (``jacrev``) through the fast path with the hand-written angular VJP
  (poly2 cutoff, α = 0);
* forward mode (``jacfwd``) through plain autodiff (``fast_angular=False``), with a cosine
  cutoff and an inner cutoff α = 0.25.
"""

import numpy as np
import pytest

from jnnp import testing as T
from jnnp.descriptors.params import init_descriptor_params

CONFIGS = {"fast_rev": dict(cutoff_type=6, alpha=0.0, fast=True, structure="triclinic"),
           "plain_fwd": dict(cutoff_type=1, alpha=0.25, fast=False, structure="ortho")}


@pytest.fixture(scope="module", params=list(CONFIGS))
def jacobians(request):
    cfg = CONFIGS[request.param]
    _, structures = T.default_test_potential()
    spec = T.all_types_spec(cutoff_type=cfg["cutoff_type"], alpha=cfg["alpha"])
    s = structures[cfg["structure"]]
    pos, cell, g = T.padded_inputs(spec, s)
    params = init_descriptor_params(spec)
    G, J = T.descriptor_jacobian_fn(spec, cfg["fast"])(pos, cell, params, g)
    J_fd = T.fd_descriptor_jacobian(spec, pos, cell, params, g, h=1e-5, fast_angular=cfg["fast"])
    return spec, [np.asarray(x) for x in G], [np.asarray(x) for x in J], J_fd


@pytest.mark.parametrize("sf_type", T.SF_TYPES)
def test_sf_jacobian_matches_finite_differences(jacobians, sf_type):
    spec, G, J, J_fd = jacobians
    checked = 0
    for c, fs in enumerate(spec.functions):
        cols = [k for k, sf in enumerate(fs) if sf.type == sf_type]
        if not cols:
            continue
        a, b = J[c][:, cols], J_fd[c][:, cols]
        scale = max(1.0, float(np.abs(a).max()))
        assert np.abs(a).max() > 1e-3, "derivative trivially zero"
        assert np.abs(G[c][:, cols]).max() > 1e-6, "function trivially zero"
        err = float(np.abs(a - b).max())
        assert err <= 1e-7 * scale, f"type {sf_type}, element {spec.elements[c]}: {err:.3e} (scale {scale:.2g})"
        checked += 1
    assert checked == len(spec.elements)


def test_jacobian_translation_sum_rule(jacobians):
    """Σ_atoms dG/dR = 0 for every function (translation invariance of each descriptor)."""
    spec, G, J, _ = jacobians
    for c in range(len(spec.elements)):
        s = J[c].sum(axis=2)
        assert np.abs(s).max() <= 1e-12 * max(1.0, np.abs(J[c]).max())
