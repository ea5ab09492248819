"""n2p2 model files ⇄ jnnp `Potential`: ``input.nn``, ``scaling.data``, ``weights.NNN.data``.

Reading converts the model to jnnp's internal units (Å, eV) once: symmetry-function lengths by the
model's length unit, and the network output by its energy unit (and n2p2's ``conv_energy``
normalisation); ``mean_energy`` and ``atom_energy`` become the per-element energy shift. Writing
converts back, so a written model predicts exactly what the jnnp model predicts.
Short-range (2G) HDNNPs only; 4G models (``nnp_type 4``) are refused with a clear error.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from jnnp.atomic import atomic_write_text
from jnnp.data.elements import atomic_number, symbol
from jnnp.descriptors.spec import DescriptorSpec, SymFunc
from jnnp.descriptors.params import init_descriptor_params
from jnnp.errors import ModelFormatError
from jnnp.model.activations import get_activation
from jnnp.model.networks import n_weights
from jnnp.model.potential import Potential, PotentialSpec
from jnnp.units import energy_factor, length_factor

__all__ = ["read_n2p2", "write_n2p2", "parse_input_nn", "read_symmetry_functions"]

PREDICTION_KEYWORDS = {
    "number_of_elements", "elements", "atom_energy", "cutoff_type", "symfunction_short",
    "scale_symmetry_functions", "scale_min_short", "scale_max_short", "center_symmetry_functions",
    "scale_symmetry_functions_sigma", "global_hidden_layers_short", "global_nodes_short",
    "global_activation_short", "element_nodes_short", "normalize_nodes", "mean_energy",
    "conv_length", "conv_energy", "nnp_type", "nn_type",
}
# Accepted and ignored: training / analysis settings of n2p2 and RuNNer that do not change a prediction.
TRAINING_KEYWORDS = {
    "random_seed", "test_fraction", "epochs", "use_short_forces", "rmse_threshold",
    "rmse_threshold_energy", "rmse_threshold_force", "rmse_threshold_charge", "rmse_threshold_trials",
    "rmse_threshold_trials_energy", "rmse_threshold_trials_force", "rmse_threshold_trials_charge",
    "short_energy_error_threshold", "short_force_error_threshold", "energy_fraction",
    "force_fraction", "charge_fraction", "short_energy_fraction", "short_force_fraction",
    "use_old_weights_short", "use_old_weights_charge", "weights_min", "weights_max",
    "nguyen_widrow_weights_short", "nguyen_widrow_weights_charge", "precondition_weights",
    "main_error_metric", "write_trainpoints", "write_trainforces", "write_traincharges",
    "write_weights_epoch", "write_neuronstats", "write_trainlog", "repeated_energy_update",
    "updater_type", "parallel_mode", "jacobian_mode", "update_strategy", "selection_mode",
    "selection_mode_energy", "selection_mode_force", "selection_mode_charge",
    "task_batch_size_energy", "task_batch_size_force", "task_batch_size_charge", "gradient_type",
    "gradient_eta", "gradient_adam_eta", "gradient_adam_beta1", "gradient_adam_beta2",
    "gradient_adam_epsilon", "kalman_type", "kalman_epsilon", "kalman_eta", "kalman_etatau",
    "kalman_etamax", "kalman_q0", "kalman_qtau", "kalman_qmin", "kalman_lambda_short",
    "kalman_nue_short", "memorize_symfunc_results", "force_weight", "write_symfunctions",
    "calculate_forces", "analyze_error", "analyze_composition", "conv_charge",
}
_CUTOFF_RE = re.compile(r"^\d+$")


@dataclasses.dataclass
class _Settings:
    path: str
    entries: list  # (keyword, args list, line number)

    def all(self, key):
        return [(a, ln) for k, a, ln in self.entries if k == key]

    def one(self, key, required=True):
        found = self.all(key)
        if len(found) > 1:
            raise ModelFormatError(self.path, f"keyword '{key}' at most once", f"{len(found)} times",
                                   line=found[1][1])
        if not found:
            if required:
                raise ModelFormatError(self.path, f"keyword '{key}'", "nothing")
            return None
        return found[0]

    def has(self, key) -> bool:
        return bool(self.all(key))

    def args(self, key, n=1, required=True):
        """The arguments of a unique keyword, at least ``n`` of them; (args, line) or None."""
        found = self.one(key, required)
        if found is not None and len(found[0]) < n:
            raise ModelFormatError(self.path, f"{n} value(s) after '{key}'", " ".join(found[0]) or "nothing",
                                   line=found[1])
        return found

    def number(self, key, default=None, kind=float):
        found = self.args(key, 1, required=default is None)
        if found is None:
            return default
        return _num(self.path, found[0][0], found[1], f"a number after '{key}'", kind)


def _read_settings(path) -> _Settings:
    entries = []
    for ln, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].split("!", 1)[0].strip()
        if not line:
            continue
        key, *args = line.split()
        if key not in PREDICTION_KEYWORDS | TRAINING_KEYWORDS:
            raise ModelFormatError(path, "a known n2p2 keyword", key, line=ln)
        entries.append((key, args, ln))
    return _Settings(str(path), entries)


def _num(path, tok, ln, what, kind=float):
    try:
        val = kind(tok)
    except ValueError:
        raise ModelFormatError(path, what, tok, line=ln) from None
    if kind is float and not np.isfinite(val):
        raise ModelFormatError(path, f"finite {what}", tok, line=ln)
    return val


_SF_FIELDS = {  # type → field names after the element columns (n2p2 symfunction_short syntax)
    2: (("e",), ("eta", "rs", "rc")),
    3: (("e", "e"), ("eta", "lam", "zeta", "rc", "rs?")),
    9: (("e", "e"), ("eta", "lam", "zeta", "rc", "rs?")),
    12: ((), ("eta", "rs", "rc")),
    13: ((), ("eta", "rs", "lam", "zeta", "rc")),
    20: (("e",), ("rl", "rc", "subtype")),
    21: (("e", "e"), ("rl", "rc", "angle_left", "angle_right", "subtype")),
    22: (("e", "e"), ("rl", "rc", "angle_left", "angle_right", "subtype")),
    23: ((), ("rl", "rc", "subtype")),
    24: ((), ("rl", "rc", "angle_left", "angle_right", "subtype")),
    25: ((), ("rl", "rc", "angle_left", "angle_right", "subtype")),
}


def _parse_symfunction(path, args, ln, elements) -> SymFunc:
    if len(args) < 2:
        raise ModelFormatError(path, "'symfunction_short <element> <type> ...'", " ".join(args), line=ln)
    ec = args[0]
    t = _num(path, args[1], ln, "integer symmetry function type", int)
    if t not in _SF_FIELDS:
        raise ModelFormatError(path, f"symmetry function type in {sorted(_SF_FIELDS)}", args[1], line=ln)
    elems, fields = _SF_FIELDS[t]
    required = len(elems) + sum(not f.endswith("?") for f in fields)
    rest = args[2:]
    if not required <= len(rest) <= len(elems) + len(fields):
        raise ModelFormatError(path, f"{required} fields after type {t}", " ".join(rest), line=ln)
    for sym in (ec, *rest[: len(elems)]):
        if sym not in elements:
            raise ModelFormatError(path, f"an element of 'elements' {elements}", sym, line=ln)
    kw = {}
    for name, tok in zip(fields, rest[len(elems):]):
        name = name.rstrip("?")
        kw[name] = tok if name == "subtype" else _num(path, tok, ln, name)
    if t in (20, 21, 22, 23, 24, 25):
        from jnnp.descriptors.compact import parse_subtype

        try:
            parse_subtype(kw["subtype"])
        except ValueError as err:
            raise ModelFormatError(path, "a compact subtype p1..p4, pNa or e", kw["subtype"], line=ln) from err
        if not kw["rl"] < kw["rc"]:
            raise ModelFormatError(path, "rl < rc", f"rl={kw['rl']} rc={kw['rc']}", line=ln)
        if "angle_left" in kw:
            left, right = kw["angle_left"], kw["angle_right"]
            center = 0.5 * (left + right)
            if not left < right or right - left > 360.0 or (left < 0 and center != 0) or (right > 180 and center != 180):
                raise ModelFormatError(path, "angle_left < angle_right within [0, 180] (or centred on 0/180)",
                                       f"{left} {right}", line=ln)
    try:
        return SymFunc(type=t, center=atomic_number(ec),
                       neighbors=tuple(atomic_number(s) for s in rest[: len(elems)]), **kw)
    except ValueError as err:
        raise ModelFormatError(path, "a valid symmetry function", f"{' '.join(args)} ({err})", line=ln) from None


def _symmetry_functions(path, settings, symbols, zs) -> list[SymFunc]:
    """The ``symfunction_short`` lines of ``settings``; every element of ``zs`` needs one."""
    sfs = [_parse_symfunction(path, a, ln, symbols) for a, ln in settings.all("symfunction_short")]
    for z in zs:
        if not any(sf.center == z for sf in sfs):
            raise ModelFormatError(path, f"at least one symfunction_short for element {symbol(z)}", None)
    return sfs


def read_symmetry_functions(path, elements, *, cutoff_type, cutoff_alpha: float = 0.0,
                            length_unit: str = "angstrom") -> DescriptorSpec:
    """A descriptor set from the ``symfunction_short`` lines of a file in n2p2 syntax (a whole
    ``input.nn``, or a file holding only such lines; other n2p2 keywords are ignored).

    Args:
        path: the file. elements: atomic numbers of the set (every one needs ≥ 1 function, and
            the file may use no other). cutoff_type, cutoff_alpha: n2p2 cutoff function.
        length_unit: unit of the file's lengths (η in length⁻², r_s, r_c, r_l); converted to Å.

    Raises:
        ModelFormatError naming the file and line: unknown keyword or element, malformed line.
    """
    from jnnp.descriptors.cutoff import cutoff_type_number

    path = str(path)
    zs = sorted(int(z) for z in elements)
    syms = tuple(symbol(z) for z in zs)
    sfs = _symmetry_functions(path, _read_settings(path), syms, zs)
    return DescriptorSpec.from_functions(zs, sfs, cutoff_type_number(cutoff_type),
                                         float(cutoff_alpha)).scaled_length(length_factor(length_unit))


def _header_units(path) -> tuple[str | None, str | None]:
    text = Path(path).read_text()
    lu = re.search(r"^#\s*Length unit\s*:\s*(\S+)", text, re.M | re.I)
    eu = re.search(r"^#\s*Energy unit\s*:\s*(\S+)", text, re.M | re.I)
    return (lu.group(1) if lu else None), (eu.group(1) if eu else None)


def _factor_or_none(factor, unit):
    try:
        return factor(unit)
    except ValueError:
        return None


def _resolve_units(path, length_unit, energy_unit):
    hl, he = _header_units(path)
    out = []
    for what, given, header, factor in (("length", length_unit, hl, length_factor),
                                         ("energy", energy_unit, he, energy_factor)):
        if given is None and header is None:
            raise ModelFormatError(path, f"the model's {what} unit (pass {what}_unit=..., e.g. "
                                   f"'bohr'/'hartree' or 'angstrom'/'eV', or a '# {what.title()} unit:' "
                                   f"header line)", None)
        if given is not None and header is not None and _factor_or_none(factor, header) != _factor_or_none(factor, given):
            raise ModelFormatError(path, f"{what} unit {given!r} as requested", f"header says {header!r}")
        unit = given if given is not None else header
        try:
            factor(unit)
        except ValueError as err:
            raise ModelFormatError(path, f"a known {what} unit", f"{unit!r} ({err})") from None
        out.append(unit)
    return tuple(out)


def parse_input_nn(path, length_unit=None, energy_unit=None):
    """Parse an n2p2 ``input.nn`` into (PotentialSpec in Å, energy dict, n2p2 settings).

    Returns:
        spec: `PotentialSpec` with symmetry-function lengths converted to Å.
        energy: {"scale": eV per network output unit, "shift": (T,) eV per atom of each element}.
    """
    path = str(path)
    s = _read_settings(path)
    lunit, eunit = _resolve_units(path, length_unit, energy_unit)
    L, E = length_factor(lunit), energy_factor(eunit)
    nnp_type = s.one("nnp_type", False) or s.one("nn_type", False)
    if nnp_type is not None and not (nnp_type[0] and nnp_type[0][0].startswith("2")):
        raise ModelFormatError(path, "a short-range HDNNP (nnp_type 2)", " ".join(nnp_type[0]), line=nnp_type[1])
    (elem_args, ln) = s.args("elements")
    elements = tuple(elem_args)
    for sym in elements:
        try:
            atomic_number(sym)
        except KeyError:
            raise ModelFormatError(path, "element symbols", sym, line=ln) from None
    n_el = s.args("number_of_elements")
    if _num(path, n_el[0][0], n_el[1], "integer", int) != len(elements):
        raise ModelFormatError(path, f"number_of_elements = {len(elements)} (the 'elements' count)",
                               n_el[0][0], line=n_el[1])
    zs = sorted(atomic_number(x) for x in elements)

    ct_args, ct_ln = s.args("cutoff_type")
    from jnnp.descriptors.cutoff import cutoff_type_number
    try:
        ctype = cutoff_type_number(int(ct_args[0]))
    except (ValueError, IndexError):
        raise ModelFormatError(path, "cutoff_type <0..8> [alpha]", " ".join(ct_args), line=ct_ln) from None
    alpha = _num(path, ct_args[1], ct_ln, "cutoff alpha") if len(ct_args) > 1 else 0.0
    if not 0.0 <= alpha < 1.0:
        raise ModelFormatError(path, "cutoff alpha in [0, 1)", ct_args[1], line=ct_ln)

    sfs = _symmetry_functions(path, s, elements, zs)
    desc = DescriptorSpec.from_functions(zs, sfs, ctype, alpha).scaled_length(L)

    # n2p2's precedence (Mode::setupSymmetryFunctionScaling): scale, then center, then sigma.
    scale, center = s.has("scale_symmetry_functions"), s.has("center_symmetry_functions")
    if scale:
        scaling = "scale_center" if center else "scale"
    elif center:
        scaling = "center"
    else:
        scaling = "sigma" if s.has("scale_symmetry_functions_sigma") else "none"
    smin = s.number("scale_min_short", 0.0)
    smax = s.number("scale_max_short", 1.0)

    nl_args, nl_ln = s.args("global_hidden_layers_short")
    n_hidden = _num(path, nl_args[0], nl_ln, "integer number of hidden layers", int)
    if n_hidden < 0:
        raise ModelFormatError(path, "a number of hidden layers ≥ 0", nl_args[0], line=nl_ln)
    nodes_args, nodes_ln = s.args("global_nodes_short")
    act_args, act_ln = s.args("global_activation_short")
    if len(nodes_args) < n_hidden:
        raise ModelFormatError(path, f"{n_hidden} hidden-layer widths", " ".join(nodes_args), line=nodes_ln)
    hidden = tuple(_num(path, x, nodes_ln, "integer layer width", int) for x in nodes_args[:n_hidden])
    if any(h < 1 for h in hidden):
        raise ModelFormatError(path, "layer widths ≥ 1", " ".join(nodes_args), line=nodes_ln)
    if len(act_args) < n_hidden + 1:
        raise ModelFormatError(path, f"{n_hidden + 1} activation characters", " ".join(act_args), line=act_ln)
    acts = tuple(act_args[: n_hidden + 1])
    for a in acts:
        try:
            get_activation(a)
        except (KeyError, ValueError):
            raise ModelFormatError(path, "an n2p2 activation character", a, line=act_ln) from None
    if s.has("element_nodes_short"):
        a, ln = s.all("element_nodes_short")[0]
        raise ModelFormatError(path, "global_nodes_short only (per-element widths not supported yet)",
                               " ".join(a), line=ln)

    normalize = all(s.has(k) for k in ("mean_energy", "conv_energy", "conv_length"))
    if not normalize and any(s.has(k) for k in ("mean_energy", "conv_energy", "conv_length")):
        raise ModelFormatError(path, "all three of mean_energy, conv_energy, conv_length", "only some")
    mean_energy, conv_energy = 0.0, 1.0
    if normalize:
        mean_energy = s.number("mean_energy")
        conv_energy = s.number("conv_energy")
        s.number("conv_length")
        if conv_energy == 0:
            raise ModelFormatError(path, "conv_energy ≠ 0", "0", line=s.one("conv_energy")[1])
    atom_energy = dict.fromkeys(zs, 0.0)
    for a, ln in s.all("atom_energy"):
        if len(a) != 2 or a[0] not in elements:
            raise ModelFormatError(path, "'atom_energy <element> <energy>'", " ".join(a), line=ln)
        atom_energy[atomic_number(a[0])] = _num(path, a[1], ln, "atom energy")

    spec = PotentialSpec(descriptor=desc, hidden=hidden, activations=acts,
                         normalize_nodes=s.has("normalize_nodes"), scaling=scaling, scale_min=smin,
                         scale_max=smax, source_units=(lunit, eunit))
    energy = {"scale": np.asarray(E / conv_energy),
              "shift": np.array([E * (mean_energy + atom_energy[z]) for z in zs])}
    return spec, energy


def _read_scaling(path, n_features):
    rows = {}
    for ln, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tok = line.split()
        if len(tok) not in (5, 6):
            raise ModelFormatError(path, "6 columns 'e_index sf_index min max mean sigma'", line, line=ln)
        e, k = (_num(path, t, ln, "integer index", int) for t in tok[:2])
        vals = [_num(path, t, ln, "number") for t in tok[2:]] + ([0.0] if len(tok) == 5 else [])
        rows.setdefault(e, []).append((k, vals, ln))
    if sorted(rows) != list(range(1, len(n_features) + 1)):
        raise ModelFormatError(path, f"element indices 1..{len(n_features)}", sorted(rows))
    stats = []
    for e, n in enumerate(n_features, 1):
        r = rows[e]
        if [k for k, _, _ in r] != list(range(1, n + 1)):
            raise ModelFormatError(path, f"{n} rows (sf_index 1..{n}) for element index {e}",
                                   f"{len(r)} rows", line=r[-1][2])
        a = np.array([v for _, v, _ in r])
        stats.append({"min": a[:, 0], "max": a[:, 1], "mean": a[:, 2], "sigma": a[:, 3]})
    return stats


def _read_weights(path, n_in, features):
    vals = []
    for ln, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            vals.append(_num(path, line.split()[0], ln, "a weight value"))
    want = n_weights(features, n_in)
    if len(vals) != want:
        raise ModelFormatError(path, f"{want} weights for a {n_in}-{'-'.join(map(str, features))} network",
                               f"{len(vals)}")
    vals, layers, pos = np.array(vals), {}, 0
    for k, (a, b) in enumerate(zip([n_in, *features[:-1]], features)):
        w = vals[pos: pos + a * b].reshape(a, b)  # n2p2 order: from-neuron outer, to-neuron inner
        pos += a * b
        layers[f"layer_{k}"] = {"kernel": w, "bias": vals[pos: pos + b].copy()}
        pos += b
    return {"params": layers}


def read_n2p2(directory, *, input_nn="input.nn", scaling="scaling.data",
              weights="weights.{z:03d}.data", length_unit=None, energy_unit=None) -> Potential:
    """Load an n2p2 short-range HDNNP into a float64 jnnp `Potential` (Å, eV inside).

    Args:
        directory: folder with the model files (names below are relative to it).
        input_nn, scaling: file names; weights: pattern with ``{z}`` = atomic number.
        length_unit, energy_unit: the model's units (e.g. ``"bohr"``, ``"hartree"``); may be
            omitted when input.nn has ``# Length unit:``/``# Energy unit:`` header lines, and must
            agree with them otherwise.

    Raises:
        ModelFormatError: naming file, line and what was expected.
    """
    d = Path(directory)
    spec, energy = parse_input_nn(d / input_nn, length_unit, energy_unit)
    nf = spec.descriptor.n_features
    stats = _read_scaling(d / scaling, nf) if spec.scaling != "none" or (d / scaling).exists() else None
    if stats is None:
        from jnnp.descriptors.scaling import identity_statistics
        stats = [identity_statistics(n) for n in nf]
    nets = tuple(_read_weights(d / weights.format(z=z), n, (*spec.hidden, 1))
                 for z, n in zip(spec.elements, nf))
    params = {"descriptor": init_descriptor_params(spec.descriptor), "scaling": tuple(stats),
              "networks": nets, "energy": energy}
    return Potential(spec, params)


def _sf_line(sf: SymFunc, L: float) -> str:
    ec, t = symbol(sf.center), sf.type
    nb = " ".join(symbol(z) for z in sf.neighbors)
    g = lambda x: f"{x:.17g}"
    if t == 2:
        body = f"{nb} {g(sf.eta * L**2)} {g(sf.rs / L)} {g(sf.rc / L)}"
    elif t in (3, 9):
        body = f"{nb} {g(sf.eta * L**2)} {g(sf.lam)} {g(sf.zeta)} {g(sf.rc / L)} {g(sf.rs / L)}"
    elif t == 12:
        body = f"{g(sf.eta * L**2)} {g(sf.rs / L)} {g(sf.rc / L)}"
    elif t == 13:
        body = f"{g(sf.eta * L**2)} {g(sf.rs / L)} {g(sf.lam)} {g(sf.zeta)} {g(sf.rc / L)}"
    elif t in (20, 23):
        body = f"{nb} {g(sf.rl / L)} {g(sf.rc / L)} {sf.subtype}".strip()
    else:
        body = f"{nb} {g(sf.rl / L)} {g(sf.rc / L)} {g(sf.angle_left)} {g(sf.angle_right)} {sf.subtype}"
    return f"symfunction_short {ec} {t} {body.strip()}"


def write_n2p2(potential: Potential, directory, *, length_unit=None, energy_unit=None) -> None:
    """Write ``input.nn``, ``scaling.data`` and ``weights.NNN.data`` for n2p2 (or `read_n2p2`).

    Args:
        potential: a jnnp potential (any float dtype; written in full float64 precision).
        directory: output folder (created).
        length_unit, energy_unit: units of the written model; default: the units it was read in
            (``spec.source_units``), else Å/eV. They are recorded in the input.nn header.

    The per-element energy shift is written as ``atom_energy`` and the network output unit as
    ``conv_energy`` (with mean_energy 0, conv_length 1), which n2p2 applies exactly as jnnp does.
    """
    from jnnp.descriptors.params import spec_with_params

    spec, p = potential.spec, jax_to_numpy(potential.params)
    lunit = length_unit or spec.source_units[0]
    eunit = energy_unit or spec.source_units[1]
    L, E = length_factor(lunit), energy_factor(eunit)
    desc = spec_with_params(spec.descriptor, p["descriptor"])
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    syms = [symbol(z) for z in spec.elements]
    lines = ["# n2p2 HDNNP written by jnnp", f"# Length unit: {lunit}", f"# Energy unit: {eunit}",
             f"number_of_elements {len(syms)}", f"elements {' '.join(syms)}",
             f"cutoff_type {desc.cutoff_type} {desc.cutoff_alpha:.17g}"]
    scale = float(p["energy"]["scale"])
    lines += ["mean_energy 0.0", f"conv_energy {E / scale:.17g}", "conv_length 1.0"]
    for s, shift in zip(syms, p["energy"]["shift"]):
        lines.append(f"atom_energy {s} {float(shift) / E:.17g}")
    kw = {"scale": ["scale_symmetry_functions"], "center": ["center_symmetry_functions"],
          "scale_center": ["scale_symmetry_functions", "center_symmetry_functions"],
          "sigma": ["scale_symmetry_functions_sigma"],
          "none": []}[spec.scaling]
    lines += kw + [f"scale_min_short {spec.scale_min:.17g}", f"scale_max_short {spec.scale_max:.17g}"]
    lines += [f"global_hidden_layers_short {len(spec.hidden)}",
              f"global_nodes_short {' '.join(map(str, spec.hidden))}",
              f"global_activation_short {' '.join(spec.activations)}"]
    if spec.normalize_nodes:
        lines.append("normalize_nodes")
    lines += [_sf_line(sf, L) for fs in desc.functions for sf in fs]
    atomic_write_text(d / "input.nn", "\n".join(lines) + "\n")

    rows = ["# e_index sf_index sf_min sf_max sf_mean sf_sigma"]
    for e, st in enumerate(p["scaling"], 1):
        for k in range(len(st["min"])):
            rows.append(f"{e:10d} {k + 1:10d} " + " ".join(
                f"{float(st[f][k]):24.16E}" for f in ("min", "max", "mean", "sigma")))
    atomic_write_text(d / "scaling.data", "\n".join(rows) + "\n")

    for z, net in zip(spec.elements, p["networks"]):
        out = ["# connection t index l_s n_s l_e n_e"]
        idx = 0
        layers = net["params"]
        for k in range(len(layers)):
            w, b = np.asarray(layers[f"layer_{k}"]["kernel"]), np.asarray(layers[f"layer_{k}"]["bias"])
            for i in range(w.shape[0]):
                for j in range(w.shape[1]):
                    idx += 1
                    out.append(f"{w[i, j]:24.16E} a {idx:9d} {k:5d} {i + 1:5d} {k + 1:5d} {j + 1:5d}")
            for j in range(w.shape[1]):
                idx += 1
                out.append(f"{b[j]:24.16E} b {idx:9d} {k + 1:5d} {j + 1:5d}")
        atomic_write_text(d / f"weights.{z:03d}.data", "\n".join(out) + "\n")


def jax_to_numpy(tree):
    import jax
    return jax.tree.map(lambda x: np.asarray(x, dtype=np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating)
                        else np.asarray(x), tree)
