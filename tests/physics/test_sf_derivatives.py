"""Derivatives of every symmetry-function type against central finite differences.

For each SF type and central element, the derivatives of the descriptor matrix w.r.t. all atom
positions of a triclinic cell narrower than 2 r_c (atoms see their own images) are compared with
central differences (h = 1e-5 Å) of the descriptor itself:

* ``fast_reverse``: reverse mode through the fast path (hand-written VJP of the exponential
  angular blocks). The Jacobian rows of each (type, element) group are contracted with random
  positive weights (one reverse pass per group, `jnnp.testing.descriptor_vjp_fn`), which checks
  every entry of the group at once;
* ``plain_forward``: the full Jacobian by forward mode (``jacfwd``) through plain autodiff
  (``fast_angular=False``), entry by entry.

(Other cutoff types and α are covered by the cutoff unit tests and by the trainable-parameter
path in test_safety; here the spec is that of `jnnp.testing.all_types_spec`, poly2, α = 0.)
"""

import numpy as np
import pytest

from jnnp import testing as T
from jnnp.descriptors.params import init_descriptor_params

CONFIGS = {"fast_reverse": True, "plain_forward": False}


@pytest.fixture(scope="module", params=list(CONFIGS))
def derivatives(request):
    """{(element index, type): (analytic, finite-difference, G of the group)}."""
    fast = CONFIGS[request.param]
    pot, structures = T.default_test_potential()
    spec = pot.spec.descriptor
    pos, cell, g = T.padded_inputs(spec, structures["triclinic"])
    params = init_descriptor_params(spec)
    # the finite differences always use the (cached) fast forward pass: same values as the plain one
    J_fd = T.fd_descriptor_jacobian(spec, pos, cell, params, g, h=1e-5, fast_angular=True)
    rows = [np.flatnonzero(np.asarray(m)) for m in g.element_mask]
    keys = [(c, t) for c in range(len(spec.elements)) for t in T.SF_TYPES]
    cols = {(c, t): [k for k, sf in enumerate(spec.functions[c]) if sf.type == t] for c, t in keys}
    out = {}
    if fast:
        groups = [(c, cols[c, t], rows[c]) for c, t in keys]
        W = T.group_weights(spec, groups, g.element_mask[0].shape[0], 0)
        G, dS = T.descriptor_vjp_fn(spec, True)(pos, cell, params, g, tuple(W))
        for k, (c, t) in enumerate(keys):
            fd = np.einsum("ij,ijnx->nx", W[c][k], J_fd[c])
            out[c, t] = (np.asarray(dS[k]), fd, np.asarray(G[c])[:, cols[c, t]])
    else:
        G, J = T.descriptor_jacobian_fn(spec, False)(pos, cell, params, g)
        for c, t in keys:
            out[c, t] = (np.asarray(J[c])[:, cols[c, t]], J_fd[c][:, cols[c, t]],
                         np.asarray(G[c])[:, cols[c, t]])
    return spec, out


@pytest.mark.parametrize("sf_type", T.SF_TYPES)
def test_sf_derivatives_match_finite_differences(derivatives, sf_type):
    spec, out = derivatives
    for c, z in enumerate(spec.elements):
        a, b, G = out[c, sf_type]
        assert np.abs(G).max() > 1e-6, f"type {sf_type} (Z={z}) trivially zero"
        scale = max(1.0, float(np.abs(a).max()))
        assert np.abs(a).max() > 1e-3, f"type {sf_type} (Z={z}): derivative trivially zero"
        err = float(np.abs(a - b).max())
        assert err <= 1e-7 * scale, f"type {sf_type}, Z={z}: {err:.3e} (scale {scale:.2g})"


def test_derivatives_sum_to_zero_over_atoms(derivatives):
    """Σ_atoms dG/dR = 0 (translation invariance of every descriptor), analytic derivatives."""
    spec, out = derivatives
    for (c, t), (a, _, _) in out.items():
        total = a.sum(axis=-2)
        assert np.abs(total).max() <= 1e-12 * max(1.0, np.abs(a).max()), (c, t)
