"""Gradients through MD (`jnnp.md.gradients`) and trajectory reweighting (`jnnp.md.reweight`), float64.

Two tiny systems keep the number of compiled programs small:

* BOX: 16 Cu atoms at random in a periodic 7.3 Å cube; a one-element potential with two radial
  and one angular symmetry function whose η and r_s are trainable, random (6,) network. Short NVE
  runs with a host-built graph (skin, validity check): direct gradients of the mean potential
  energy and of a smoothed RDF bin vs central finite differences of the same trajectory,
  checkpointed vs plain scan; (slow) the in-jit graph with rebuilds, and NPT volume/density.
* DIMER: 2 Cu atoms in free space, radial functions only (trainable η, r_s), a random network
  with a well at r0 ≈ 2.22 Å (U(0) − U(r0) ≈ 4.6 eV, U(r_c) − U(r0) ≈ 1.24 eV ≈ 29 kT at
  500 K, so it neither collapses nor dissociates). Its canonical distribution is known in closed form,
  p(r) ∝ r² exp(−βU(r)) for r < r_c, so ⟨O⟩ and d⟨O⟩/dθ are exact 1-D quadratures
  (differentiated by JAX): the reference for the reweighting estimator, which is computed
  from a Langevin run at θ0. Langevin with a fixed key: direct gradient vs FD.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models import fast_compiles
from jax.scipy.special import erf
from jax_md.simulate import NVEState

from jnnp.data.structure import Structure
from jnnp.descriptors.plan import make_plan
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.geometry.graph import build_graph
from jnnp.md import analysis
from jnnp.md.gradients import (
    default_samples_per_chunk,
    density_observable,
    make_diff_md,
    make_trajectory_fn,
    potential_energy_observable,
    rdf_observable,
    smoothed_pair_histogram,
    smoothed_rdf,
    volume_observable,
)
from jnnp.md.host_graph import make_host_graph_fns
from jnnp.md.integrate import Ensemble, masses_of
from jnnp.md.reweight import (
    blocked,
    fluctuation_gradient,
    frame_energies,
    frame_energy_grads,
    frame_graphs,
    reweighted_average,
    reweighting_weights,
)
from jnnp.model import PotentialSpec, make_energy_fn
from jnnp.testing import random_potential
from jnnp.units import KB

CU = 29


@pytest.fixture(scope="module", autouse=True)
def _fast_compiles():
    with fast_compiles():
        yield


def _spec(rc: float, angular: bool) -> PotentialSpec:
    funcs = [SymFunc(2, CU, (CU,), rc, eta=0.5), SymFunc(2, CU, (CU,), rc, eta=2.0, rs=2.2)]
    if angular:
        funcs.append(SymFunc(3, CU, (CU, CU), rc, eta=0.1, lam=-1.0, zeta=1.0))
    desc = DescriptorSpec.from_functions((CU,), funcs, cutoff_type=6, trainable=("eta", "rs"))
    return PotentialSpec(descriptor=desc, hidden=(6,), activations=("t", "l"))


def _direction(params, rng, groups):
    """Random direction in parameter space over ``groups`` (top-level keys), zero elsewhere; each
    leaf's entries scaled like the leaf so that a relative step h moves all of them alike."""
    def leaf(a, on):
        a = np.asarray(a)
        return jnp.asarray(rng.normal(size=a.shape) * (np.abs(a) + 0.1) if on else np.zeros(a.shape))

    return {k: jax.tree.map(lambda a, on=k in groups: leaf(a, on), v) for k, v in params.items()}


def _dot(tree_a, tree_b):
    return float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b))))


def _moved(params, v, h):
    return jax.tree.map(lambda a, b: a + h * b, params, v)


# ----------------------------------------------------------------------------------------------
# BOX: direct gradients through NVE / NPT vs finite differences

