"""Forces against central finite differences of the energy (float64, h = 1e-5 Å).

Every structure is padded to the same capacities (`jnnp.testing.small_sizes`), so the properties
function and the finite-difference batch (all 6N displacements in one ``vmap``) compile once for
all structures. The neighbour graph is kept fixed for the displaced configurations: that is exact
because no pair distance lies within 1e-3 Å of any cutoff radius (asserted below) except the
deliberate pair at r_c − 0.01 Å, which stays inside.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jnnp import testing as T
from jnnp.geometry.pairs import all_image_pairs

STRUCTURES = ("cluster", "ortho", "triclinic")
H = 1e-5


@pytest.fixture(scope="module")
def setup():
    return T.default_test_potential()


def _fd_error(pot, s, forces):
    pos, cell, g = T.padded_inputs(pot, s)
    padded = np.zeros((pos.shape[0], 3))
    padded[: s.n_atoms] = forces
    return T.check_forces_fd(T.energy_fn_for(pot.spec), pos, cell, pot.params, g, forces=padded, h=H)


@pytest.mark.parametrize("name", STRUCTURES)
def test_structure_has_pair_just_inside_cutoff(setup, name):
    pot, structures = setup
    s = structures[name]
    rc = pot.spec.cutoff
    d = all_image_pairs(s.positions, s.cell, s.pbc, rc).distances
    assert np.any(np.abs(d - (rc - 0.01)) < 1e-9)
    radii = {sf.rc for fs in pot.spec.descriptor.functions for sf in fs}
    assert T.cutoff_margin(s, radii, exclude=(rc - 0.01,)) >= 1e-3     # ≫ h
    if s.periodic:   # narrower than 2 rc: atoms see their own images
        pl = all_image_pairs(s.positions, s.cell, s.pbc, rc)
        assert np.any(pl.centers == pl.neighbors)


@pytest.mark.parametrize("name", STRUCTURES)
def test_forces_match_finite_differences(setup, name):
    pot, structures = setup
    s = structures[name]
    out = T.evaluate(pot, s)
    assert np.abs(out["forces"]).max() > 1e-2           # non-trivial forces
    err = _fd_error(pot, s, out["forces"])
    assert err <= 1e-6, f"max |F - F_fd| = {err:.3e} eV/Å"


def test_finite_difference_check_detects_wrong_forces(setup):
    pot, structures = setup
    s = structures["triclinic"]
    forces = T.evaluate(pot, s)["forces"].copy()
    forces[1, 2] += 1e-5          # atom 1 is the one at r_c - 0.01 from atom 0
    assert _fd_error(pot, s, forces) > 5e-6


def test_near_cutoff_pair_is_evaluated(setup):
    """The r_c − 0.01 pair is an unmasked entry of a pair block (so the FD test probes it)."""
    pot, structures = setup
    s = structures["triclinic"]
    g = T.graph_of(pot, s)
    i, j, shift = (np.asarray(a) for a in (g.pair_i, g.pair_j, g.pair_shift))
    r = np.linalg.norm(s.positions[j] - s.positions[i] + shift @ s.cell, axis=1)
    near = np.flatnonzero(np.abs(r - (pot.spec.cutoff - 0.01)) < 1e-9)
    used = np.concatenate([np.asarray(idx)[np.asarray(m)] for idx, _, m in g.pair_blocks])
    assert len(near) == 2 and np.isin(near, used).all()


# --- the check functions themselves, on an analytic toy potential (cheap to compile) ----------

def _toy_energy(positions, cell, k):
    """Σ_{i<j} k (|r_ij| − 1)² + free-standing cubic term; periodic images via the 27 shifts."""
    shifts = jnp.asarray(np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)]),
                         positions.dtype) @ cell
    d = positions[None, :, None, :] - positions[:, None, None, :] + shifts[None, None]
    r2 = jnp.sum(d * d, axis=-1)
    ok = r2 > 1e-12
    r = jnp.where(ok, jnp.sqrt(jnp.where(ok, r2, 1.0)), 0.0)
    return 0.25 * k * jnp.sum(jnp.where(ok, (r - 1.0) ** 2 * jnp.exp(-r), 0.0))


def test_check_forces_fd_on_toy_potential():
    rng = np.random.default_rng(1)
    pos = jnp.asarray(rng.uniform(0, 3, (5, 3)))
    cell = jnp.asarray(np.diag([4.0, 4.5, 5.0]))
    assert T.check_forces_fd(_toy_energy, pos, cell, 2.0) < 1e-8
    f = -np.asarray(jax.grad(_toy_energy)(pos, cell, 2.0))
    f[3, 0] += 1e-4
    assert T.check_forces_fd(_toy_energy, pos, cell, 2.0, forces=f) > 5e-5


def test_check_forces_fd_positions_only_energy():
    """Free system: an energy function of the positions alone (``cell=None``)."""
    rng = np.random.default_rng(2)
    pos = jnp.asarray(rng.uniform(0, 3, (4, 3)))

    def energy(p, k):
        d = p[:, None] - p[None]
        r2 = jnp.sum(d * d, -1) + jnp.eye(p.shape[0])
        return k * jnp.sum(jnp.triu(1.0 / r2, 1))

    assert T.check_forces_fd(energy, pos, None, 0.5) < 1e-8
