"""Numerical safety: masked padding, coincident atoms, and pairs at or beyond the cutoff.

* Padded graphs (`jnnp.testing.pad_to`) point every masked block entry at a dummy pair with
  r = 0, so sqrt/norm/arccos/division at r = 0 are evaluated in every symmetry function; the
  energy must equal the unpadded one and every gradient (positions, cell, all parameters) must
  be finite. Marked slow: the same with every descriptor field trainable (plain-autodiff path),
  and second order (∇_params of E + Σ F², what force training differentiates).
* Two atoms at the same point: finite energy, forces, stress and gradients.
* Neighbour-list entries beyond a function's cutoff contribute exactly zero (graphs built with a
  skin give bitwise-identical descriptors), and at r = r_c exactly every function of every type
  and its derivative vanish.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnnp import testing as T
from jnnp.data.structure import Structure
from jnnp.descriptors.params import init_descriptor_params
from jnnp.descriptors.spec import TRAINABLE_FIELDS
from jnnp.model.potential import Potential, make_energy_fn


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


def _coincident(structure, i=2, j=5):
    """``structure`` with atom i moved exactly onto atom j."""
    pos = structure.positions.copy()
    pos[i] = pos[j]
    return structure.replace(positions=pos)


# --- padding --------------------------------------------------------------------------------

def test_padding_entries_evaluate_r_zero(setup):
    pot, structures = setup
    s = structures["triclinic"]
    pos, cell, g = T.padded_inputs(pot, s)
    n_pairs = T.graph_of(pot, s).pair_i.shape[0]
    for idx, _, m in g.pair_blocks:
        idx, m = np.asarray(idx), np.asarray(m)
        assert (~m).any() and np.all(idx[~m] == n_pairs)
    assert int(g.pair_i[n_pairs]) == int(g.pair_j[n_pairs]) and not np.asarray(g.pair_shift[n_pairs]).any()


def test_padded_graph_gives_same_energy(setup):
    pot, structures = setup
    s = structures["triclinic"]
    e_pad = T.evaluate(pot, s)["energy"]
    g = T.graph_of(pot, s)
    efn = T.cached_jit(T.energy_fn_for(pot.spec))
    e = float(efn(jnp.asarray(s.positions), jnp.asarray(s.cell), pot.params, g))
    assert abs(e_pad - e) <= 1e-13 * abs(e)


# --- finite gradients -----------------------------------------------------------------------

def _trainable(pot):
    """The test potential with every descriptor field (η, r_s, r_c, ζ, r_l, α) trainable."""
    desc = pot.spec.descriptor.with_trainable(TRAINABLE_FIELDS)
    params = dict(pot.params)
    params["descriptor"] = init_descriptor_params(desc)
    return Potential(dataclasses.replace(pot.spec, descriptor=desc), params)


@functools.lru_cache(maxsize=None)
def _value_and_grad(spec, order):
    """Jitted (params, positions, cell, graph) -> (value, grads w.r.t. params, positions, cell)
    of the energy (order 1) or of the force loss E + Σ F² (order 2, the training objective)."""
    efn = make_energy_fn(spec)
    if order == 1:
        f = efn
    else:
        def f(params, pos, cell, g):
            forces = -jax.grad(efn, argnums=1)(params, pos, cell, g)
            return efn(params, pos, cell, g) + jnp.sum(forces ** 2)
    return T.cheap_jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


def _all_finite(tree):
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(tree))


def _cases(structures):
    return {"triclinic": structures["triclinic"],
            "coincident_periodic": _coincident(structures["triclinic"]),
            "coincident_cluster": _coincident(structures["cluster"], 3, 7)}


def _check_finite_gradients(pot, s, order=1):
    pos, cell, g = T.padded_inputs(pot, s)
    e, (gp, gx, gc) = _value_and_grad(pot.spec, order)(pot.params, pos, cell, g)
    assert np.isfinite(float(e))
    assert _all_finite(gp), "parameter gradient not finite"
    assert _all_finite(gx) and _all_finite(gc), "position/cell gradient not finite"
    assert np.abs(np.asarray(gx)).max() > 0
    for name in ("networks", "scaling", "energy"):
        assert any(np.abs(np.asarray(x)).max() > 0 for x in jax.tree.leaves(gp[name])), name
    return float(e), gp


@pytest.mark.parametrize("case", ["triclinic", "coincident_periodic", "coincident_cluster"])
def test_gradients_finite(setup, case):
    """Energy gradient w.r.t. all parameters, positions and cell: finite with r = 0 padding
    slots and with two atoms at the same point."""
    pot, structures = setup
    _check_finite_gradients(pot, _cases(structures)[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["triclinic", "coincident_periodic", "coincident_cluster"])
def test_gradients_finite_trainable_descriptor(setup, case):
    """Same with every descriptor field trainable (the plain-autodiff descriptor path), whose
    parameter gradients must be finite and reached."""
    pot, structures = setup
    tp = _trainable(pot)
    s = _cases(structures)[case]
    e, gp = _check_finite_gradients(tp, s)
    for d in gp["descriptor"]["elements"]:
        assert any(np.abs(np.asarray(v)).max() > 0 for v in d.values())
    assert np.isfinite(np.asarray(gp["descriptor"]["alpha"]))
    if case == "triclinic":          # the trainable path agrees with the fast static one
        assert abs(e - T.evaluate(pot, s)["energy"]) <= 1e-11 * abs(e)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["triclinic", "coincident_periodic"])
def test_force_loss_gradients_finite(setup, case):
    """Second order (what force training differentiates): ∇_params (E + Σ F²) is finite."""
    pot, structures = setup
    _check_finite_gradients(pot, _cases(structures)[case], order=2)


@pytest.mark.parametrize("name", ["cluster", "triclinic"])
def test_coincident_atoms_fast_path_finite(setup, name):
    pot, structures = setup
    s = _coincident(structures[name], 3, 7) if name == "cluster" else _coincident(structures[name])
    out = T.evaluate(pot, s)
    for k in ("energy", "forces") + (("stress",) if s.periodic else ()):
        assert np.all(np.isfinite(out[k])), k


# --- pairs at and beyond the cutoff -------------------------------------------------------

@pytest.mark.parametrize("name", ["cluster", "tiny_cell"])
def test_pairs_beyond_cutoff_contribute_exactly_zero(setup, name):
    """Graphs built with a 0.5 Å skin (extra pairs and triplets beyond every cutoff) give
    bitwise-identical descriptors on the generic path (`all_types_spec`, every type). On the
    model's chunked fast angular path the extra zero terms shift the chunk boundaries, which
    changes the summation order: equal there to rounding (1e-15 relative)."""
    pot, structures = setup
    s = structures["cluster"] if name == "cluster" else T.small_periodic_cell(
        True, seed=0, n_atoms=2, cell_scale=0.7, near_cutoff=False)
    full = T.all_types_spec()
    desc = pot.spec.descriptor
    outs = []
    for skin in (0.0, 0.5):
        pos, cell, g = T.padded_inputs(full, s, skin=skin)
        G, _ = T.descriptor_jacobian_fn(full, False)(pos, cell, init_descriptor_params(full), g)
        pos, cell, gm = T.padded_inputs(desc, s, skin=skin)
        G_model = T.cached_jit(T.descriptor_fn_for(desc))(pos, cell, pot.params["descriptor"], gm)
        outs.append((G, G_model, g))
    (G0, M0, g0), (G1, M1, g1) = outs
    for k in (0, 1):                                 # the skin really added pairs and triplets
        n0 = sum(int(np.asarray(b[-1]).sum()) for b in (g0.pair_blocks, g0.triplet_blocks)[k])
        n1 = sum(int(np.asarray(b[-1]).sum()) for b in (g1.pair_blocks, g1.triplet_blocks)[k])
        assert n1 > n0
    for a, b in zip(G0, G1):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(M0, M1):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-15, atol=1e-300)


def _star(r, directions):
    """Two 'stars' 40 Å apart: a centre (O, then H) with neighbours O, O, H, H at distance r
    along ``directions`` (exactly r for axis directions)."""
    pos, num = [], []
    for centre_z, origin in ((8, np.zeros(3)), (1, np.array([40.0, 0.0, 0.0]))):
        pos += [origin, *(origin + r * np.asarray(directions, dtype=np.float64))]
        num += [centre_z, 8, 8, 1, 1]
    return Structure(positions=np.array(pos), numbers=np.array(num))


AXES = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]]          # neighbour–neighbour r√2, 2r
_A = np.deg2rad([0.0, 50.0, 100.0])
ANGLED = [[np.cos(a), np.sin(a), 0.0] for a in _A] + [[0.0, 0.0, 1.0]]   # 50°, 90°, 100° angles
RADII = (3.0, 3.5, 4.0, 4.1)


def _star_checks(pot, r, directions, select):
    """For the stars: G and dG/dR (plain path, `all_types_spec`), G of the model's descriptor
    and the forces of the model restricted to the functions ``select(sf)``."""
    s = _star(r, directions)
    full = T.all_types_spec()             # every type for both centres (generic path, jacfwd)
    pos, cell, g = T.padded_inputs(full, s, skin=0.6)
    assert sum(int(np.asarray(m).sum()) for _, _, m in g.pair_blocks) >= 16
    G, J = T.descriptor_jacobian_fn(full, False)(pos, cell, init_descriptor_params(full), g)
    desc = pot.spec.descriptor             # the model's own path (fast angular VJP for O)
    pos, cell, g = T.padded_inputs(desc, s, skin=0.6)
    G_fast = T.cached_jit(T.descriptor_fn_for(desc))(pos, cell, pot.params["descriptor"], g)
    forces = T.evaluate(T.restrict_to_functions(pot, select), s, skin=0.6)["forces"]
    return ([np.asarray(x) for x in G], [np.asarray(x) for x in G_fast], [np.asarray(x) for x in J],
            forces)


@pytest.mark.parametrize("r", RADII)
def test_functions_vanish_at_and_beyond_cutoff(setup, r):
    """Every function with r_c ≤ r is exactly 0 with exactly zero derivatives on every atom
    (all legs ≥ r), in both descriptor paths, and the model restricted to these functions has
    exactly zero forces; the graph (built with a skin) does contain these pairs."""
    pot, _ = setup
    G, G_fast, J, forces = _star_checks(pot, r, AXES, lambda sf: sf.rc <= r)
    types = set()
    for c, fs in enumerate(T.all_types_spec().functions):
        for t in T.SF_TYPES:
            cols = [k for k, sf in enumerate(fs) if sf.type == t and sf.rc <= r]
            if cols:
                types.add(t)
                assert np.all(G[c][:, cols] == 0.0), f"type {t}: G ≠ 0 at r = {r}"
                assert np.all(J[c][:, cols] == 0.0), f"type {t}: dG/dR ≠ 0 at r = {r}"
    for c, fs in enumerate(pot.spec.descriptor.functions):
        cols = [k for k, sf in enumerate(fs) if sf.rc <= r]
        assert np.all(G_fast[c][:, cols] == 0.0)
    assert np.all(forces == 0.0)
    if r >= 4.0:
        assert types == set(T.SF_TYPES)


def test_functions_nonzero_just_inside_cutoff(setup):
    """Contrast for the test above: at r = 3.95 every type with r_c = 4 has non-zero values and
    derivatives (angles of 50°, 90° and 100°, so narrow functions see r_jk < r_c too)."""
    pot, _ = setup
    G, G_fast, J, forces = _star_checks(pot, 3.95, ANGLED, lambda sf: sf.rc == 4.0)
    for c, fs in enumerate(T.all_types_spec().functions):
        for t in {sf.type for sf in fs if sf.rc == 4.0}:
            cols = [k for k, sf in enumerate(fs) if sf.type == t and sf.rc == 4.0]
            assert np.abs(G[c][:, cols]).max() > 0 and np.abs(J[c][:, cols]).max() > 0, f"type {t}"
    for c, fs in enumerate(pot.spec.descriptor.functions):
        cols = [k for k, sf in enumerate(fs) if sf.rc == 4.0]
        assert np.abs(G_fast[c][:, cols]).max() > 0
    assert np.abs(forces).max() > 0