BOX_L, BOX_N, BOX_RC, BOX_SKIN = 7.3, 16, 3.2, 0.4  # L ≥ 2·(r_c + skin): the jit graph is valid too
N_SAMPLES, EVERY = 16, 3  # 48 steps of 1 fs
RDF_BINS, RDF_RMAX, RDF_SIGMA, RDF_BIN = 12, 3.6, 0.15, 7  # bin 7: [2.1, 2.4) Å
GROUPS = [("networks",), ("descriptor",), ("scaling", "energy")]


def _random_box(seed=3):
    rng = np.random.default_rng(seed)
    images = BOX_L * np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
    pos = []
    while len(pos) < BOX_N:
        x = rng.uniform(0.0, BOX_L, 3)
        if not pos or np.linalg.norm((np.asarray(pos) - x)[:, None] + images[None], axis=-1).min() > 2.0:
            pos.append(x)
    return Structure(positions=np.asarray(pos), numbers=[CU] * BOX_N, cell=np.eye(3) * BOX_L, pbc=True)


def _means_and_grad_fn(traj, reduce, state, graph_state):
    """Jitted ``f(params, w) -> ((w·m, (m, invalid)), d(w·m)/dparams)`` with m = reduce(samples):
    one compiled program gives every observable's value and, one ``w`` at a time, its gradient."""
    def loss(p, w):
        out = traj(p, state, graph_state)
        m = reduce(out.samples)
        return jnp.vdot(w, m), (m, out.invalid)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _check_against_fd(f, params, groups, seed, rtol, h=1e-5):
    """Directional derivatives of every observable along a random direction in ``groups`` from
    the gradient program ``f`` vs central differences of its values; returns the derivatives."""
    v = _direction(params, np.random.default_rng(seed), groups)
    (_, (m0, invalid)), _ = f(params, jnp.zeros(2))
    assert not bool(invalid)
    eye = np.eye(len(m0))
    direct = np.array([_dot(f(params, w)[1], v) for w in eye])
    plus, minus = (f(_moved(params, v, s * h), eye[0])[0][1] for s in (1, -1))
    assert not bool(plus[1]) and not bool(minus[1])
    fd = (np.asarray(plus[0]) - np.asarray(minus[0])) / (2 * h)
    assert np.all(np.abs(direct) > 1e-6), direct
    np.testing.assert_allclose(direct, fd, rtol=rtol)
    return direct


class Box:
    def __init__(self, angular: bool):
        self.s = _random_box()
        self.spec = _spec(BOX_RC, angular=angular)
        self.pot = random_potential(self.spec, 4, structures=[self.s], energy_scale=0.1)
        self.plan = make_plan(self.spec.descriptor)
        self.cell = np.asarray(self.s.cell)
        self.masses = masses_of(self.s.numbers)
        self.host = make_host_graph_fns(self.plan, self.s.numbers, self.cell, True, skin=BOX_SKIN)
        R0 = jnp.asarray(self.s.positions)
        self.g0 = self.host.allocate(R0)
        self.md = make_diff_md(self.spec, Ensemble("nve", 1.0, 100.0))
        p = np.random.default_rng(5).normal(size=(BOX_N, 3)) * np.sqrt(np.asarray(self.masses)[:, None] * KB * 100.0)
        # trajectory functions recompute the initial force from params: none needed here
        self.state0 = NVEState(R0, jnp.asarray(p - p.mean(0)), jnp.zeros_like(R0), self.masses[:, None])
        self.observables = {"e": potential_energy_observable(self.md),
                            "g": rdf_observable(self.s.numbers, (CU, CU), self.cell, RDF_RMAX, RDF_BINS, RDF_SIGMA)}
        self.traj = self.trajectory(self.host.update)
        self._f = None

    def trajectory(self, graph_update):
        return make_trajectory_fn(self.md, self.cell, N_SAMPLES, sample_every=EVERY,
                                  observables=self.observables, graph_update=graph_update)

    @staticmethod
    def reduce(samples):
        """The two trajectory observables: mean E_pot [eV] and the mean of one g(r) bin."""
        return jnp.stack([jnp.mean(samples["e"]), jnp.mean(samples["g"][:, RDF_BIN])])

    @property
    def f(self):
        if self._f is None:
            self._f = _means_and_grad_fn(self.traj, self.reduce, self.state0, self.g0)
        return self._f


