"""Reusable physics checks and small test systems for jnnp models (and your own).

The builders return deterministic, small structures and models that exercise every code path of
the descriptor and the network: `all_types_spec` holds at least one symmetry function of every
n2p2 type, `random_potential` gives random weights together with non-trivial scaling statistics
and energy shifts, and `water_cluster` / `small_periodic_cell` give free and periodic structures
(cells narrower than twice the cutoff, so atoms see their own images) that contain one pair just
inside the largest cutoff while keeping every other distance clear of all cutoff radii, so that
finite differences with a fixed neighbour graph are exact to O(h²).

The check functions take plain JAX functions of positions (and cell), so they apply to any
energy model:

* `check_forces_fd`: forces against central finite differences of the energy,
* `check_stress_fd`: stress against finite symmetric strains,
* `check_invariance`: energy/forces under translation, rotation, permutation and lattice wraps.

Units: Å, eV (stress eV/Å³). All finite-difference batches are evaluated with one ``jax.vmap``,
so each check compiles once. The float64 tolerances of the checks need
``jax.config.update("jax_enable_x64", True)``.

Small structures are padded to common capacities (`small_sizes`, `pad_to`) whose masked slots
point at a dummy pair with r = 0, so one compiled program serves every test structure and every
evaluation also exercises the r = 0 safety of all symmetry functions.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.data.structure import Structure
from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.params import init_descriptor_params
from jnnp.descriptors.plan import make_plan
from jnnp.descriptors.scaling import scaling_statistics
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.geometry.graph import Graph, build_graph, pad_graph
from jnnp.geometry.pairs import all_image_pairs
from jnnp.model.potential import Potential, PotentialSpec, init_potential, make_energy_fn
from jnnp.model.properties import make_properties_fn

__all__ = ["SF_TYPES", "TEST_CHUNK", "cheap_jit", "cached_jit", "all_types_spec", "random_potential",
           "default_test_potential", "restrict_to_functions", "water_cluster", "small_periodic_cell",
           "supercell", "random_rotation", "transformed", "graph_of", "cutoff_margin", "small_sizes",
           "sizes_for", "pad_to", "padded_inputs", "evaluate", "properties_fn_for", "energy_fn_for",
           "descriptor_fn_for", "descriptor_jacobian_fn", "fd_descriptor_jacobian", "fd_energies",
           "check_forces_fd", "check_stress_fd", "check_invariance"]

#: Every n2p2 short-range symmetry-function type that jnnp implements.
SF_TYPES = (2, 3, 9, 12, 13, 20, 21, 22, 23, 24, 25)

#: Triplet chunk length of the padded test graphs (> 1 selects the hand-written angular VJP for
#: blocks of exponential angular functions, as `build_graph` does for dense systems).
TEST_CHUNK = 4

#: ``jax.jit`` with cheap XLA compilation (tests evaluate small graphs; compile time dominates).
cheap_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                         "xla_llvm_disable_expensive_passes": True})


# ----------------------------------------------------------------------------------------------
# Descriptor set and random model
# ----------------------------------------------------------------------------------------------

def _element_functions(c: int, elements, rc: float) -> list[SymFunc]:
    """17 functions of central element ``c`` covering every type and several parameter regimes."""
    lo, hi = elements[0], elements[-1]
    r2, r3 = 0.75 * rc, 0.875 * rc          # two further cutoff radii (3.0 and 3.5 Å for rc = 4)
    return [
        # radial exponential (2): rs = 0 and rs ≠ 0, two cutoffs
        SymFunc(2, c, (lo,), rc, eta=0.5),
        SymFunc(2, c, (hi,), r2, eta=1.0, rs=1.5),
        # narrow angular (3): λ = ±1, ζ = 1, 2, 4, rs ≠ 0, every neighbour pair
        SymFunc(3, c, (lo, lo), rc, eta=0.1, lam=1.0, zeta=1.0),
        SymFunc(3, c, (lo, hi), rc, eta=0.05, lam=-1.0, zeta=2.0),
        SymFunc(3, c, (hi, hi), r3, eta=0.2, rs=0.8, lam=1.0, zeta=4.0),
        # wide angular (9): integer and non-integer ζ (jnp.power path)
        SymFunc(9, c, (lo, lo), rc, eta=0.2, lam=-1.0, zeta=1.0),
        SymFunc(9, c, (lo, hi), r2, eta=0.1, lam=1.0, zeta=2.5),
        # weighted radial (12) and weighted narrow angular (13)
        SymFunc(12, c, (), rc, eta=0.3, rs=0.8),
        SymFunc(13, c, (), rc, eta=0.1, rs=0.5, lam=-1.0, zeta=2.0),
        # compact radial (20): polynomial bump (r_l = 0) and cutoff-like exponential (r_l = -r_c)
        SymFunc(20, c, (lo,), rc, rl=0.0, subtype="p2"),
        SymFunc(20, c, (hi,), r3, rl=-r3, subtype="e"),
        # compact narrow (21) and wide (22) angular, windows (0, 180), (-90, 90), (90, 270)
        SymFunc(21, c, (lo, hi), rc, rl=0.5, angle_left=0.0, angle_right=180.0, subtype="p2"),
        SymFunc(21, c, (lo, lo), r3, rl=-r3, angle_left=-90.0, angle_right=90.0, subtype="p3"),
        SymFunc(22, c, (lo, hi), rc, rl=-rc, angle_left=90.0, angle_right=270.0, subtype="e"),
        # weighted compact radial (23, asymmetric core), narrow (24) and wide (25) angular
        SymFunc(23, c, (), r2, rl=1.0, subtype="p2a"),
        SymFunc(24, c, (), rc, rl=0.0, angle_left=60.0, angle_right=180.0, subtype="p1"),
        SymFunc(25, c, (), r2, rl=0.5, angle_left=30.0, angle_right=150.0, subtype="p4"),
    ]


def all_types_spec(elements=(1, 8), rc: float = 4.0, cutoff_type: int = 6, alpha: float = 0.0,
                   trainable=(), exp_angular_only=()) -> DescriptorSpec:
    """A small descriptor set with at least one function of every n2p2 type per element.

    Per central element (17 functions): types 2, 3 (λ = ±1, ζ = 1, 2, 4, r_s ≠ 0), 9 (integer
    and non-integer ζ), 12, 13, 20 (cores ``p2`` and ``e``), 21, 22, 24, 25 with angular windows
    (0, 180), (−90, 90), (90, 270), (60, 180), (30, 150) and cores p1..p4, e, and 23 with the
    asymmetric ``p2a`` core; lower bounds r_l = 0, > 0 and −r_c; cutoff radii rc, 0.875·rc and
    0.75·rc. Every (centre, neighbour) pair block and (centre, e1, e2) triplet block is used.

    Args:
        elements: atomic numbers (two or more distinct elements exercise every block kind).
        rc: largest cutoff radius [Å].
        cutoff_type, alpha: n2p2 cutoff function number and inner-cutoff fraction.
        trainable: descriptor fields to expose as differentiable parameters.
        exp_angular_only: central elements that keep only the exponential angular types (3, 9,
            13), dropping 21, 22, 24, 25. Their triplet blocks then qualify for the hand-written
            angular VJP of `jnnp.descriptors.angular` (used for chunked graphs); a weighted
            compact angular function (24, 25) would otherwise put every block of the centre on
            the generic path.
    """
    elements = tuple(sorted(int(z) for z in elements))
    funcs = [sf for c in elements for sf in _element_functions(c, elements, float(rc))
             if not (c in exp_angular_only and sf.type in (21, 22, 24, 25))]
    return DescriptorSpec.from_functions(elements, funcs, cutoff_type=cutoff_type, cutoff_alpha=alpha,
                                         trainable=trainable)


def graph_of(spec, structure: Structure, **kw) -> Graph:
    """`build_graph` of ``structure`` for a `DescriptorSpec`, `PotentialSpec` or `Potential`
    (``kw``: ``chunk``, ``skin``)."""
    return build_graph(make_plan(_descriptor_spec(spec)), structure.positions, structure.numbers,
                       structure.cell, structure.pbc, **kw)


def random_potential(spec_or_desc, key, hidden=(8, 8), activations=("t", "t", "l"),
                     scaling: str = "scale_center", dtype=jnp.float64, structures=(),
                     energy_scale: float = 0.8, min_range: float = 0.01) -> Potential:
    """A potential with random weights, non-trivial scaling statistics and energy shifts.

    Args:
        spec_or_desc: `PotentialSpec` (used as is) or `DescriptorSpec` (wrapped with ``hidden``,
            ``activations``, ``scaling``).
        key: ``jax.random`` key (or int seed).
        structures: optional structures whose descriptors define the scaling statistics (min,
            max, mean, σ as n2p2 computes them, ranges widened by 10 % so that no function is
            constant); without them the statistics are random with max > min.
        min_range: lower bound on max − min (and σ). Functions with a tiny range (e.g. only
            near-cutoff contributions) get huge scaling factors that amplify rounding errors,
            which would dominate float32 comparisons.
        energy_scale: network output unit [eV].

    Returns:
        `Potential` with random shifts (≈ ±2 eV per element) and ``scale = energy_scale``.
    """
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    if isinstance(spec_or_desc, PotentialSpec):
        spec = spec_or_desc
    else:
        spec = PotentialSpec(descriptor=spec_or_desc, hidden=tuple(hidden), activations=tuple(activations),
                             scaling=scaling)
    desc = spec.descriptor
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key) if typed else key).ravel().tolist())
    # Parameter layout from init_potential, traced abstractly (no compilation); network weights
    # drawn here with variance 1/fan_in (kernels) and U(-0.1, 0.1) biases.
    shapes = jax.eval_shape(lambda k: init_potential(spec, k, dtype).params, key)

    def draw(x):
        if len(x.shape) == 2:
            return np.asarray(rng.normal(size=x.shape) / np.sqrt(x.shape[0]), dtype)
        return np.asarray(rng.uniform(-0.1, 0.1, x.shape), dtype)

    params = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
    params["networks"] = jax.tree.map(draw, shapes["networks"])
    params["descriptor"] = init_descriptor_params(desc, dtype)
    pot = Potential(spec, params)
    if structures:
        fn = cached_jit(descriptor_fn_for(desc))
        sizes = sizes_for(desc, structures)
        rows = [[] for _ in desc.elements]
        for s in structures:
            pos, cell, g = padded_inputs(desc, s, sizes, dtype)
            G = fn(pos, cell, pot.params["descriptor"], g)
            for c, (g_c, m) in enumerate(zip(G, g.element_mask)):
                rows[c].append(np.asarray(g_c, np.float64)[np.asarray(m)])
        stats = []
        for c, n in enumerate(desc.n_features):
            G = np.concatenate(rows[c])
            st = scaling_statistics(G) if len(G) else _random_stats(rng, n)
            width = st["max"] - st["min"]
            pad = (0.1 * width + 0.05 * np.abs(st["max"])
                   + 0.5 * np.maximum(min_range - 1.2 * width, 0.0))
            stats.append({"min": st["min"] - pad, "max": st["max"] + pad, "mean": st["mean"],
                          "sigma": np.maximum(st["sigma"], min_range)})
    else:
        stats = [_random_stats(rng, n) for n in desc.n_features]
    params["scaling"] = tuple({k: np.asarray(v, dtype) for k, v in st.items()} for st in stats)
    shift = rng.uniform(-2.0, 2.0, len(desc.elements))
    params["energy"] = {"scale": np.asarray(energy_scale, dtype), "shift": np.asarray(shift, dtype)}
    return Potential(spec, params)


def _random_stats(rng, n) -> dict:
    lo = rng.uniform(0.0, 0.5, n)
    hi = lo + rng.uniform(0.5, 3.0, n)
    return {"min": lo, "max": hi, "mean": lo + rng.uniform(0.2, 0.8, n) * (hi - lo),
            "sigma": rng.uniform(0.2, 1.0, n) * (hi - lo)}


# ----------------------------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------------------------

_WATER = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.23999, 0.92663, 0.0]])  # O, H, H [Å]


def random_rotation(rng) -> np.ndarray:
    """Uniformly random proper rotation matrix (3, 3) from a numpy Generator or seed."""
    rng = np.random.default_rng(rng)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _distances(positions, cell, pbc, cutoff):
    """All pair distances (every image) below ``cutoff``, each unordered pair once or twice."""
    pl = all_image_pairs(positions, cell if np.any(pbc) else np.zeros((3, 3)), pbc, cutoff)
    return pl.distances, pl.centers, pl.neighbors


def cutoff_margin(structure: Structure, radii, exclude=()) -> float:
    """Smallest |r − r_c| [Å] over all pair distances r (every image) and cutoff radii ``radii``.

    Distances listed in ``exclude`` (within 1e-9 Å) are ignored. A fixed neighbour graph gives
    exact finite differences with step h as long as this margin exceeds h (for the triplet
    distance r_jk of narrow functions too, since r_jk is a pair distance).
    """
    radii = np.unique(np.asarray(list(radii), dtype=np.float64))
    d, _, _ = _distances(structure.positions, structure.cell, structure.pbc, float(radii.max()) + 1.0)
    for x in exclude:
        d = d[np.abs(d - x) > 1e-9]
    if len(d) == 0:
        return np.inf
    return float(np.min(np.abs(d[:, None] - radii[None, :])))


def _min_distance(positions, cell, pbc):
    d, _, _ = _distances(positions, cell, pbc, 2.0)
    return float(d.min()) if len(d) else np.inf


def _radii_of(spec) -> list[float]:
    if spec is None:
        return []
    spec = _descriptor_spec(spec)
    return sorted({sf.rc for fs in spec.functions for sf in fs})


def water_cluster(n_molecules: int = 4, seed: int = 0, rc: float = 4.0, near_cutoff: bool = True,
                  spec=None, margin: float = 1e-3) -> Structure:
    """A free cluster of randomly placed and oriented rigid water molecules.

    Molecules are at least 1.6 Å apart (atom–atom); with ``near_cutoff`` one O–O pair sits at
    r = rc − 0.01 Å. Every other pair distance stays ``margin`` away from ``rc`` and from the
    cutoff radii of ``spec`` (default: those of `all_types_spec` with this ``rc``).

    Returns:
        `Structure` (O, H, H per molecule; no cell).
    """
    rng = np.random.default_rng(seed)
    radii = _radii_of(spec) or _radii_of(all_types_spec(rc=rc))
    box = 2.6 * max(n_molecules, 1) ** (1 / 3) + 1.0
    for _ in range(1000):
        mols = []
        for m in range(n_molecules):
            for _ in range(200):
                rot = random_rotation(rng)
                if m == n_molecules - 1 and near_cutoff and m > 0:
                    u = rng.normal(size=3)
                    centre = mols[0][0] + (rc - 0.01) * u / np.linalg.norm(u)
                else:
                    centre = rng.uniform(0.0, box, 3)
                xyz = _WATER @ rot.T + centre
                if all(np.min(np.linalg.norm(xyz[:, None] - o[None], axis=-1)) >= 1.6 for o in mols):
                    mols.append(xyz)
                    break
        if len(mols) < n_molecules:
            continue
        s = Structure(positions=np.concatenate(mols), numbers=np.tile([8, 1, 1], n_molecules))
        exclude = (rc - 0.01,) if near_cutoff and n_molecules > 1 else ()
        if cutoff_margin(s, radii, exclude) >= margin:
            return s
    raise RuntimeError("could not place the water cluster")  # pragma: no cover


def small_periodic_cell(triclinic: bool = False, seed: int = 0, n_atoms: int = 8, rc: float = 4.0,
                        near_cutoff: bool = True, spec=None, margin: float = 1e-3,
                        min_distance: float = 0.9, cell_scale: float = 1.0) -> Structure:
    """A periodic H/O cell narrower than 2·rc (atoms see their own images) with random positions.

    Args:
        triclinic: skewed cell (all angles ≠ 90°) instead of an orthorhombic one.
        n_atoms: number of atoms (atoms 0, 3, 6, … are O, the others H).
        near_cutoff: place atom 1 at r = rc − 0.01 Å from atom 0.
        spec, margin: every other distance (all images) stays ``margin`` Å from every cutoff
            radius of ``spec`` (default: `all_types_spec` with this ``rc``).
        min_distance: smallest allowed distance between any two atoms/images [Å] (≥ 0.7).
        cell_scale: factor on the cell (default edges ≈ 0.9–1.3 rc; the shortest is < rc).
    """
    rng = np.random.default_rng(seed)
    radii = _radii_of(spec) or _radii_of(all_types_spec(rc=rc))
    if triclinic:
        cell = rc * np.array([[0.93, 0.0, 0.0], [0.3, 1.22, 0.0], [-0.2, 0.25, 1.28]])
    else:
        cell = rc * np.diag([0.91, 1.3, 1.24])
    cell = cell * cell_scale
    numbers = np.where(np.arange(n_atoms) % 3 == 0, 8, 1)
    for _ in range(2000):
        pos = []
        for i in range(n_atoms):
            for _ in range(500):
                if i == 1 and near_cutoff:
                    u = rng.normal(size=3)
                    x = pos[0] + (rc - 0.01) * u / np.linalg.norm(u)
                else:
                    x = rng.uniform(0.0, 1.0, 3) @ cell
                trial = np.array(pos + [x])
                if _min_distance(trial, cell, True) >= min_distance:
                    pos.append(x)
                    break
            else:
                break
        if len(pos) < n_atoms:
            continue
        s = Structure(positions=np.array(pos), numbers=numbers, cell=cell, pbc=True)
        if cutoff_margin(s, radii, (rc - 0.01,) if near_cutoff else ()) >= margin:
            return s
    raise RuntimeError("could not place the periodic cell")  # pragma: no cover


def supercell(structure: Structure, reps=(2, 2, 2)) -> Structure:
    """Explicit supercell: image (a, b, c) of every atom in order, images outermost (atom index
    ``k · N + i`` is atom i of image k, images enumerated with the last axis fastest)."""
    reps = tuple(int(r) for r in reps)
    shifts = np.array([(a, b, c) for a in range(reps[0]) for b in range(reps[1]) for c in range(reps[2])],
                      dtype=np.float64)
    pos = (shifts @ structure.cell)[:, None, :] + structure.positions[None]
    return Structure(positions=pos.reshape(-1, 3), numbers=np.tile(structure.numbers, len(shifts)),
                     cell=structure.cell * np.asarray(reps, dtype=np.float64)[:, None], pbc=structure.pbc)


# ----------------------------------------------------------------------------------------------
# Fixed-capacity inputs and cached compiled functions (one compilation per shape and dtype)
# ----------------------------------------------------------------------------------------------

def small_sizes(spec, atoms: int = 16, pairs: int = 256, per_element: int = 12, pair_entries: int = 80,
                triplet_entries: int = 640) -> dict:
    """Uniform graph capacities (see `jnnp.geometry.graph.pad_graph`) for the small test systems
    of this module, so that all of them share one compiled program per function."""
    plan = make_plan(_descriptor_spec(spec))
    return {"atoms": atoms, "pairs": pairs, "elements": (per_element,) * len(plan.spec.elements),
            "pair_blocks": (pair_entries,) * len(plan.pair_blocks),
            "triplet_blocks": (triplet_entries,) * len(plan.triplet_blocks)}


def _descriptor_spec(spec) -> DescriptorSpec:
    if isinstance(spec, Potential):
        spec = spec.spec
    if isinstance(spec, PotentialSpec):
        spec = spec.descriptor
    return spec


def sizes_for(spec, structures, **graph_kw) -> dict:
    """`small_sizes` when every structure fits, else capacities that fit all of them
    (``graph_kw`` as in `padded_inputs`, chunk default `TEST_CHUNK`)."""
    graph_kw.setdefault("chunk", TEST_CHUNK)
    sizes = small_sizes(spec)
    graphs = [graph_of(_descriptor_spec(spec), s, **graph_kw) for s in structures]
    need = {"atoms": max(g.n_atoms for g in graphs), "pairs": max(g.pair_i.shape[0] for g in graphs) + 1,
            "elements": tuple(np.max([g.sizes()["elements"] for g in graphs], axis=0)),
            "pair_blocks": tuple(np.max([g.sizes()["pair_blocks"] for g in graphs], axis=0)),
            "triplet_blocks": tuple(np.max([g.sizes()["triplet_blocks"] for g in graphs], axis=0))}
    fits = all(np.all(np.asarray(need[k]) <= np.asarray(sizes[k])) for k in sizes)
    if fits:
        return sizes
    return {k: (int(v) if k in ("atoms", "pairs") else tuple(int(x) for x in v)) for k, v in need.items()}


def pad_to(spec, graph: Graph, sizes: dict) -> Graph:
    """Pad ``graph`` to ``sizes`` with masked entries that point at a dummy pair with r = 0.

    Like `jnnp.geometry.graph.pad_graph`, but every masked pair/triplet block entry refers to the
    first padding pair (i = j = 0, zero shift), so the padded slots evaluate every symmetry
    function at r_ij = 0 (and r_jk = 0): the energy must not change and gradients stay finite.
    """
    plan = make_plan(_descriptor_spec(spec))
    n_pairs = int(np.asarray(graph.pair_i).shape[0])
    if sizes["pairs"] <= n_pairs:
        raise ValueError(f"need room for a dummy pair: {n_pairs} pairs, capacity {sizes['pairs']}")
    g = pad_graph(graph, sizes, plan)
    pair_blocks = tuple((np.where(m, i, n_pairs).astype(np.int32), loc, m) for i, loc, m in g.pair_blocks)
    trip = tuple(tuple(np.where(m, x, n_pairs).astype(np.int32) for x in (p, q, r)) + (loc, m)
                 for p, q, r, loc, m in g.triplet_blocks)
    return dataclasses.replace(g, pair_blocks=pair_blocks, triplet_blocks=trip)


def padded_inputs(spec, structure: Structure, sizes: dict | None = None, dtype=jnp.float64,
                  **graph_kw):
    """``(positions, cell, graph)`` of ``structure`` padded to ``sizes`` (default: `small_sizes`
    if the structure fits, see `sizes_for`) as jax arrays of ``dtype``; padding atoms sit at the
    origin. ``graph_kw`` go to `build_graph` (``skin``; ``chunk`` defaults to `TEST_CHUNK`, so
    that the chunked fast angular path is exercised)."""
    graph_kw.setdefault("chunk", TEST_CHUNK)
    sizes = sizes_for(spec, [structure], **graph_kw) if sizes is None else sizes
    g = pad_to(spec, graph_of(_descriptor_spec(spec), structure, **graph_kw), sizes)
    pos = np.zeros((sizes["atoms"], 3))
    pos[: structure.n_atoms] = structure.positions
    return jnp.asarray(pos, dtype), jnp.asarray(structure.cell, dtype), g


@functools.lru_cache(maxsize=None)
def properties_fn_for(spec: PotentialSpec, stress: bool = True):
    """Cached ``cheap_jit(make_properties_fn(make_energy_fn(spec)))`` (energy, forces, stress)."""
    return cheap_jit(make_properties_fn(make_energy_fn(spec), stress=stress))


@functools.lru_cache(maxsize=None)
def energy_fn_for(spec: PotentialSpec):
    """Cached ``energy(positions, cell, params, graph)`` (plain, positions first, for the checks)."""
    efn = make_energy_fn(spec)

    def energy(positions, cell, params, graph):
        return efn(params, positions, cell, graph)

    return energy


@functools.lru_cache(maxsize=None)
def descriptor_fn_for(spec: DescriptorSpec, fast_angular: bool = True):
    """Cached ``descriptor(positions, cell, params, graph)`` (not jitted; positions first)."""
    fn = make_descriptor_fn(spec, fast_angular=fast_angular)

    def descriptor(positions, cell, params, graph):
        return fn(params, positions, cell, graph)

    descriptor.plan = fn.plan
    return descriptor


@functools.lru_cache(maxsize=None)
def descriptor_jacobian_fn(spec: DescriptorSpec, fast_angular: bool = True):
    """Cached jitted ``(positions, cell, params, graph) -> (G, dG/dR)`` per element, with
    dG/dR of shape (N_c, n_c, N, 3): reverse mode (``jacrev``) with the hand-written angular VJP
    (``fast_angular``), forward mode (``jacfwd``) through plain autodiff otherwise."""
    d = descriptor_fn_for(spec, fast_angular)
    jac = jax.jacrev if fast_angular else jax.jacfwd
    return cheap_jit(lambda pos, cell, params, graph: (d(pos, cell, params, graph),
                                                       jac(d)(pos, cell, params, graph)))


@functools.lru_cache(maxsize=None)
def _batched_descriptor(spec: DescriptorSpec, fast_angular: bool):
    d = descriptor_fn_for(spec, fast_angular)
    return cheap_jit(lambda P, cell, params, graph: jax.vmap(lambda p: d(p, cell, params, graph))(P))


def fd_descriptor_jacobian(spec: DescriptorSpec, positions, cell, params, graph, h: float = 1e-5,
                           fast_angular: bool = True) -> tuple:
    """Central finite-difference dG/dR per element, (N_c, n_c, N, 3) each (one ``vmap``)."""
    pos = np.asarray(positions, np.float64)
    n = pos.shape[0]
    eye = np.eye(3 * n).reshape(3 * n, n, 3) * h
    P = jnp.asarray(np.concatenate([pos + eye, pos - eye]), jnp.asarray(positions).dtype)
    G = _batched_descriptor(spec, fast_angular)(P, cell, params, graph)
    out = []
    for g in G:
        g = np.asarray(g, np.float64)
        d = (g[: 3 * n] - g[3 * n:]) / (2.0 * h)              # (3N, N_c, n_c)
        out.append(d.reshape(n, 3, *g.shape[1:]).transpose(2, 3, 0, 1))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def cached_jit(fn):
    """`cheap_jit` of ``fn``, memoised per function object (so callers share compilations)."""
    return cheap_jit(fn)


def evaluate(potential: Potential, structure: Structure, sizes: dict | None = None, dtype=None,
             stress: bool = True, **graph_kw) -> dict:
    """Properties (numpy float64, padding removed) of ``structure`` with the cached, padded,
    cheaply compiled properties function; ``dtype`` defaults to the parameters' dtype."""
    if dtype is None:
        dtype = jnp.asarray(potential.params["energy"]["scale"]).dtype
    pos, cell, g = padded_inputs(potential, structure, sizes, dtype, **graph_kw)
    out = properties_fn_for(potential.spec, stress)(potential.params, pos, cell, g)
    n = structure.n_atoms
    return {k: np.asarray(v, np.float64)[:n] if k == "forces" else np.asarray(v, np.float64)
            for k, v in out.items()}


