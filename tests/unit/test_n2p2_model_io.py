"""n2p2 model files (input.nn, scaling.data, weights.NNN.data) ⇄ jnnp `Potential`.

Covers: Bohr/Ha ↔ Å/eV conversion of models and structures, write/read round trips (also of
modified potentials), models other than the reference water HDNNP (Cu2S in Å/eV, a synthetic
isolated-molecule model using every symmetry-function type), n2p2's symmetry-function order,
and malformed files (each a `ModelFormatError` naming file, line and expectation).

Compiling a potential for a structure costs seconds on a CPU, so every (spec, structure) pair is
compiled once: module-scoped fixtures hold the predictions, models that differ from an already
compiled one only in ``spec.source_units`` (export metadata that the energy function never reads,
but part of the spec's hash) reuse its compiled function once the rest of the spec has been
checked to be identical, and `_evaluate` compiles jnnp's own energy/forces functions
(`make_energy_fn` + `make_properties_fn`, as `jnnp.compute` does) with XLA's backend optimisation
turned off for this one compilation, which halves the compile time. The exact n2p2 reference
check of the 1080-molecule box, through `jnnp.compute` itself, lives in
``tests/integration/test_n2p2_reference.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jnnp
from _shared import shared_path
from jnnp.descriptors.params import init_descriptor_params
from jnnp.descriptors.scaling import apply_scaling
from jnnp.descriptors.spec import DescriptorSpec, SymFunc, sort_key
from jnnp.errors import ModelFormatError
from jnnp.io.n2p2 import parse_input_nn, read_n2p2, write_n2p2
from jnnp.model.evaluate import graph_for
from jnnp.model.networks import n_weights
from jnnp.model.potential import make_energy_fn
from jnnp.model.properties import make_properties_fn
from jnnp.units import BOHR, HARTREE

WATER_FIT = ("n2p2-examples", "H2O_RPBE-D3", "reference-fit-7241")
WATER_FILES = {"input.nn.predict": "input.nn", "scaling.data": "scaling.data",
               "weights.001.data": "weights.001.data", "weights.008.data": "weights.008.data"}
RTOL = 1e-12  # write/read/unit-conversion agreement of predictions (relative)
SHARED = pytest.mark.shared_data  # needs ../shared/data (skipped without it)


# ----------------------------------------------------------------------------- helpers


def _water_fit_dir() -> Path:
    return shared_path(*WATER_FIT)


def _copy_water_model(dest: Path) -> Path:
    """Copy the reference water HDNNP into ``dest`` (input.nn.predict saved as input.nn)."""
    src = _water_fit_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for name, new in WATER_FILES.items():
        shutil.copy(src / name, dest / new)
    return dest


def _same_apart_from_units(a: jnnp.PotentialSpec, b: jnnp.PotentialSpec) -> bool:
    return dataclasses.replace(a, source_units=b.source_units) == b


# Per-compilation XLA option (no global configuration is touched): skip the backend
# optimisation passes. Results agree with the optimised build to rounding.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_COMPILED: dict = {}


def _evaluate(pot: jnnp.Potential, structure, *, forces: bool = True) -> dict:
    """Energy [eV] and, with ``forces``, forces [eV/Å] and atomic energies [eV] as numpy float64,
    from jnnp's energy function (the same functions `jnnp.compute` jits, without stress)."""
    args = (pot.params, jnp.asarray(structure.positions), jnp.asarray(structure.cell),
            graph_for(pot, structure))
    key = (pot.spec, forces, jax.tree.structure(args),
           tuple((jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(args)))
    if key not in _COMPILED:
        efn = make_energy_fn(pot.spec)
        fn = (make_properties_fn(efn, stress=False, atomic_energy_fn=efn.atomic_energy_fn) if forces
              else lambda *a: {"energy": efn(*a)})
        _COMPILED[key] = jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)
    return {k: np.asarray(v, np.float64) for k, v in _COMPILED[key](*args).items()}


def _predict(pot: jnnp.Potential, structure, like: jnnp.Potential | None = None) -> dict:
    """`_evaluate` with forces. If ``pot``'s spec equals ``like``'s apart from ``source_units``
    (not read by the energy function), evaluate with ``like.spec`` so that the already compiled
    function is reused; otherwise ``pot`` is compiled as it is."""
    if like is not None and _same_apart_from_units(pot.spec, like.spec):
        pot = pot.replace(spec=like.spec)
    return _evaluate(pot, structure)


def _assert_same_prediction(ref: dict, got: dict, rtol: float = RTOL) -> None:
    """Energy to ``rtol`` relative; forces and atomic energies to ``rtol`` times their largest
    magnitude (componentwise relative errors are meaningless for near-zero components)."""
    assert abs(got["energy"] - ref["energy"]) <= rtol * abs(ref["energy"]), (got["energy"], ref["energy"])
    fmax = np.max(np.abs(ref["forces"]))
    np.testing.assert_allclose(got["forces"], ref["forces"], rtol=0, atol=rtol * fmax)
    emax = np.max(np.abs(ref["energies"]))
    np.testing.assert_allclose(got["energies"], ref["energies"], rtol=0, atol=rtol * emax)


def _assert_params_close(a, b, rtol: float = 1e-14) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        scale = max(1.0, float(np.max(np.abs(x), initial=0.0)))
        np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * scale)


def _assert_descriptors_close(a: DescriptorSpec, b: DescriptorSpec, rtol: float = 1e-14) -> None:
    assert a.elements == b.elements
    assert (a.cutoff_type, a.cutoff_alpha) == (b.cutoff_type, b.cutoff_alpha)
    assert a.n_features == b.n_features
    for fa, fb in zip((f for fs in a.functions for f in fs), (f for fs in b.functions for f in fs)):
        for field in dataclasses.fields(SymFunc):
            va, vb = getattr(fa, field.name), getattr(fb, field.name)
            if isinstance(va, float):
                assert math.isclose(va, vb, rel_tol=rtol, abs_tol=1e-300), (field.name, fa, fb)
            else:
                assert va == vb, (field.name, fa, fb)


def _header_units(text: str) -> tuple[str, str]:
    lu = re.search(r"^#\s*Length unit\s*:\s*(\S+)", text, re.M | re.I)
    eu = re.search(r"^#\s*Energy unit\s*:\s*(\S+)", text, re.M | re.I)
    assert lu and eu, "input.nn header does not record the units"
    return lu.group(1), eu.group(1)