@pytest.fixture(scope="module")
def box():
    return Box(angular=False)


@pytest.fixture(scope="module")
def angular_box():
    return Box(angular=True)


def test_box_trajectory_is_valid_and_nontrivial(box):
    out = box.traj(box.pot.params, box.state0, box.g0)
    assert not bool(out.invalid), "the 0.4 Å skin must last the 48 steps"
    e, g = np.asarray(out.samples["e"]), np.asarray(out.samples["g"])
    assert e.shape == (N_SAMPLES,) and g.shape == (N_SAMPLES, RDF_BINS)
    assert np.ptp(e) > 1e-3, "the potential energy must change along the run"
    assert g[:, RDF_BIN].min() > 0.1, "the chosen RDF bin holds pairs"
    moved = np.abs(np.asarray(out.state.position) - box.s.positions).max()
    assert 0.01 < moved < 0.5 * BOX_SKIN


@pytest.mark.parametrize("groups", GROUPS)
def test_nve_gradient_matches_finite_differences(box, groups):
    """d(mean E_pot)/dθ and d(mean g(r) bin)/dθ through 48 NVE steps (checkpointed scan, host
    graph with skin) agree with central differences of the same trajectory along random
    directions in each parameter group: network weights; the trainable η, r_s; scaling
    statistics with the energy scale/shift."""
    _check_against_fd(box.f, box.pot.params, groups, seed=len(groups[0]), rtol=1e-5)


@pytest.mark.slow
def test_nve_gradient_with_angular_functions_matches_finite_differences(angular_box):
    """As above with an angular (type 3) function: second derivatives through triplets."""
    for k, groups in enumerate(GROUPS):
        _check_against_fd(angular_box.f, angular_box.pot.params, groups, seed=k, rtol=1e-5)


@pytest.mark.slow
def test_jit_graph_with_rebuilds_gives_the_host_graph_gradient(angular_box):
    """The in-jit graph (jax-md cell list) with a 0.05 Å skin rebuilds along the run; values and
    gradients equal those with the fixed host graph (same physics, other summation order)."""
    from jnnp.geometry.neighbors import make_graph_fns

    fns = make_graph_fns(angular_box.plan, angular_box.cell, skin=0.05)
    g0 = fns.allocate(jnp.asarray(angular_box.s.positions), angular_box.s.numbers)
    traj = angular_box.trajectory(fns.update)
    out = traj(angular_box.pot.params, angular_box.state0, g0)
    assert not bool(out.invalid)
    assert np.abs(np.asarray(out.graph_state.reference) - angular_box.s.positions).max() > 0.0, "no rebuild"
    f = _means_and_grad_fn(traj, angular_box.reduce, angular_box.state0, g0)
    for w in np.eye(2):
        (_, (m, _)), g = f(angular_box.pot.params, w)
        (_, (m_ref, _)), g_ref = angular_box.f(angular_box.pot.params, w)
        np.testing.assert_allclose(m, m_ref, rtol=1e-11)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10 * max(1.0, float(np.abs(b).max())))