def restrict_to_functions(potential: Potential, select) -> Potential:
    """The potential with every symmetry function for which ``select(sf)`` is False switched off.

    Switched-off functions get a zero scaling range (max = min, or σ = 0), which n2p2's scaling
    maps to a zero factor: their network input is constant, so energy and forces depend only on
    the selected functions. Only the parameters change (same spec, no recompilation), which
    makes per-function-type derivative checks through the full model cheap.
    """
    if potential.spec.scaling not in ("scale", "scale_center", "sigma"):
        raise ValueError(f"cannot switch functions off with scaling {potential.spec.scaling!r}")
    stats = []
    for fs, st in zip(potential.spec.descriptor.functions, potential.params["scaling"]):
        off = np.array([not select(sf) for sf in fs], dtype=bool)
        st = {k: np.array(v) for k, v in st.items()}
        st["max"] = np.where(off, st["min"], st["max"])
        st["sigma"] = np.where(off, 0.0, st["sigma"])
        stats.append(st)
    params = dict(potential.params)
    params["scaling"] = tuple(stats)
    return potential.replace(params=params)


@functools.lru_cache(maxsize=4)
def default_test_potential(seed: int = 0, rc: float = 4.0) -> tuple[Potential, dict]:
    """``(potential, structures)``: a random potential (scaling statistics from the structures)
    and the standard small structures ``{"cluster", "ortho", "triclinic"}`` (cached).

    Descriptor: `all_types_spec` with every type for H and only exponential angular types for O
    (``exp_angular_only=(8,)``), so that one model exercises both the generic descriptor path and
    the hand-written angular VJP (on chunked graphs, see `TEST_CHUNK`)."""
    spec = all_types_spec(rc=rc, exp_angular_only=(8,))
    structures = {"cluster": water_cluster(4, seed, rc=rc),
                  "ortho": small_periodic_cell(False, seed, rc=rc),
                  "triclinic": small_periodic_cell(True, seed, rc=rc)}
    pot = random_potential(spec, seed, structures=tuple(structures.values()))
    return pot, structures


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _symmetric_strains(h: float) -> np.ndarray:
    """(6, 3, 3) symmetric strains of size h in Voigt order xx, yy, zz, yz, xz, xy."""
    out = np.zeros((6, 3, 3))
    for k, (a, b) in enumerate(_VOIGT):
        out[k, a, b] += 0.5 * h
        out[k, b, a] += 0.5 * h
    return out