def _write_random_scaling_and_weights(directory: Path, elements, n_features, hidden, rng) -> None:
    """scaling.data (e_index sf_index min max mean sigma; element index 1 = lowest Z) and one
    weights.ZZZ.data per element (one value per line, n2p2 order), all random."""
    rows = ["# e_index sf_index sf_min sf_max sf_mean sf_sigma (random, written by the test)"]
    for e, n in enumerate(n_features, 1):
        for k in range(1, n + 1):
            lo = rng.uniform(0.0, 0.5)
            hi = lo + rng.uniform(0.5, 2.0)
            mean, sigma = rng.uniform(lo, hi), rng.uniform(0.2, 1.0)
            rows.append(f"{e} {k} {lo:.17g} {hi:.17g} {mean:.17g} {sigma:.17g}")
    (directory / "scaling.data").write_text("\n".join(rows) + "\n")
    for z, n in zip(elements, n_features):
        w = rng.normal(0.0, 0.3, n_weights((*hidden, 1), n))
        (directory / f"weights.{z:03d}.data").write_text(
            "# random weights written by the test\n" + "\n".join(f"{x:.17g}" for x in w) + "\n")


def _zero_output_layer(pot: jnnp.Potential, bias_by_element) -> jnnp.Potential:
    """Output layer: zero kernel and the given bias, so every atomic network returns that bias."""
    nets = []
    for net, b in zip(pot.params["networks"], bias_by_element):
        layers = dict(net["params"])
        last = f"layer_{len(layers) - 1}"
        layers[last] = {"kernel": np.zeros_like(np.asarray(layers[last]["kernel"])),
                        "bias": np.full_like(np.asarray(layers[last]["bias"]), b)}
        nets.append({"params": layers})
    return pot.replace(params={**pot.params, "networks": tuple(nets)})


def _energy_only(pot: jnnp.Potential, structure) -> float:
    """Total energy [eV] (energy-only compile: half the cost of energy + forces)."""
    return float(_evaluate(pot, structure, forces=False)["energy"])


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def water_pot() -> jnnp.Potential:
    return read_n2p2(_water_fit_dir(), input_nn="input.nn.predict", length_unit="bohr",
                     energy_unit="hartree")


@pytest.fixture(scope="module")
def water48():
    """The first 48-atom (16 H2O) frame of the RPBE-D3 water set (Bohr/Ha in the file)."""
    data = jnnp.read(shared_path("n2p2-examples", "H2O_RPBE-D3", "input.data"), length_unit="bohr",
                     energy_unit="hartree")
    s = next(s for s in data if s.n_atoms == 48)
    assert s.periodic
    return s


@pytest.fixture(scope="module")
def water48_pred(water_pot, water48) -> dict:
    out = _predict(water_pot, water48)
    assert np.isfinite(out["energy"]) and np.all(np.isfinite(out["forces"]))
    return out


# ----------------------------------------------------------------------------- parsing


@SHARED
def test_water_input_nn_parsed_in_bohr_hartree():
    path = _water_fit_dir() / "input.nn.predict"
    spec, energy = parse_input_nn(path)  # units from the header
    assert spec.source_units == ("Bohr", "Ha")
    assert spec.elements == (1, 8)
    assert spec.descriptor.n_features == (27, 30)
    assert (spec.hidden, spec.activations, spec.scaling) == ((25, 25), ("t", "t", "l"), "scale_center")
    assert (spec.scale_min, spec.scale_max, spec.normalize_nodes) == (0.0, 1.0, False)
    assert spec.descriptor.cutoff_type == 2 and spec.descriptor.cutoff_alpha == 0.0
    # n2p2 normalisation: E_atom = out / conv_energy + mean_energy (Ha), converted to eV.
    conv_energy, mean_energy = 2.4265748255366972e02, -2.5521343547039809e01
    assert float(energy["scale"]) == pytest.approx(HARTREE / conv_energy, rel=1e-15)
    np.testing.assert_allclose(energy["shift"], HARTREE * mean_energy, rtol=1e-15)
    # lengths in Å inside: every function of this model has r_c = 12 Bohr
    rcs = {sf.rc for fs in spec.descriptor.functions for sf in fs}
    assert len(rcs) == 1 and math.isclose(rcs.pop(), 12.0 * BOHR, rel_tol=1e-15)
    # same numbers when the units are passed explicitly (they agree with the header)
    spec2, energy2 = parse_input_nn(path, length_unit="bohr", energy_unit="hartree")
    assert _same_apart_from_units(spec2, spec)
    # the training input.nn of the same fit (many training-only keywords) parses to the same model
    spec3, _ = parse_input_nn(_water_fit_dir() / "input.nn")
    assert spec3 == spec


@SHARED
def test_water_reader_structure(water_pot):
    p = water_pot.params
    assert [len(st["min"]) for st in p["scaling"]] == [27, 30]
    for net, n_in in zip(p["networks"], (27, 30)):
        layers = net["params"]
        shapes = [np.shape(layers[f"layer_{k}"]["kernel"]) for k in range(len(layers))]
        assert shapes == [(n_in, 25), (25, 25), (25, 1)]
    # first weight of weights.001.data connects input neuron 1 to hidden neuron 1, the second one
    # input neuron 1 to hidden neuron 2 (n2p2 order: from-neuron outer, to-neuron inner)
    lines = (_water_fit_dir() / "weights.001.data").read_text().splitlines()
    first = [float(line.split()[0]) for line in lines if line.strip() and not line.startswith("#")][:2]
    k0 = np.asarray(p["networks"][0]["params"]["layer_0"]["kernel"])
    assert (k0[0, 0], k0[0, 1]) == (first[0], first[1])


# ----------------------------------------------------------------------------- n2p2 order


def test_sort_key_radial_order():
    """Radial functions of one centre: by r_c, then η, then r_s, then neighbour element."""
    index = {1: 0, 8: 1}
    e = SymFunc(2, 8, (8,), rc=10.0, eta=0.5)
    d = SymFunc(2, 8, (8,), rc=12.0, eta=0.001)
    b = SymFunc(2, 8, (1,), rc=12.0, eta=0.01)
    a = SymFunc(2, 8, (8,), rc=12.0, eta=0.01)
    c = SymFunc(2, 8, (1,), rc=12.0, eta=0.01, rs=1.0)
    expected = [e, d, b, a, c]
    shuffled = [a, c, e, b, d]
    assert sorted(shuffled, key=lambda f: sort_key(f, index)) == expected