@pytest.mark.slow
def test_npt_volume_and_density_gradients_match_finite_differences(box):
    """NPT (jax-md Nosé–Hoover, isotropic): d⟨V⟩/dθ and d⟨ρ⟩/dθ over 48 steps vs central
    differences; the barostat (τ = 1 ps) shrinks the random box by ≈ 6 % in that time while the
    host graph stays valid (`graph_invalid` accounts for the strain)."""
    ens = Ensemble("npt_nose_hoover", 1.0, 100.0, pressure_bar=1000.0, barostat_tau_fs=1000.0, tau_fs=20.0)
    md = make_diff_md(box.spec, ens)
    state = md.init(box.pot.params, jax.random.PRNGKey(0), jnp.asarray(box.s.positions), box.masses,
                    box.g0.graph, box.cell)
    traj = make_trajectory_fn(md, box.cell, N_SAMPLES, sample_every=EVERY, graph_update=box.host.update,
                              observables={"V": volume_observable, "rho": density_observable(box.masses)})
    f = _means_and_grad_fn(traj, lambda s: jnp.stack([jnp.mean(s["V"]), jnp.mean(s["rho"])]), state, box.g0)
    (_, (m, _)), _ = f(box.pot.params, jnp.zeros(2))
    assert np.asarray(m)[0] < 0.99 * BOX_L**3, "the cell must change"
    np.testing.assert_allclose(np.asarray(m)[1], float(np.sum(box.masses)) * 1.66053906660 / np.asarray(m)[0],
                               rtol=0.02)  # ⟨ρ⟩ ≈ M/⟨V⟩ in g/cm³
    for k, groups in enumerate(GROUPS[:2]):
        _check_against_fd(f, box.pot.params, groups, seed=k, rtol=1e-6)


def test_invalid_graph_is_flagged(box):
    """A graph whose reference is further than skin/2 from the positions raises `invalid`."""
    stale = box.g0.replace(reference=box.g0.reference.at[3, 0].add(0.6 * BOX_SKIN))
    assert bool(box.traj(box.pot.params, box.state0, stale).invalid)


def test_smoothed_rdf_tends_to_histogram_and_is_differentiable(box):
    R = np.asarray(box.s.positions)
    idx = np.arange(BOX_N)
    r_ref, g_ref = analysis.rdf(R, box.cell, box.s.numbers, pair=(CU, CU), r_max=RDF_RMAX, n_bins=RDF_BINS)
    r, g = smoothed_rdf(jnp.asarray(R), box.cell, idx, idx, RDF_RMAX, RDF_BINS, 1e-7)
    np.testing.assert_allclose(r, r_ref)
    np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12)
    # smooth in the positions: gradient of one bin vs central differences (σ = 0.15 Å)
    f = jax.jit(lambda X: smoothed_rdf(X, box.cell, idx, idx, RDF_RMAX, RDF_BINS, RDF_SIGMA)[1][RDF_BIN])
    d = np.random.default_rng(0).normal(size=R.shape)
    h = 1e-5
    fd = (f(R + h * d) - f(R - h * d)) / (2 * h)
    direct = float(jnp.vdot(jax.grad(f)(jnp.asarray(R)), d))
    assert abs(direct) > 1e-3
    assert abs(direct - float(fd)) < 1e-7 * abs(direct)