@functools.lru_cache(maxsize=None)
def _batched_energy(energy_fn):
    def run(positions, cells, args):
        return jax.vmap(lambda p, c: energy_fn(p, c, *args))(positions, cells)
    return cheap_jit(run)


def fd_energies(energy_fn, positions, cell=None, *args, h: float = 1e-5, strain_h: float = 1e-6,
                atoms=None) -> dict:
    """Energies of all central-difference displacements and symmetric strains, in one ``vmap``.

    Args:
        energy_fn: ``energy_fn(positions, cell, *args) -> E`` [eV], JAX-traceable. Any
            neighbour graph goes into ``args`` and must stay valid for every displaced or
            strained configuration (see `cutoff_margin`). Pass the *same* function object on
            every call: the compiled batch is cached per function (and shape).
        positions: (N, 3) [Å]; cell: (3, 3) lattice rows [Å] (zeros or None for free systems).
        h: displacement step [Å]; strain_h: strain step.
        atoms: indices of the atoms to displace (default all).

    Returns:
        dict with ``plus``/``minus`` (n, 3) energies at R_ia ± h for the atoms in ``atoms`` and
        ``strain_plus``/``strain_minus`` (6,) at symmetric strains ±strain_h (Voigt order), where
        positions and cell are both deformed as R → R (1 + ε)ᵀ.
    """
    pos = jnp.asarray(positions)
    dtype = pos.dtype
    n = pos.shape[0]
    c = jnp.zeros((3, 3), dtype) if cell is None else jnp.asarray(cell, dtype)
    atoms = np.arange(n) if atoms is None else np.asarray(atoms)
    m = len(atoms)
    disp = np.zeros((3 * m, n, 3))
    disp[np.arange(3 * m), np.repeat(atoms, 3), np.tile(np.arange(3), m)] = h
    eps = _symmetric_strains(strain_h)
    deform = np.concatenate([np.eye(3) + eps, np.eye(3) - eps])
    p64 = np.asarray(pos, np.float64)
    c64 = np.asarray(c, np.float64)
    P = np.concatenate([p64 + disp, p64 - disp, p64 @ deform.transpose(0, 2, 1)])
    C = np.concatenate([np.broadcast_to(c64, (6 * m, 3, 3)), c64 @ deform.transpose(0, 2, 1)])
    batch = _batched_energy(energy_fn)
    e = np.asarray(batch(jnp.asarray(P, dtype), jnp.asarray(C, dtype), args), np.float64)
    return {"plus": e[: 3 * m].reshape(m, 3), "minus": e[3 * m: 6 * m].reshape(m, 3),
            "strain_plus": e[6 * m: 6 * m + 6], "strain_minus": e[6 * m + 6:]}