def test_sort_key_angular_order():
    """Type 3: by r_c, η, r_s, ζ, λ, then e1, e2 (element indices)."""
    index = {1: 0, 8: 1}
    t = SymFunc(3, 1, (8, 8), rc=10.0, eta=0.07, lam=1.0, zeta=1.0)
    u = SymFunc(3, 1, (1, 8), rc=12.0, eta=0.001, lam=1.0, zeta=1.0)
    r = SymFunc(3, 1, (8, 1), rc=12.0, eta=0.01, lam=-1.0, zeta=1.0)  # neighbours given as "O H"
    q = SymFunc(3, 1, (8, 8), rc=12.0, eta=0.01, lam=-1.0, zeta=1.0)
    p = SymFunc(3, 1, (1, 8), rc=12.0, eta=0.01, lam=1.0, zeta=1.0)
    s = SymFunc(3, 1, (1, 8), rc=12.0, eta=0.01, lam=1.0, zeta=4.0)
    v = SymFunc(3, 1, (1, 8), rc=12.0, eta=0.01, rs=0.5, lam=1.0, zeta=1.0)
    assert r.neighbors == (1, 8)
    expected = [t, u, r, q, p, s, v]
    shuffled = [s, q, v, t, p, r, u]
    assert sorted(shuffled, key=lambda f: sort_key(f, index)) == expected


def test_sort_types_and_elements_by_atomic_number():
    """Types sort before parameters (2 < 3 < 9); elements are ordered by atomic number."""
    rad = SymFunc(2, 1, (8,), rc=12.0, eta=0.5)
    ang3 = SymFunc(3, 1, (1, 8), rc=6.0, eta=0.01)
    ang9 = SymFunc(9, 1, (1, 8), rc=4.0, eta=0.01)
    o_rad = SymFunc(2, 8, (1,), rc=12.0, eta=0.5)
    spec = DescriptorSpec.from_functions([8, 1], [ang9, o_rad, ang3, rad])
    assert spec.elements == (1, 8)
    assert spec.functions == ((rad, ang3, ang9), (o_rad,))


def test_sort_key_compact_order():
    """Compact radial (type 20): by subtype, then neighbour element, then r_c, r_l."""
    index = {1: 0, 8: 1}
    d = SymFunc(20, 1, (1,), rc=5.0, rl=0.0, subtype="p2")
    b = SymFunc(20, 1, (1,), rc=8.0, rl=0.0, subtype="p2")
    a = SymFunc(20, 1, (8,), rc=5.0, rl=0.0, subtype="p2")
    c = SymFunc(20, 1, (1,), rc=5.0, rl=1.0, subtype="p3")
    assert sorted([c, a, b, d], key=lambda f: sort_key(f, index)) == [d, b, a, c]


# ----------------------------------------------------------------------------- units


@SHARED
def test_model_written_in_angstrom_ev_predicts_the_same(water_pot, water48, water48_pred, tmp_path):
    ang = tmp_path / "angstrom"
    write_n2p2(water_pot, ang, length_unit="angstrom", energy_unit="eV")
    text = (ang / "input.nn").read_text()
    assert _header_units(text) == ("angstrom", "eV")
    # the numbers in the file really are in Å: r_c = 12 Bohr = 6.35 Å (last field of type-2 lines)
    rcs = {float(line.split()[-1]) for line in text.splitlines() if line.startswith("symfunction_short")
           and line.split()[2] == "2"}
    assert len(rcs) == 1 and math.isclose(rcs.pop(), 12.0 * BOHR, rel_tol=1e-15)
    back = read_n2p2(ang)  # units from the header
    assert back.spec.source_units == ("angstrom", "eV")
    back_explicit = read_n2p2(ang, length_unit="angstrom", energy_unit="eV")
    assert back_explicit.spec == back.spec
    _assert_descriptors_close(water_pot.spec.descriptor, back.spec.descriptor)
    _assert_params_close(water_pot.params, back.params)
    _assert_same_prediction(water48_pred, _predict(back, water48, like=water_pot))

    # ... and back to Bohr/Ha: the symmetry-function numbers equal those of the original file
    bohr = tmp_path / "bohr"
    write_n2p2(back, bohr, length_unit="bohr", energy_unit="hartree")
    assert _header_units((bohr / "input.nn").read_text()) == ("bohr", "hartree")
    orig_file_spec, orig_energy = parse_input_nn(_water_fit_dir() / "input.nn.predict")  # header: Bohr, Ha
    rewritten_spec, rewritten_energy = parse_input_nn(bohr / "input.nn")  # header: bohr, hartree
    _assert_descriptors_close(orig_file_spec.descriptor, rewritten_spec.descriptor)
    _assert_params_close(orig_energy, rewritten_energy)
    again = read_n2p2(bohr)
    _assert_same_prediction(water48_pred, _predict(again, water48, like=water_pot))


@SHARED
def test_contradicting_units_refused_after_conversion(water_pot, tmp_path):
    write_n2p2(water_pot, tmp_path, length_unit="angstrom", energy_unit="eV")
    with pytest.raises(ModelFormatError, match="length unit 'bohr'.*header says 'angstrom'"):
        read_n2p2(tmp_path, length_unit="bohr", energy_unit="eV")


def _frame_lines(path: Path, index: int) -> list[str]:
    frames, cur = [], None
    for line in path.read_text().splitlines():
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "begin":
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if tok[0] == "end":
                frames.append(cur)
                cur = None
    return frames[index]


def _frame_to_angstrom_ev(lines: list[str]) -> list[str]:
    """input.data frame Bohr/Ha → Å/eV (positions, lattice, forces, energy)."""
    g = lambda x, f: f"{float(x) * f:.17g}"
    out = []
    for line in lines:
        t = line.split()
        if t[0] == "lattice":
            t[1:4] = [g(x, BOHR) for x in t[1:4]]
        elif t[0] == "atom":
            t[1:4] = [g(x, BOHR) for x in t[1:4]]
            t[7:10] = [g(x, HARTREE / BOHR) for x in t[7:10]]
        elif t[0] == "energy":
            t[1] = g(t[1], HARTREE)
        out.append(" ".join(t))
    return out


@SHARED
def test_structure_in_bohr_or_angstrom_predicts_the_same(water_pot, water48, water48_pred, tmp_path):
    src = shared_path("n2p2-examples", "H2O_RPBE-D3", "input.data")
    lines = _frame_lines(src, water48.index)
    path = tmp_path / "input.data"
    path.write_text("\n".join(_frame_to_angstrom_ev(lines)) + "\n")
    s_ang = jnnp.read(path)[0]  # default units of input.data: Å, eV
    np.testing.assert_allclose(s_ang.positions, water48.positions, rtol=1e-15, atol=1e-14)
    np.testing.assert_allclose(s_ang.cell, water48.cell, rtol=1e-15, atol=1e-14)
    assert s_ang.energy == pytest.approx(water48.energy, rel=1e-15)
    _assert_same_prediction(water48_pred, _predict(water_pot, s_ang))
    # the water model predicts within its training error on its own training data (~1 meV/atom)
    assert abs(water48_pred["energy"] - water48.energy) / water48.n_atoms < 0.01