def test_argument_errors(box):
    with pytest.raises(ValueError, match="must divide"):
        make_trajectory_fn(box.md, box.cell, 10, samples_per_chunk=3)
    with pytest.raises(TypeError, match="observables"):
        make_trajectory_fn(box.md, box.cell, 4, observables=[1])
    with pytest.raises(ValueError, match="exceeds half"):
        rdf_observable(box.s.numbers, (CU, CU), box.cell, 4.0, 10, 0.1)
    with pytest.raises(ValueError, match="no atoms"):
        rdf_observable(box.s.numbers, (8, 8), box.cell, 3.0, 10, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        smoothed_pair_histogram(jnp.zeros((2, 3)), [0], [1], np.linspace(0, 1, 3), 0.0)


# ----------------------------------------------------------------------------------------------
# DIMER: Langevin, reweighting vs the exact canonical derivative

DIMER_RC, DIMER_SEED = 3.5, 26
# 500 K: kT = 0.043 eV, so the plateau towards dissociation (U − U(r0) ≈ 1.1–1.24 eV for
# r > 2.6 Å) holds < 1e-10 of the canonical mass. (At 1000 K it holds 3e-5, which MD never
# visits in a short run but which dominates the exact higher moments of r.) dt = 1 fs: with
# 2 fs BAOAB's O(dt²) bias in d⟨E⟩/dθ (0.3 %) reaches 3 standard errors of the long run.
T_K, DT_FS, GAMMA = 500.0, 1.0, 0.1  # friction 0.1/fs ≈ ω/2.6 of the 24 fs well: fast decorrelation
SEG_SAMPLES, SEG_EVERY = 2000, 10  # one sampling segment: 20 000 steps = 20 ps
PERTURBATION = 0.1  # δ of θ1 = θ0 + δv: n_eff ≈ 0.57 F, Kish ≈ 0.27 F (at 0.15: 0.25 F, 0.04 F, and biased)
HIST_EDGES, HIST_SIGMA = np.array([2.3, 2.5]), 0.05  # pair-distance bin above r0 (a "g(r) bin")


def _bin_mass(r):
    """Smoothed bin indicator of a pair distance (same as `smoothed_pair_histogram`)."""
    s = np.sqrt(2.0) * HIST_SIGMA
    return 0.5 * (erf((HIST_EDGES[1] - r) / s) - erf((HIST_EDGES[0] - r) / s))


class Dimer:
    def __init__(self):
        self.spec = _spec(DIMER_RC, angular=False)
        self.s = Structure(positions=np.array([[0.0, 0.0, 0.0], [2.15, 0.0, 0.0]]), numbers=[CU, CU])
        self.pot = random_potential(self.spec, DIMER_SEED, structures=[self.s])
        self.params = self.pot.params
        self.efn = make_energy_fn(self.spec)
        # every pair and triplet at any distance: exact at all positions (graph_update=None)
        self.graph = build_graph(make_plan(self.spec.descriptor), self.s.positions, self.s.numbers, skin=100.0)
        self.cell = np.zeros((3, 3))
        self.kT = KB * T_K
        self.md = make_diff_md(self.spec, Ensemble("nvt_langevin", DT_FS, T_K, friction_per_fs=GAMMA))
        self.state0 = self.md.init(self.params, jax.random.PRNGKey(3), jnp.asarray(self.s.positions),
                                   masses_of(self.s.numbers), self.graph, self.cell)
        self.observables = {"e": potential_energy_observable(self.md), "h": self.hist,
                            "R": lambda p, R, g, c: R}
        self.sampler = make_trajectory_fn(self.md, self.cell, SEG_SAMPLES, sample_every=SEG_EVERY,
                                          observables=self.observables, checkpoint=False)
        self.v = _direction(self.params, np.random.default_rng(11), ("networks", "descriptor"))
        self._runs = {}

    @staticmethod
    def hist(params, R, graph, cell):
        return smoothed_pair_histogram(R, [0], [1], HIST_EDGES, HIST_SIGMA)[0]

    def energy_of_r(self, params, r):
        x = jnp.zeros((3,)).at[0].set(1.0)
        return jax.vmap(lambda d: self.efn(params, jnp.stack([jnp.zeros(3), d * x]), self.cell, self.graph))(r)

    def exact(self, params):
        """Canonical ⟨E_pot⟩ [eV] and ⟨bin⟩ of the bound dimer: quadrature of r² e^{−βU(r)} on
        (0, r_c] (4000 intervals of 0.9 mÅ, ≈ 20 per standard deviation of r; the canonical
        mass beyond 2.6 Å is < 1e-10 at 500 K)."""
        r = jnp.linspace(1e-3, DIMER_RC, 4001)
        U = self.energy_of_r(params, r)
        w = jnp.exp(-(U - jnp.min(U)) / self.kT) * r**2
        w = w / jnp.trapezoid(w, r)
        return jnp.stack([jnp.trapezoid(w * U, r), jnp.trapezoid(w * _bin_mass(r), r)])

    def run(self, n_segments):
        """Langevin frames at θ0 after one 20 ps equilibration segment (cached by length)."""
        if n_segments not in self._runs:
            out = self.sampler(self.params, self.state0, self.graph)
            segs = []
            for _ in range(n_segments):
                out = self.sampler(self.params, out.state, self.graph)
                segs.append(jax.tree.map(np.asarray, out.samples))
            self._runs[n_segments] = jax.tree.map(lambda *a: np.concatenate(a), *segs)
        return self._runs[n_segments]


@pytest.fixture(scope="module")
def dimer():
    return Dimer()


def _short_langevin(dimer, checkpoint):
    """50 samples × 4 Langevin steps from the fixed initial state (fixed key → fixed noise)."""
    traj = make_trajectory_fn(dimer.md, dimer.cell, 50, sample_every=4, checkpoint=checkpoint,
                              observables={"e": dimer.observables["e"], "h": dimer.hist})
    return _means_and_grad_fn(traj, lambda s: jnp.stack([jnp.mean(s["e"]), jnp.mean(s["h"])]),
                              dimer.state0, dimer.graph)


@pytest.fixture(scope="module")
def langevin_grad(dimer):
    return _short_langevin(dimer, checkpoint=True).lower(dimer.params, jnp.zeros(2)).compile()


def test_langevin_gradient_with_fixed_noise_matches_finite_differences(dimer, langevin_grad):
    """Backprop through 200 Langevin steps (checkpointed scan) vs central differences of the
    same trajectory, along a random direction in network, descriptor (η, r_s) and energy
    parameters."""
    _check_against_fd(langevin_grad, dimer.params, ("networks", "descriptor", "energy"), seed=2, rtol=1e-6)


def test_checkpointed_gradient_equals_plain_scan_and_saves_memory(dimer, langevin_grad):
    """The chunked, jax.checkpoint-ed scan (chunks of 5 samples = 20 steps) gives the plain
    scan's values and gradients, with several times less temporary memory."""
    plain = _short_langevin(dimer, checkpoint=False).lower(dimer.params, jnp.zeros(2)).compile()
    assert default_samples_per_chunk(50) == 5
    for w in np.eye(2):
        (_, (m_ck, _)), g_ck = langevin_grad(dimer.params, w)
        (_, (m_pl, _)), g_pl = plain(dimer.params, w)
        np.testing.assert_allclose(m_ck, m_pl, rtol=1e-13)
        for a, b in zip(jax.tree.leaves(g_ck), jax.tree.leaves(g_pl)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(b).max())))
    mem_ck, mem_pl = (c.memory_analysis().temp_size_in_bytes for c in (langevin_grad, plain))
    assert mem_ck < 0.5 * mem_pl, (mem_ck, mem_pl)