@functools.lru_cache(maxsize=None)
def _jitted_grad(energy_fn):
    return cheap_jit(lambda p, c, args: jax.grad(energy_fn)(p, c, *args))


@functools.lru_cache(maxsize=None)
def _positions_only(energy_fn):
    """``energy_fn(positions, *args)`` as ``f(positions, cell, *args)`` (cached wrapper)."""
    def wrapped(positions, cell, *args):
        return energy_fn(positions, *args)
    return wrapped


def check_forces_fd(energy_fn, positions, cell=None, *args, forces=None, h: float = 1e-5,
                    atoms=None) -> float:
    """Max |F − F_fd| [eV/Å]: forces against central finite differences of the energy.

    Args:
        energy_fn: ``energy_fn(positions, cell, *args) -> E`` [eV] (see `fd_energies`), or
            ``energy_fn(positions, *args)`` when ``cell`` is None.
        positions: (N, 3) [Å]; cell: (3, 3) lattice rows, or None (energy_fn takes no cell).
        forces: (N, 3) forces to check [eV/Å]; default −∂E/∂R by ``jax.grad``.
        h: step [Å] (1e-5 suits float64; use ~1e-2 in float32).
        atoms: atoms to check (default all).
    """
    pos = jnp.asarray(positions)
    if cell is None:
        energy_fn = _positions_only(energy_fn)
    c = jnp.zeros((3, 3), pos.dtype) if cell is None else jnp.asarray(cell, pos.dtype)
    if forces is None:
        forces = -_jitted_grad(energy_fn)(pos, c, args)
    atoms = np.arange(pos.shape[0]) if atoms is None else np.asarray(atoms)
    e = fd_energies(energy_fn, pos, c, *args, h=h, atoms=atoms)
    fd = -(e["plus"] - e["minus"]) / (2.0 * h)
    return float(np.max(np.abs(np.asarray(forces, np.float64)[atoms] - fd)))


