"""Derivatives of every symmetry-function type against central finite differences.

Structures: the triclinic test cell, narrower than 2 r_c (atoms see their own images), with one
pair at r_c − 0.01 Å, and the free water cluster. Per SF type:

* generic descriptor path (plain autodiff; what small molecules and trainable descriptors use):
  the full Jacobian dG/dR of the descriptor matrix of `jnnp.testing.all_types_spec` (every type
  for every element) by forward mode (``jacfwd``), entry by entry, against central differences
  of the descriptor (h = 1e-5 Å);
* the model's own path on chunked graphs, including the hand-written angular VJP for the O
  centre (`jnnp.testing.default_test_potential`): forces of the model with all other function
  types switched off (`jnnp.testing.restrict_to_functions`) against central differences of its
  energy. The cotangent dE/dG is then non-zero exactly on that type's columns, so every one of
  its derivative entries enters the comparison (this reuses the compiled energy/force programs).
"""

import jax

import numpy as np
import pytest

from jnnp import testing as T
from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.params import init_descriptor_params


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


@pytest.fixture(scope="module")
def plain_jacobians(setup):
    _, structures = setup
    spec = T.all_types_spec()
    pos, cell, g = T.padded_inputs(spec, structures["triclinic"])
    params = init_descriptor_params(spec)
    G, J = T.descriptor_jacobian_fn(spec, False)(pos, cell, params, g)
    # finite differences of the (cached) fast forward pass: the same function values
    J_fd = T.fd_descriptor_jacobian(spec, pos, cell, params, g, h=1e-5, fast_angular=True)
    return spec, [np.asarray(x) for x in G], [np.asarray(x) for x in J], J_fd


@pytest.mark.parametrize("sf_type", T.SF_TYPES)
def test_descriptor_jacobian_matches_finite_differences(plain_jacobians, sf_type):
    spec, G, J, J_fd = plain_jacobians
    for c, z in enumerate(spec.elements):
        cols = [k for k, sf in enumerate(spec.functions[c]) if sf.type == sf_type]
        a, b = J[c][:, cols], J_fd[c][:, cols]
        assert np.abs(G[c][:, cols]).max() > 1e-6, f"type {sf_type} (Z={z}) trivially zero"
        assert np.abs(a).max() > 1e-3, f"type {sf_type} (Z={z}): derivative trivially zero"
        scale = max(1.0, float(np.abs(a).max()))
        err = float(np.abs(a - b).max())
        assert err <= 1e-7 * scale, f"type {sf_type}, Z={z}: {err:.3e} (scale {scale:.2g})"


def test_jacobian_sums_to_zero_over_atoms(plain_jacobians):
    """Σ_atoms dG/dR = 0 for every function (translation invariance of each descriptor)."""
    spec, _, J, _ = plain_jacobians
    for c in range(len(spec.elements)):
        assert np.abs(J[c].sum(axis=2)).max() <= 1e-12 * max(1.0, np.abs(J[c]).max())


@pytest.mark.parametrize("sf_type", T.SF_TYPES)
@pytest.mark.parametrize("name", ["triclinic", "cluster"])
def test_fast_path_type_forces_match_finite_differences(setup, sf_type, name):
    pot, structures = setup
    s = structures[name]
    assert any(sf.type == sf_type for fs in pot.spec.descriptor.functions for sf in fs)
    only = T.restrict_to_functions(pot, lambda sf: sf.type == sf_type)
    out = T.evaluate(only, s)
    scale = max(1.0, float(np.abs(out["forces"]).max()))
    assert np.abs(out["forces"]).max() > 1e-4, f"type {sf_type}: forces trivially zero"
    pos, cell, g = T.padded_inputs(only, s)
    forces = np.zeros((pos.shape[0], 3))
    forces[: s.n_atoms] = out["forces"]
    err = T.check_forces_fd(T.energy_fn_for(only.spec), pos, cell, only.params, g, forces=forces, h=1e-5)
    assert err <= 1e-7 * scale, f"type {sf_type}: {err:.3e} eV/Å"


def test_restricted_potential_really_restricts(setup):
    """Switching off every function leaves constant network inputs: zero forces exactly."""
    pot, structures = setup
    none = T.restrict_to_functions(pot, lambda sf: False)
    assert np.all(T.evaluate(none, structures["triclinic"])["forces"] == 0.0)


def test_fast_angular_path_is_exercised(setup):
    """The model's O-centred triplet blocks run through the hand-written VJP on the (chunked)
    test graphs, and through the generic path on unchunked graphs, so both are covered."""
    pot, structures = setup
    desc = pot.spec.descriptor
    fn = make_descriptor_fn(desc)
    s = structures["triclinic"]
    for chunk, expected in ((T.TEST_CHUNK, True), (1, False)):
        pos, cell, g = T.padded_inputs(desc, s, chunk=chunk)
        assert g.chunk == chunk
        jaxpr = str(jax.make_jaxpr(fn)(pot.params["descriptor"], pos, cell, g))
        assert ("custom_vjp" in jaxpr) == expected