def _stack_o(run):
    return np.stack([run["e"], run["h"]], axis=1)  # (F, 2): E_pot [eV], bin


def _energy_grads(dimer, run):
    du = jax.jit(lambda X: frame_energy_grads(dimer.efn, dimer.params, X, dimer.graph, dimer.cell,
                                              batch_size=1000))(jnp.asarray(run["R"]))
    return jax.tree.map(np.asarray, du)


@pytest.fixture(scope="module")
def sampled(dimer):
    """The fast run: 10 segments = 200 000 Langevin steps (200 ps) at θ0, with ∂U/∂θ per frame."""
    run = dimer.run(10)
    return run, _energy_grads(dimer, run)


def _fluctuation_estimate(o, du, kT):
    """d⟨[E_pot, bin]⟩/dθ: E_pot = U depends on θ explicitly (⟨∂O/∂θ⟩ = ⟨∂U/∂θ⟩), the bin not."""
    explicit = jax.tree.map(lambda d: jnp.stack([d.mean(0), jnp.zeros(d.shape[1:])]), du)
    return fluctuation_gradient(o, du, kT, do_mean=explicit)


def _compare_with_exact(dimer, run, du, n_blocks=20):
    r = np.linalg.norm(run["R"][:, 1] - run["R"][:, 0], axis=-1)
    assert r.max() < DIMER_RC - 1.0, "the dimer stayed bound (the quadrature's domain)"
    o = _stack_o(run)
    # the sampler: Langevin (BAOAB, dt = 2 fs ≪ the 24 fs period) samples the canonical ensemble
    mean, err = blocked(lambda x: x.mean(0), o, n_blocks=n_blocks)
    np.testing.assert_array_less(np.abs(mean - np.asarray(jax.jit(dimer.exact)(dimer.params))), 4 * err)
    exact = jax.tree.map(np.asarray, jax.jit(jax.jacrev(dimer.exact))(dimer.params))
    estimator = jax.jit(lambda o, du: _fluctuation_estimate(o, du, dimer.kT))  # one compile for all blocks
    est, est_err = blocked(estimator, o, du, n_blocks=n_blocks)
    # Tolerance 4 standard errors per component. Blocks of ≥ 10 ps ≫ the ≈ 0.1 ps correlation
    # time of the dimer, so the blocked error is honest; it is itself uncertain by ≈ 1/√(2·19)
    # ≈ 16 %, so 4 nominal σ stay above 3 true σ. The tiny absolute term covers exactly-zero
    # components (the bin's derivative w.r.t. the energy shift).
    for e_, x_, s_ in zip(jax.tree.leaves(est), jax.tree.leaves(exact), jax.tree.leaves(est_err)):
        np.testing.assert_array_less(np.abs(e_ - x_), 4 * s_ + 1e-9)
    # sharp enough to fail: the error bars are small, and dropping the covariance term fails
    flat = lambda t: np.concatenate([x.reshape(2, -1) for x in jax.tree.leaves(t)], axis=1)
    X, S = flat(exact), flat(est_err)
    big = np.abs(X) > 0.05 * np.abs(X).max(axis=1, keepdims=True)
    assert np.all(S[big] < 0.1 * np.abs(X[big]))
    naive = np.concatenate([d.mean(0).reshape(-1) for d in jax.tree.leaves(du)])
    assert np.max(np.abs(naive - X[0]) / (S[0] + 1e-12)) > 10
    return est, est_err, exact