def check_stress_fd(energy_fn, positions, cell, *args, stress, h: float = 1e-6, atoms=None) -> float:
    """Max |σ − σ_fd| [eV/Å³] of σ = (1/V) ∂E/∂ε against central finite symmetric strains.

    Args:
        energy_fn: ``energy_fn(positions, cell, *args) -> E`` [eV] (see `fd_energies`).
        positions: (N, 3) [Å]; cell: (3, 3) lattice rows [Å] (periodic).
        stress: (3, 3) stress to check [eV/Å³] (ASE sign convention).
        h: strain step.
        atoms: passed to `fd_energies` (only the batch shape depends on it).
    """
    e = fd_energies(energy_fn, positions, cell, *args, strain_h=h, atoms=atoms)
    volume = abs(np.linalg.det(np.asarray(cell, np.float64)))
    voigt = (e["strain_plus"] - e["strain_minus"]) / (2.0 * h) / volume
    fd = np.zeros((3, 3))
    for k, (a, b) in enumerate(_VOIGT):
        fd[a, b] = fd[b, a] = voigt[k]
    return float(np.max(np.abs(np.asarray(stress, np.float64) - fd)))


def transformed(structure: Structure, transform: str, rng=0) -> tuple[Structure, np.ndarray, np.ndarray]:
    """``(new structure, perm, rot)``: new atom k is old atom ``perm[k]`` and, up to lattice
    vectors and a translation, new positions = old positions[perm] @ rotᵀ.

    ``transform``: "translate" (random shift), "rotate" (random rotation of positions *and*
    cell), "permute" (random permutation within each element), "wrap" (every atom moved by random
    integer lattice vectors; periodic only) or "all" (all of them, wrap only if periodic).
    """
    rng = np.random.default_rng(rng)
    kinds = ("translate", "rotate", "permute", "wrap") if transform == "all" else (transform,)
    pos, cell, num = structure.positions.copy(), structure.cell.copy(), structure.numbers.copy()
    perm, rot = np.arange(structure.n_atoms), np.eye(3)
    for kind in kinds:
        if kind == "translate":
            pos = pos + rng.uniform(-3.0, 3.0, 3)
        elif kind == "rotate":
            r = random_rotation(rng)
            pos, cell, rot = pos @ r.T, cell @ r.T, r @ rot
        elif kind == "permute":
            p = np.arange(len(num))
            for z in np.unique(num):
                sel = np.flatnonzero(num == z)
                p[sel] = rng.permutation(sel)
            pos, num, perm = pos[p], num[p], perm[p]
        elif kind == "wrap":
            if not structure.periodic:
                if transform == "all":
                    continue
                raise ValueError("wrap needs a periodic structure")
            k = rng.integers(-2, 3, size=(len(num), 3)) * structure.pbc
            pos = pos + k @ cell
        else:
            raise ValueError(f"unknown transform {kind!r}")
    return structure.replace(positions=pos, cell=cell, numbers=num), perm, rot


def check_invariance(properties_fn, structure: Structure, transform: str = "all",
                     seed: int = 0) -> tuple[float, float]:
    """Energy and force changes under a symmetry operation (see `transformed`).

    Args:
        properties_fn: host function ``structure -> (E [eV], F (N, 3) [eV/Å])`` that builds its
            own neighbour graph (e.g. ``lambda s: jnnp.model.energy_and_forces(pot, s)``).
        structure: reference structure.
        transform: "translate", "rotate", "permute", "wrap" or "all".

    Returns:
        ``(|ΔE| / N [eV], max |ΔF| [eV/Å])`` with the forces of the transformed structure
        rotated back and permuted to the original atom order.
    """
    t, perm, rot = transformed(structure, transform, seed)
    e0, f0 = properties_fn(structure)
    e1, f1 = properties_fn(t)
    f1_back = np.asarray(f1, np.float64) @ rot      # F_new = F_old[perm] rotᵀ
    return (abs(float(e1) - float(e0)) / structure.n_atoms,
            float(np.max(np.abs(f1_back - np.asarray(f0, np.float64)[perm]))))