# ----------------------------------------------------------------------------- round trips


@SHARED
def test_round_trip_water_identical(water_pot, water48, water48_pred, tmp_path):
    write_n2p2(water_pot, tmp_path)  # default: the units it was read in
    text = (tmp_path / "input.nn").read_text()
    assert _header_units(text) == ("bohr", "hartree")
    back = read_n2p2(tmp_path)
    assert back.spec == water_pot.spec
    _assert_params_close(water_pot.params, back.params)
    n_rows = [line for line in (tmp_path / "scaling.data").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert len(n_rows) == 27 + 30
    _assert_same_prediction(water48_pred, _predict(back, water48, like=water_pot))


_TINY_SFS = (
    SymFunc(2, 1, (8,), rc=6.0, eta=0.5),
    SymFunc(2, 1, (1,), rc=5.0, eta=0.2, rs=0.8),
    SymFunc(2, 8, (1,), rc=6.0, eta=0.3, rs=1.0),
    SymFunc(3, 8, (1, 1), rc=5.0, eta=0.1, lam=-1.0, zeta=2.0),
    SymFunc(9, 1, (1, 8), rc=5.5, eta=0.05, lam=1.0, zeta=1.0),
)

# (id, scaling, normalize_nodes, cutoff type, alpha, activations, hidden, units)
VARIANTS = [
    ("sigma-norm-poly2", "sigma", True, 6, 0.3, ("s", "p", "l"), (4, 3), ("angstrom", "eV")),
    ("center-exp", "center", False, 4, 0.1, ("t", "l"), (5,), ("bohr", "hartree")),
    ("none-cos", "none", False, 1, 0.5, ("g", "t", "l"), (3, 3), ("angstrom", "eV")),
    ("scale-poly1", "scale", True, 5, 0.0, ("c", "l"), (4,), ("nm", "kcal/mol")),
    ("scale_center-poly3", "scale_center", False, 7, 0.2, ("r", "S", "l"), (3, 2), ("bohr", "eV")),
    ("sigma-poly4", "sigma", False, 8, 0.7, ("e", "h", "l"), (2, 2), ("angstrom", "hartree")),
    ("hard", "scale", False, 0, 0.0, ("t", "l"), (3,), ("bohr", "hartree")),
    ("tanhu", "center", False, 2, 0.0, ("p", "l"), (3,), ("angstrom", "eV")),
    ("tanh", "none", True, 3, 0.0, ("s", "l"), (3,), ("bohr", "hartree")),
]


def _variant_potential(scaling, normalize, ctype, alpha, acts, hidden, units, seed=0) -> jnnp.Potential:
    """A small potential with random weights, random scaling statistics and a non-trivial energy
    scale and per-element shift."""
    desc = DescriptorSpec.from_functions([8, 1], _TINY_SFS, ctype, alpha)
    spec = jnnp.PotentialSpec(descriptor=desc, hidden=hidden, activations=acts, normalize_nodes=normalize,
                              scaling=scaling, scale_min=-0.5 if scaling != "none" else 0.0,
                              scale_max=1.5 if scaling != "none" else 1.0, source_units=units)
    rng = np.random.default_rng(seed)
    nets = []
    for n_in in desc.n_features:
        sizes = [n_in, *hidden, 1]
        nets.append({"params": {f"layer_{k}": {"kernel": rng.normal(0.0, 0.7, (a, b)),
                                               "bias": rng.normal(0.0, 0.3, b)}
                                for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))}})
    stats = []
    for n in desc.n_features:
        lo = rng.uniform(0.0, 0.5, n)
        hi = lo + rng.uniform(0.5, 2.0, n)
        stats.append({"min": lo, "max": hi, "mean": rng.uniform(lo, hi), "sigma": rng.uniform(0.2, 1.0, n)})
    params = {"descriptor": init_descriptor_params(desc), "scaling": tuple(stats), "networks": tuple(nets),
              "energy": {"scale": np.asarray(0.37), "shift": np.array([-13.6, -2041.3])}}
    return jnnp.Potential(spec, params)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_round_trip_modified_potential_files(variant, tmp_path):
    _, scaling, normalize, ctype, alpha, acts, hidden, units = variant
    pot = _variant_potential(scaling, normalize, ctype, alpha, acts, hidden, units)
    write_n2p2(pot, tmp_path)
    text = (tmp_path / "input.nn").read_text()
    assert _header_units(text) == units
    assert re.search(rf"^cutoff_type {ctype} ", text, re.M)
    assert ("normalize_nodes" in text.split()) == normalize
    spec, _ = parse_input_nn(tmp_path / "input.nn")  # parseable without unit arguments
    assert spec.scaling == scaling and spec.normalize_nodes == normalize
    back = read_n2p2(tmp_path)
    assert back.spec.source_units == units
    assert (back.spec.hidden, back.spec.activations) == (hidden, acts)
    assert (back.spec.scale_min, back.spec.scale_max) == (pot.spec.scale_min, pot.spec.scale_max)
    _assert_descriptors_close(pot.spec.descriptor, back.spec.descriptor)
    _assert_params_close(pot.params, back.params)
    for z, n in zip((1, 8), back.spec.descriptor.n_features):
        values = [line for line in (tmp_path / f"weights.{z:03d}.data").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
        assert len(values) == n_weights((*hidden, 1), n)


@SHARED
def test_round_trip_modified_potential_predictions(water48, tmp_path):
    """Random weights and scaling statistics, sigma scaling, normalize_nodes, poly2 cutoff with
    α = 0.3, logistic/softplus activations: the written and re-read model predicts the same."""
    _, *args = VARIANTS[0]
    pot = _variant_potential(*args, seed=3)
    ref = _predict(pot, water48)
    assert np.all(np.isfinite(ref["forces"])) and np.max(np.abs(ref["forces"])) > 0
    write_n2p2(pot, tmp_path)
    back = read_n2p2(tmp_path)
    _assert_same_prediction(ref, _predict(back, water48, like=pot))
    # written in other units and read back: same prediction as well
    write_n2p2(pot, tmp_path / "bohr", length_unit="bohr", energy_unit="hartree")
    _assert_same_prediction(ref, _predict(read_n2p2(tmp_path / "bohr"), water48, like=pot))


def test_written_scaling_and_weights_layout(tmp_path):
    """scaling.data rows are 'e_index sf_index min max mean sigma' with element 1 = lowest Z;
    weights.ZZZ.data list kernels (from-neuron outer, to-neuron inner) then biases per layer."""
    pot = _variant_potential("scale", False, 2, 0.0, ("t", "l"), (3,), ("angstrom", "eV"))
    write_n2p2(pot, tmp_path)
    rows = [line.split() for line in (tmp_path / "scaling.data").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]
    st = pot.params["scaling"][0]
    assert [float(x) for x in rows[0][2:6]] == [st["min"][0], st["max"][0], st["mean"][0], st["sigma"][0]]
    vals = [float(line.split()[0]) for line in (tmp_path / "weights.001.data").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    layer0 = pot.params["networks"][0]["params"]["layer_0"]
    k, b = np.asarray(layer0["kernel"]), np.asarray(layer0["bias"])
    assert vals[:3] == list(k[0]) and vals[3:6] == list(k[1]) and vals[9:12] == list(b)


# ----------------------------------------------------------------------------- Cu2S (Å/eV)


@pytest.fixture(scope="module")
def cu2s(tmp_path_factory):
    d = tmp_path_factory.mktemp("cu2s")
    shutil.copy(shared_path("n2p2-examples", "Cu2S_PBE", "input.nn"), d / "input.nn")
    spec, _ = parse_input_nn(d / "input.nn", "angstrom", "eV")
    _write_random_scaling_and_weights(d, spec.elements, spec.descriptor.n_features, spec.hidden,
                                      np.random.default_rng(7))
    pot = read_n2p2(d, length_unit="angstrom", energy_unit="eV")
    s = jnnp.read(shared_path("n2p2-examples", "Cu2S_PBE", "input.data"), index=0)[0]
    return d, pot, s


@SHARED
def test_cu2s_model_reads(cu2s):
    d, pot, _ = cu2s
    spec = pot.spec
    # "elements S Cu" in the file: jnnp (like n2p2) orders elements by atomic number
    assert spec.elements == (16, 29)
    assert spec.descriptor.n_features == (18 + 36 + 36, 17 + 36 + 36)
    assert {sf.type for fs in spec.descriptor.functions for sf in fs} == {2, 3, 9}
    assert (spec.scaling, spec.hidden, spec.activations) == ("sigma", (15, 15), ("p", "p", "l"))
    assert (spec.descriptor.cutoff_type, spec.descriptor.cutoff_alpha) == (6, 0.0)
    assert spec.source_units == ("angstrom", "eV")
    # lengths unchanged (Å file): first S–S radial function has r_c = 6 Å, η = 2 / Å²
    first = spec.descriptor.functions[0][0]
    assert (first.type, first.neighbors, first.rc, first.eta) == (2, (16,), 6.0, 2.0)
    conv_energy, mean_energy = 1.6464963191344094e02, -3.9745355631944457e00
    assert float(pot.params["energy"]["scale"]) == pytest.approx(1.0 / conv_energy, rel=1e-15)
    np.testing.assert_allclose(pot.params["energy"]["shift"], mean_energy, rtol=1e-15)
    # scaling element index 1 is S (lowest Z), so its statistics have 90 rows
    assert [len(st["sigma"]) for st in pot.params["scaling"]] == [90, 89]


@SHARED
def test_cu2s_model_without_units_asks_for_them(cu2s):
    d, _, _ = cu2s
    with pytest.raises(ModelFormatError, match=r"input\.nn: expected the model's length unit.*length_unit="):
        read_n2p2(d)


@SHARED
def test_cu2s_model_evaluates(cu2s):
    """Random weights on a real Cu96S48 cell: finite, translation invariant, and with a constant
    network output b the energy is exactly the n2p2 normalisation N·mean_energy + Σ b/conv_energy."""
    _, pot, s = cu2s
    assert s.n_atoms == 144 and s.periodic
    e = _energy_only(pot, s)
    assert np.isfinite(e)
    shift = np.random.default_rng(1).uniform(-3, 3, 3)
    frac = np.linalg.solve(s.cell.T, (s.positions + shift).T).T
    moved = dataclasses.replace(s, positions=(frac % 1.0) @ s.cell)
    assert _energy_only(pot, moved) == pytest.approx(e, rel=1e-11)
    b = {16: 0.25, 29: -0.75}
    const = _zero_output_layer(pot, [b[z] for z in pot.spec.elements])
    conv_energy, mean_energy = 1.6464963191344094e02, -3.9745355631944457e00
    expected = sum(b[int(z)] / conv_energy + mean_energy for z in s.numbers)
    assert _energy_only(const, s) == pytest.approx(expected, rel=1e-13)


# ----------------------------------------------------------------------------- isolated molecule

# Every symmetry-function type n2p2 knows, for C and H, in Bohr. (line, expected fields, file units)
CH_SF_LINES = [
    ("C 2 H 0.01 0.0 10.0", dict(type=2, center=6, neighbors=(1,), eta=0.01, rs=0.0, rc=10.0)),
    ("C 2 C 0.02 2.0 10.0", dict(type=2, center=6, neighbors=(6,), eta=0.02, rs=2.0, rc=10.0)),
    ("H 2 C 0.01 0.0 10.0", dict(type=2, center=1, neighbors=(6,), eta=0.01, rs=0.0, rc=10.0)),
    ("C 3 H C 0.01 1 2 10.0", dict(type=3, center=6, neighbors=(1, 6), eta=0.01, lam=1.0, zeta=2.0, rc=10.0)),
    ("H 3 C C 0.001 -1 4 9.0 0.5", dict(type=3, center=1, neighbors=(6, 6), eta=0.001, lam=-1.0, zeta=4.0,
                                        rc=9.0, rs=0.5)),
    ("H 9 C C 0.01 -1 1 10.0 0.5", dict(type=9, center=1, neighbors=(6, 6), eta=0.01, lam=-1.0, zeta=1.0,
                                        rc=10.0, rs=0.5)),
    ("C 12 0.01 0.0 10.0", dict(type=12, center=6, neighbors=(), eta=0.01, rs=0.0, rc=10.0)),
    ("H 13 0.01 0.5 1 2 10.0", dict(type=13, center=1, neighbors=(), eta=0.01, rs=0.5, lam=1.0, zeta=2.0,
                                    rc=10.0)),
    ("C 20 C 0.0 8.0 p2", dict(type=20, center=6, neighbors=(6,), rl=0.0, rc=8.0, subtype="p2")),
    ("H 20 C 1.0 8.0 p2a", dict(type=20, center=1, neighbors=(6,), rl=1.0, rc=8.0, subtype="p2a")),
    ("C 21 C H 0.0 8.0 0 180 p2", dict(type=21, center=6, neighbors=(1, 6), rl=0.0, rc=8.0, angle_left=0.0,
                                       angle_right=180.0, subtype="p2")),
    ("H 22 C C 1.0 8.0 30 150 p3", dict(type=22, center=1, neighbors=(6, 6), rl=1.0, rc=8.0, angle_left=30.0,
                                        angle_right=150.0, subtype="p3")),
    ("H 23 0.0 8.0 p1", dict(type=23, center=1, neighbors=(), rl=0.0, rc=8.0, subtype="p1")),
    ("C 24 0.0 8.0 0 180 p4", dict(type=24, center=6, neighbors=(), rl=0.0, rc=8.0, angle_left=0.0,
                                   angle_right=180.0, subtype="p4")),
    ("H 25 0.5 8.0 0 180 e", dict(type=25, center=1, neighbors=(), rl=0.5, rc=8.0, angle_left=0.0,
                                  angle_right=180.0, subtype="e")),
]
CH_ATOM_ENERGY = {6: -37.8, 1: -0.5}  # Ha

CH_INPUT_NN = """\
# Synthetic C/H short-range HDNNP written by the jnnp test suite (not a trained model).
# Length unit: Bohr
# Energy unit: Ha
number_of_elements 2
elements C H
atom_energy C -37.8
atom_energy H -0.5
cutoff_type 5 0.2
scale_symmetry_functions
center_symmetry_functions
scale_min_short -1.0
scale_max_short 1.0
global_hidden_layers_short 2
global_nodes_short 5 4
global_activation_short t s l
"""


def _ch_model_dir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    sf_lines = "".join(f"symfunction_short {line}\n" for line, _ in CH_SF_LINES)
    (d / "input.nn").write_text(CH_INPUT_NN + sf_lines)
    spec, _ = parse_input_nn(d / "input.nn")
    _write_random_scaling_and_weights(d, spec.elements, spec.descriptor.n_features, spec.hidden,
                                      np.random.default_rng(11))
    return d


def test_every_symmetry_function_type_parses(tmp_path):
    spec, energy = parse_input_nn(_ch_model_dir(tmp_path) / "input.nn")
    assert spec.elements == (1, 6)  # "elements C H": ordered by atomic number
    assert spec.source_units == ("Bohr", "Ha")
    parsed = [sf for fs in spec.descriptor.functions for sf in fs]
    assert len(parsed) == len(CH_SF_LINES)
    assert {sf.type for sf in parsed} == {2, 3, 9, 12, 13, 20, 21, 22, 23, 24, 25}
    length = {"rc": BOHR, "rs": BOHR, "rl": BOHR, "eta": 1.0 / BOHR**2}
    for line, fields in CH_SF_LINES:
        matches = []
        for sf in parsed:
            ok = True
            for name, want in fields.items():
                got = getattr(sf, name)
                if isinstance(want, float):
                    ok &= math.isclose(got, want * length.get(name, 1.0), rel_tol=1e-15)
                else:
                    ok &= got == want
            matches.append(ok)
        assert sum(matches) == 1, line
    # per element, the types appear in n2p2 order (type first)
    for fs in spec.descriptor.functions:
        types = [sf.type for sf in fs]
        assert types == sorted(types)
    np.testing.assert_allclose(energy["shift"], [HARTREE * CH_ATOM_ENERGY[1], HARTREE * CH_ATOM_ENERGY[6]],
                               rtol=1e-15)
    assert float(energy["scale"]) == HARTREE


@SHARED
def test_isolated_molecule_model_evaluates(tmp_path):
    """All SF types on a C10H2 chain (no lattice lines, Bohr): finite forces that sum to zero,
    rotation invariance, and the atom_energy offsets (Ha → eV) with a constant network output."""
    pot = read_n2p2(_ch_model_dir(tmp_path))
    s = jnnp.read(shared_path("n2p2-examples", "Carbon_chain_4G", "input.data"), length_unit="bohr",
                  energy_unit="hartree", index=0)[0]
    assert not s.periodic and set(s.numbers.tolist()) == {1, 6}
    out = _evaluate(pot, s)
    assert np.isfinite(out["energy"]) and np.all(np.isfinite(out["forces"]))
    assert np.max(np.abs(out["forces"])) > 1e-3
    np.testing.assert_allclose(out["forces"].sum(0), 0.0, atol=1e-10)
    assert out["energies"].sum() == pytest.approx(out["energy"], rel=1e-13)
    rot = _rotation(np.random.default_rng(5))
    center = s.positions.mean(0)
    turned = dataclasses.replace(s, positions=(s.positions - center) @ rot.T + center)
    out_rot = _evaluate(pot, turned)
    assert out_rot["energy"] == pytest.approx(out["energy"], rel=1e-12)
    np.testing.assert_allclose(out_rot["forces"], out["forces"] @ rot.T, rtol=0,
                               atol=1e-10 * np.max(np.abs(out["forces"])))
    b = {1: 0.125, 6: -0.5}
    const = _zero_output_layer(pot, [b[z] for z in pot.spec.elements])
    expected = sum(HARTREE * (b[int(z)] + CH_ATOM_ENERGY[int(z)]) for z in s.numbers)
    out_const = _evaluate(const, s)
    assert out_const["energy"] == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(out_const["forces"], 0.0, atol=1e-12)


# ----------------------------------------------------------------------------- malformed files


def _edit(path: Path, pattern: str, new: str | None, *, before: bool = False) -> int:
    """Replace (or delete, ``new=None``; or insert ``new`` before, ``before=True``) the first line
    matching the regex ``pattern``; returns the 1-based number of the new/changed line."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(pattern, line):
            if before:
                lines.insert(i, new)
            elif new is None:
                del lines[i]
            else:
                lines[i] = new
            path.write_text("\n".join(lines) + "\n")
            return i + 1
    raise AssertionError(f"no line matches {pattern!r} in {path}")


def _append(path: Path, text: str) -> int:
    lines = path.read_text().splitlines() + [text]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _drop(path: Path, *patterns: str) -> None:
    """Delete the first line matching each pattern (the error then names no line)."""
    for pattern in patterns:
        _edit(path, pattern, None)


def _no_line(*_) -> None:
    """For edits whose error is about the whole file (counts, missing keywords): no line number."""
    return None


FIRST_HH_RADIAL = r"^symfunction_short\s+H\s+2\s+H\s"  # "symfunction_short H 2 H <eta> <rs> <rc>"


# (id, edit(d) -> line number or None, file, texts the message must contain, read kwargs)
MALFORMED = [
    ("unknown_keyword",
     lambda d: _edit(d / "input.nn", r"^number_of_elements", "unknown_keyword_xyz 1", before=True),
     "input.nn", ["a known n2p2 keyword", "'unknown_keyword_xyz'"], {}),
    ("sf_center_not_in_elements",
     lambda d: _append(d / "input.nn", "symfunction_short C 2 H 0.1 0.0 12.0"),
     "input.nn", ["an element of 'elements'", "'C'"], {}),
    ("sf_neighbour_not_in_elements",
     lambda d: _append(d / "input.nn", "symfunction_short H 3 H N 0.1 1 1 12.0"),
     "input.nn", ["an element of 'elements'", "'N'"], {}),
    ("cutoff_alpha_too_large",
     lambda d: _edit(d / "input.nn", r"^cutoff_type", "cutoff_type 6 1.5"),
     "input.nn", ["cutoff alpha in [0, 1)", "'1.5'"], {}),
    ("cutoff_alpha_negative",
     lambda d: _edit(d / "input.nn", r"^cutoff_type", "cutoff_type 6 -0.1"),
     "input.nn", ["cutoff alpha in [0, 1)", "'-0.1'"], {}),
    ("cutoff_alpha_non_numeric",
     lambda d: _edit(d / "input.nn", r"^cutoff_type", "cutoff_type 6 abc"),
     "input.nn", ["cutoff alpha", "'abc'"], {}),
    ("cutoff_type_unknown",
     lambda d: _edit(d / "input.nn", r"^cutoff_type", "cutoff_type 9"),
     "input.nn", ["cutoff_type <0..8>", "'9'"], {}),
    ("sf_non_numeric_parameter",
     lambda d: _edit(d / "input.nn", FIRST_HH_RADIAL, "symfunction_short H 2 H abc 0.0 12.0"),
     "input.nn", ["expected eta", "'abc'"], {}),
    ("sf_too_few_fields",
     lambda d: _edit(d / "input.nn", FIRST_HH_RADIAL, "symfunction_short H 2 H 0.001 0.0"),
     "input.nn", ["4 fields after type 2", "'H 0.001 0.0'"], {}),
    ("sf_too_many_fields",
     lambda d: _edit(d / "input.nn", FIRST_HH_RADIAL, "symfunction_short H 2 H 0.001 0.0 12.0 1.0"),
     "input.nn", ["4 fields after type 2"], {}),
    ("sf_angular_too_few_fields",
     lambda d: _append(d / "input.nn", "symfunction_short H 3 O H 0.2 1.0 1.0"),
     "input.nn", ["6 fields after type 3"], {}),
    ("sf_unknown_type",
     lambda d: _append(d / "input.nn", "symfunction_short H 7 H 0.1 0.0 12.0"),
     "input.nn", ["symmetry function type in", "'7'"], {}),
    ("sf_non_integer_type",
     lambda d: _append(d / "input.nn", "symfunction_short H two H 0.1 0.0 12.0"),
     "input.nn", ["integer symmetry function type", "'two'"], {}),
    ("sf_negative_cutoff",
     lambda d: _edit(d / "input.nn", FIRST_HH_RADIAL, "symfunction_short H 2 H 0.001 0.0 -12.0"),
     "input.nn", ["a valid symmetry function", "cutoff radius must be > 0"], {}),
    ("number_of_elements_mismatch",
     lambda d: _edit(d / "input.nn", r"^number_of_elements", "number_of_elements 3"),
     "input.nn", ["number_of_elements = 2", "'3'"], {}),
    ("unknown_element_symbol",
     lambda d: _edit(d / "input.nn", r"^elements", "elements H Xx"),
     "input.nn", ["element symbols", "'Xx'"], {}),
    ("element_without_symmetry_functions",
     lambda d: _no_line(_edit(d / "input.nn", r"^elements", "elements H O N"),
                        _edit(d / "input.nn", r"^number_of_elements", "number_of_elements 3")),
     "input.nn", ["at least one symfunction_short for element N"], {}),
    ("missing_global_nodes_short",
     lambda d: _drop(d / "input.nn", r"^global_nodes_short"),
     "input.nn", ["keyword 'global_nodes_short'", "got 'nothing'"], {}),
    ("missing_elements",
     lambda d: _drop(d / "input.nn", r"^elements"),
     "input.nn", ["keyword 'elements'"], {}),
    ("missing_cutoff_type",
     lambda d: _drop(d / "input.nn", r"^cutoff_type"),
     "input.nn", ["keyword 'cutoff_type'"], {}),
    ("duplicate_keyword",
     lambda d: _append(d / "input.nn", "cutoff_type 2"),
     "input.nn", ["keyword 'cutoff_type' at most once", "'2 times'"], {}),
    ("too_few_hidden_widths",
     lambda d: _edit(d / "input.nn", r"^global_nodes_short", "global_nodes_short 25"),
     "input.nn", ["2 hidden-layer widths", "'25'"], {}),
    ("non_integer_width",
     lambda d: _edit(d / "input.nn", r"^global_nodes_short", "global_nodes_short 25 2.5"),
     "input.nn", ["integer layer width", "'2.5'"], {}),
    ("unknown_activation",
     lambda d: _edit(d / "input.nn", r"^global_activation_short", "global_activation_short t x l"),
     "input.nn", ["an n2p2 activation character", "'x'"], {}),
    ("too_few_activations",
     lambda d: _edit(d / "input.nn", r"^global_activation_short", "global_activation_short t t"),
     "input.nn", ["3 activation characters"], {}),
    ("atom_energy_unknown_element",
     lambda d: _edit(d / "input.nn", r"^number_of_elements", "atom_energy N -54.0", before=True),
     "input.nn", ["'atom_energy <element> <energy>'", "'N -54.0'"], {}),
    ("incomplete_normalisation",
     lambda d: _drop(d / "input.nn", r"^conv_length"),
     "input.nn", ["all three of mean_energy, conv_energy, conv_length", "'only some'"], {}),
    ("per_element_nodes_unsupported",
     lambda d: _append(d / "input.nn", "element_nodes_short H 2 10 10"),
     "input.nn", ["global_nodes_short only"], {}),
    ("nnp_type_4",
     lambda d: _edit(d / "input.nn", r"^number_of_elements", "nnp_type 4", before=True),
     "input.nn", ["a short-range HDNNP (nnp_type 2)", "'4'"], {}),
    ("nnp_type_4G_string",
     lambda d: _edit(d / "input.nn", r"^number_of_elements", "nnp_type 4G-HDNNP", before=True),
     "input.nn", ["a short-range HDNNP (nnp_type 2)", "'4G-HDNNP'"], {}),
    ("missing_units",
     lambda d: _drop(d / "input.nn", r"^# Length unit", r"^# Energy unit"),
     "input.nn", ["the model's length unit", "length_unit=", "'# Length unit:' header"], {}),
    ("missing_energy_unit",
     lambda d: _drop(d / "input.nn", r"^# Energy unit"),
     "input.nn", ["the model's energy unit", "energy_unit="], {}),
    ("length_unit_contradicts_header", lambda d: None,
     "input.nn", ["length unit 'angstrom' as requested", "header says 'Bohr'"], dict(length_unit="angstrom")),
    ("energy_unit_contradicts_header", lambda d: None,
     "input.nn", ["energy unit 'eV' as requested", "header says 'Ha'"], dict(energy_unit="eV")),
    # scaling.data
    ("scaling_missing_row",
     lambda d: _drop(d / "scaling.data", r"^\s*1\s+27\s"),
     "scaling.data", ["27 rows (sf_index 1..27) for element index 1", "'26 rows'"], {}),
    ("scaling_wrong_column_count",
     lambda d: _edit(d / "scaling.data", r"^\s*1\s+5\s", "1 5 0.0 1.0"),
     "scaling.data", ["6 columns 'e_index sf_index min max mean sigma'"], {}),
    ("scaling_too_many_columns",
     lambda d: _edit(d / "scaling.data", r"^\s*2\s+3\s", "2 3 0.0 1.0 0.5 0.1 7.0"),
     "scaling.data", ["6 columns"], {}),
    ("scaling_wrong_element_index",
     lambda d: _no_line(_edit(d / "scaling.data", r"^\s*2\s+1\s", "3 1 0.0 1.0 0.5 0.1")),
     "scaling.data", ["element indices 1..2", "[1, 2, 3]"], {}),
    ("scaling_non_numeric",
     lambda d: _edit(d / "scaling.data", r"^\s*1\s+2\s", "1 2 0.0 one 0.5 0.1"),
     "scaling.data", ["expected number", "'one'"], {}),
    # weights
    ("weights_too_few",
     lambda d: _drop(d / "weights.001.data", r"^\s*\S+\s+b\s+1376\s"),
     "weights.001.data", ["1376 weights for a 27-25-25-1 network", "'1375'"], {}),
    ("weights_too_many",
     lambda d: _no_line(_append(d / "weights.008.data", "0.5")),
     "weights.008.data", ["1451 weights for a 30-25-25-1 network", "'1452'"], {}),
    ("weights_non_numeric",
     lambda d: _edit(d / "weights.008.data", r"^\s*\S+\s+a\s+10\s", "  1.0x a 10 0 1 1 10"),
     "weights.008.data", ["a weight value", "'1.0x'"], {}),
    ("weights_nan",
     lambda d: _edit(d / "weights.001.data", r"^\s*\S+\s+a\s+5\s", "  nan a 5 0 1 1 5"),
     "weights.001.data", ["finite", "'nan'"], {}),
]


@SHARED
@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_model_files(case, tmp_path):
    _, edit, fname, texts, kwargs = case
    d = _copy_water_model(tmp_path)
    line = edit(d)
    with pytest.raises(ModelFormatError) as info:
        read_n2p2(d, **kwargs)
    err, msg = info.value, str(info.value)
    assert err.path == str(d / fname), msg
    assert msg.startswith(str(d / fname)), msg
    if line is not None:
        assert err.line == line, msg
        assert f"line {line}:" in msg, msg
    for text in texts:
        assert text in msg, (text, msg)


@SHARED
def test_missing_model_file_names_it(tmp_path):
    d = _copy_water_model(tmp_path)
    (d / "weights.008.data").unlink()
    with pytest.raises(OSError, match=r"weights\.008\.data"):
        read_n2p2(d)


# ----------------------------------------------------------------------------- known bugs


def _tiny_input_nn(d: Path, extra: str = "", sf: str = "symfunction_short H 2 H 0.5 0.0 5.0") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "input.nn").write_text("# Length unit: angstrom\n# Energy unit: eV\nnumber_of_elements 1\n"
                                "elements H\ncutoff_type 2\nglobal_hidden_layers_short 1\n"
                                f"global_nodes_short 3\nglobal_activation_short t l\n{extra}{sf}\n")
    return d / "input.nn"


def test_nnp_type_2g_string_accepted(tmp_path):
    spec, _ = parse_input_nn(_tiny_input_nn(tmp_path, "nnp_type 2G-HDNNP\n"))
    assert spec.elements == (1,)


def test_non_numeric_scale_min_names_its_line(tmp_path):
    path = _tiny_input_nn(tmp_path, "scale_symmetry_functions\nscale_min_short abc\n")
    with pytest.raises(ModelFormatError) as info:
        parse_input_nn(path)
    assert info.value.line == 10, str(info.value)


@SHARED
@pytest.mark.parametrize("key", ["global_hidden_layers_short", "mean_energy", "number_of_elements",
                                 "scale_max_short"])
def test_keyword_without_value(key, tmp_path):
    d = _copy_water_model(tmp_path)
    line = _edit(d / "input.nn", rf"^{key}\b", key)
    with pytest.raises(ModelFormatError) as info:
        read_n2p2(d)
    assert info.value.line == line


@SHARED
def test_unknown_header_unit(tmp_path):
    d = _copy_water_model(tmp_path)
    _edit(d / "input.nn", r"^# Energy unit", "# Energy unit: Rydberg")
    with pytest.raises(ModelFormatError, match="input.nn"):
        read_n2p2(d)


@SHARED
def test_negative_hidden_layer_count(tmp_path):
    d = _copy_water_model(tmp_path)
    line = _edit(d / "input.nn", r"^global_hidden_layers_short", "global_hidden_layers_short -1")
    with pytest.raises(ModelFormatError) as info:
        read_n2p2(d)
    assert info.value.line == line


@pytest.mark.parametrize("sf", ["symfunction_short H 20 H 0.0 5.0 q7",
                                "symfunction_short H 22 H H 0.0 5.0 170 10 p2",
                                "symfunction_short H 20 H 6.0 5.0 p2"],
                         ids=["bad_subtype", "inverted_angles", "rl_above_rc"])
def test_invalid_compact_parameters_refused(sf, tmp_path):
    with pytest.raises(ModelFormatError) as info:
        parse_input_nn(_tiny_input_nn(tmp_path, sf=sf))
    assert info.value.line == 9


def test_sigma_plus_center_follows_n2p2(tmp_path):
    """n2p2 checks 'scale' before 'sigma': without scale_symmetry_functions, centring wins."""
    G = jnp.asarray(np.random.default_rng(0).uniform(0, 3, (5, 4)))
    stats = {"min": np.zeros(4), "max": np.full(4, 3.0), "mean": np.full(4, 1.5), "sigma": np.full(4, 0.25)}
    path = _tiny_input_nn(tmp_path, "scale_symmetry_functions_sigma\ncenter_symmetry_functions\n"
                                    "scale_min_short -1\n")
    spec, _ = parse_input_nn(path)
    got = apply_scaling(spec.scaling, stats, G, spec.scale_min, spec.scale_max)
    np.testing.assert_allclose(np.asarray(got), np.asarray(G) - 1.5, rtol=1e-15)