def test_reweighting_matches_exact_ensemble_derivative(dimer, sampled):
    """Fluctuation formula d⟨O⟩/dθ = −β Cov(O, ∂U/∂θ) + ⟨∂O/∂θ⟩ from a 200 ps Langevin run at
    θ0, for every parameter (network, η, r_s, scaling, energy scale/shift), vs the exact
    derivative of the canonical averages; O = E_pot and a smoothed pair-distance bin."""
    _compare_with_exact(dimer, *sampled)


def test_reweighted_average_at_perturbed_parameters(dimer, sampled):
    """⟨O⟩ at θ1 = θ0 + δv by reweighting the θ0 frames agrees with the exact ⟨O⟩(θ1), where
    the plain θ0 average does not; the effective sample size drops as it should."""
    run, _ = sampled
    frames = jnp.asarray(run["R"])
    theta1 = _moved(dimer.params, dimer.v, PERTURBATION)
    energies = jax.jit(lambda p: frame_energies(dimer.efn, p, frames, dimer.graph, dimer.cell, batch_size=1000))
    u_ref, u1 = np.asarray(energies(dimer.params)), np.asarray(energies(theta1))
    obs = lambda q, R, g, c: jnp.stack([dimer.observables["e"](q, R, g, c), dimer.hist(q, R, g, c)])
    avg, w = jax.jit(lambda p: reweighted_average(p, obs, dimer.efn, frames, dimer.graph, dimer.cell, u_ref,
                                                  dimer.kT, batch_size=1000))(theta1)
    F = len(frames)
    assert 0.2 * F < float(w.n_eff) < 0.9 * F and float(w.kish) <= float(w.n_eff)
    exact1 = np.asarray(jax.jit(dimer.exact)(theta1))
    # error of the self-normalised estimator: blocked over the frames with their weights
    o1 = np.stack([u1, run["h"]], axis=1)  # E_pot under θ1, bin
    lw = -(u1 - u_ref) / dimer.kT
    wt = np.exp(lw - lw.max())
    np.testing.assert_allclose((wt[:, None] * o1).sum(0) / wt.sum(), avg, rtol=1e-10)
    _, err = blocked(lambda o, w: (w[:, None] * o).sum(0) / w.sum(), o1, wt, n_blocks=20)
    np.testing.assert_array_less(np.abs(np.asarray(avg) - exact1), 4 * err)
    assert np.all(np.abs(o1.mean(0) - exact1) > 5 * err), "the weights must matter"


def test_reweighting_identities_at_reference_parameters(dimer, sampled):
    """At θ = θ0 the weights are uniform (n_eff = Kish = F), JAX's gradient of the reweighted
    average is exactly the fluctuation formula, and per-frame stacked graphs (`frame_graphs`)
    give the shared complete graph's energies."""
    run, du = sampled
    F = 400
    frames = jnp.asarray(run["R"][:F])
    obs = lambda q, R, g, c: jnp.stack([dimer.observables["e"](q, R, g, c), dimer.hist(q, R, g, c)])
    u_ref = frame_energies(dimer.efn, dimer.params, frames, dimer.graph, dimer.cell)
    w = reweighting_weights(u_ref, u_ref, dimer.kT)
    np.testing.assert_allclose(w.weights, 1.0 / F, rtol=1e-12)
    np.testing.assert_allclose([w.n_eff, w.kish], F, rtol=1e-12)
    J = jax.jit(jax.jacrev(lambda p: reweighted_average(p, obs, dimer.efn, frames, dimer.graph, dimer.cell,
                                                        u_ref, dimer.kT)[0]))(dimer.params)
    formula = jax.jit(_fluctuation_estimate)(_stack_o(jax.tree.map(lambda a: a[:F], run)),
                                             jax.tree.map(lambda a: a[:F], du), dimer.kT)
    for a, b in zip(jax.tree.leaves(J), jax.tree.leaves(formula)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * max(1.0, float(np.abs(b).max())))
    stacked = frame_graphs(make_plan(dimer.spec.descriptor), run["R"][:8], dimer.s.numbers)
    assert stacked.pair_i.shape[0] == 8
    np.testing.assert_allclose(frame_energies(dimer.efn, dimer.params, frames[:8], stacked, dimer.cell),
                               u_ref[:8], rtol=1e-12)


@pytest.mark.slow
def test_reweighting_and_direct_gradient_long_run(dimer):
    """Slow variant: 4× longer sampling (errors halve), and the direct pathwise gradient of the
    time average backpropagated through 10 checkpointed 20 ps Langevin segments (each from the
    previous one's end state, held fixed). The dimer's damped dynamics is contracting, so the
    pathwise derivative of a long time average tends to d⟨O⟩/dθ; both agree with the exact
    derivative, per parameter, within 4 standard errors."""
    run = dimer.run(40)
    _, _, exact = _compare_with_exact(dimer, run, _energy_grads(dimer, run))
    traj = make_trajectory_fn(dimer.md, dimer.cell, SEG_SAMPLES, sample_every=SEG_EVERY,
                              observables={"e": dimer.observables["e"], "h": dimer.hist})
    assert default_samples_per_chunk(SEG_SAMPLES) == 40

    def means(p, state):
        s = traj(p, state, dimer.graph).samples
        return jnp.stack([s["e"].mean(), s["h"].mean()])

    grad = jax.jit(jax.jacrev(means))
    state = dimer.sampler(dimer.params, dimer.state0, dimer.graph).state
    segs = []
    for _ in range(10):
        segs.append(jax.tree.map(np.asarray, grad(dimer.params, state)))
        state = traj(dimer.params, state, dimer.graph).state
    stacked = jax.tree.map(lambda *a: np.stack(a), *segs)
    mean = jax.tree.map(lambda a: a.mean(0), stacked)
    err = jax.tree.map(lambda a: a.std(0, ddof=1) / np.sqrt(len(segs)), stacked)
    for m_, x_, s_ in zip(jax.tree.leaves(mean), jax.tree.leaves(exact), jax.tree.leaves(err)):
        np.testing.assert_array_less(np.abs(m_ - x_), 4 * s_ + 1e-9)
