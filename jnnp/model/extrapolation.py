"""Extrapolation warnings as n2p2's: symmetry-function values outside the training range.

A potential stores, per element and function, the minimum and maximum of its symmetry functions
over the training structures (``params["scaling"][c]["min"/"max"]``, fitted by
`jnnp.train.normalize` or read from n2p2's ``scaling.data``). A value G < min or G > max means the
network is evaluated outside the region it was fitted on (n2p2 counts these as "extrapolation
warnings"). Here every such (atom, function) value is counted, never silently ignored:

* `make_extrapolation_fn`: jittable counts of one graph (usable inside MD, see
  `extrapolation_observables`, whose result the MD driver logs per sampled step);
* `extrapolation_report`: counts per structure, per element and per function over a data set,
  with the most extreme values seen, for ``jnnp evaluate`` / ``jnnp predict``.

Comparison: a value counts when it lies more than ``tolerance · max(max − min, |min|, |max|)``
outside [min, max]. n2p2 compares strictly (tolerance 0); the small default only absorbs the
last-digit differences between two evaluations of one training structure (e.g. padded batches
vs a single graph), so training structures never warn themselves.

A model without fitted statistics (identity statistics min 0, max 1, mean 0, σ 1 for every
function, as `init_potential` leaves them) cannot be checked: `has_statistics` is False and the
report says so instead of counting against meaningless bounds.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.compute import make_descriptor_fn

__all__ = ["DEFAULT_TOLERANCE", "has_statistics", "make_extrapolation_fn", "extrapolation_observables",
           "extrapolation_observables_or_none",
           "ExtrapolationReport", "extrapolation_report", "describe_function"]

DEFAULT_TOLERANCE = 1e-9


def has_statistics(potential) -> bool:
    """False when every element's scaling statistics are the identity placeholders."""
    for st in potential.params["scaling"]:
        lo, hi = np.asarray(st["min"]), np.asarray(st["max"])
        mean, sigma = np.asarray(st["mean"]), np.asarray(st["sigma"])
        if not (np.all(lo == 0) and np.all(hi == 1) and np.all(mean == 0) and np.all(sigma == 1)):
            return True
    return False


def _bounds(stats, dtype, tolerance):
    lo, hi = jnp.asarray(stats["min"], dtype), jnp.asarray(stats["max"], dtype)
    margin = tolerance * jnp.maximum(hi - lo, jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
    return lo - margin, hi + margin


def _counts_from_G(G, params, graph, tolerance):
    """Per element: below/above (n_c,) counts, per-row event counts (cap_c,), observed min/max."""
    out = {"below": [], "above": [], "row_events": [], "g_min": [], "g_max": []}
    for c, G_c in enumerate(G):
        dtype = G_c.dtype
        lo, hi = _bounds(params["scaling"][c], dtype, tolerance)
        mask = jnp.asarray(graph.element_mask[c])[:, None]
        below = (G_c < lo) & mask
        above = (G_c > hi) & mask
        out["below"].append(jnp.sum(below, axis=0))
        out["above"].append(jnp.sum(above, axis=0))
        out["row_events"].append(jnp.sum(below | above, axis=1))
        out["g_min"].append(jnp.min(jnp.where(mask, G_c, jnp.inf), axis=0))
        out["g_max"].append(jnp.max(jnp.where(mask, G_c, -jnp.inf), axis=0))
    return {k: tuple(v) for k, v in out.items()}


def make_extrapolation_fn(spec, tolerance: float = DEFAULT_TOLERANCE):
    """``fn(params, positions, cell, graph) -> dict`` (jittable, not differentiable):

    * ``below``, ``above``: per element (n_c,) int number of atoms whose function value lies
      under the training minimum / over the maximum;
    * ``atoms``: () number of atoms with at least one out-of-range function;
    * ``total``: () number of out-of-range (atom, function) values;
    * ``g_min``, ``g_max``: per element (n_c,) smallest/largest value seen (±inf without atoms).
    """
    descriptor_fn = make_descriptor_fn(spec.descriptor)

    def fn(params, positions, cell, graph):
        G = descriptor_fn(params["descriptor"], positions, cell, graph)
        r = _counts_from_G(G, params, graph, tolerance)
        atoms = sum(jnp.sum(ev > 0) for ev in r["row_events"])
        total = sum(jnp.sum(ev) for ev in r["row_events"])
        return {"below": r["below"], "above": r["above"], "atoms": atoms, "total": total,
                "g_min": r["g_min"], "g_max": r["g_max"]}

    return fn


def extrapolation_observables(potential, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """MD observables (``fn(positions (N, 3) Å, cell (3, 3) Å, graph) -> scalar``):
    ``extrapolations`` (out-of-range (atom, function) values) and ``extrapolating_atoms``.

    Raises ValueError for a potential without fitted statistics (`has_statistics`).
    """
    if not has_statistics(potential):
        raise ValueError("the potential stores no symmetry-function statistics (identity scaling "
                         "statistics): extrapolation cannot be checked")
    fn = make_extrapolation_fn(potential.spec, tolerance)
    params = potential.params
    cache = {}

    def counts(positions, cell, graph):
        # both observables are evaluated on the same arguments within one trace: compute once
        if cache.get("args") is not None and all(a is b for a, b in zip(cache["args"], (positions, cell, graph))):
            return cache["out"]
        p = jax.tree.map(lambda x: jnp.asarray(x, positions.dtype)
                         if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, params)
        out = fn(p, positions, cell, graph)
        cache.update(args=(positions, cell, graph), out=out)
        return out

    return {"extrapolations": lambda R, cell, graph: counts(R, cell, graph)["total"],
            "extrapolating_atoms": lambda R, cell, graph: counts(R, cell, graph)["atoms"]}


def describe_function(sf) -> str:
    """Short n2p2-like description of a `SymFunc`, e.g. ``type 2 O-H eta=0.5 rs=0 rc=4``."""
    from jnnp.data.elements import symbol

    els = "-".join(symbol(z) for z in (sf.center, *sf.neighbors))
    parts = [f"type {sf.type}", els]
    if sf.is_compact:
        parts += [f"rl={sf.rl:g}", f"rc={sf.rc:g}"]
    else:
        parts += [f"eta={sf.eta:g}", f"rs={sf.rs:g}"]
        if not sf.is_radial:
            parts += [f"lambda={sf.lam:g}", f"zeta={sf.zeta:g}"]
        parts.append(f"rc={sf.rc:g}")
    return " ".join(parts)


@dataclasses.dataclass
class ExtrapolationReport:
    """Out-of-range symmetry-function values over a set of structures.

    Attributes:
        checked: False when the model has no fitted statistics (nothing could be checked).
        per_structure: (S,) out-of-range (atom, function) values of each structure.
        atoms_per_structure: (S,) atoms with at least one out-of-range value.
        functions: one dict per function with any out-of-range value: ``element``, ``index``
            (column in n2p2 order), ``description``, ``below``/``above`` (atom counts),
            ``train_min``/``train_max`` and ``seen_min``/``seen_max``.
        provenance: (S,) where each structure came from.
    """

    checked: bool
    per_structure: np.ndarray
    atoms_per_structure: np.ndarray
    functions: list
    provenance: list

    @property
    def total(self) -> int:
        return int(np.sum(self.per_structure))

    @property
    def n_structures_affected(self) -> int:
        return int(np.sum(self.per_structure > 0))

    def lines(self, max_functions: int = 10) -> list[str]:
        """Human-readable warning lines (empty when nothing extrapolates)."""
        if not self.checked:
            return ["extrapolation: not checked (the model has no symmetry-function statistics)"]
        if self.total == 0:
            return []
        out = [(f"extrapolation warning: {self.total} symmetry-function values outside the training range in "
                f"{self.n_structures_affected} of {len(self.per_structure)} structures "
                f"({int(np.sum(self.atoms_per_structure))} atoms)")]
        ranked = sorted(self.functions, key=lambda f: -(f["below"] + f["above"]))
        for f in ranked[:max_functions]:
            out.append(f"  {f['element']} G[{f['index']}] ({f['description']}): {f['below']} below "
                       f"min {f['train_min']:.6g} (seen {f['seen_min']:.6g}), {f['above']} above "
                       f"max {f['train_max']:.6g} (seen {f['seen_max']:.6g})")
        if len(ranked) > max_functions:
            out.append(f"  ... and {len(ranked) - max_functions} more functions")
        return out

    def to_dict(self) -> dict:
        return {"checked": self.checked, "total": self.total, "structures_affected": self.n_structures_affected,
                "per_structure": [int(x) for x in self.per_structure],
                "atoms_per_structure": [int(x) for x in self.atoms_per_structure],
                "functions": self.functions,
                "structures": [{"source": p, "values": int(v), "atoms": int(a)} for p, v, a in
                               zip(self.provenance, self.per_structure, self.atoms_per_structure) if v > 0]}


@functools.lru_cache(maxsize=16)
def _batch_fn(spec, tolerance: float):
    """Jitted ``fn(params, batch)`` -> per-element counts and (B,) per-structure events/atoms."""
    descriptor_fn = make_descriptor_fn(spec.descriptor)

    @jax.jit
    def fn(params, batch):
        dtype = jnp.asarray(params["energy"]["scale"]).dtype
        graph = batch.graph.replace(pair_shift=jnp.asarray(batch.graph.pair_shift).astype(dtype))
        G = descriptor_fn(params["descriptor"], jnp.asarray(batch.positions).astype(dtype),
                          jnp.eye(3, dtype=dtype), graph)
        r = _counts_from_G(G, params, graph, tolerance)
        B = batch.structure_mask.shape[0]
        events = jnp.zeros(B, jnp.int32)
        atoms = jnp.zeros(B, jnp.int32)
        for c, ev in enumerate(r["row_events"]):
            slot = batch.atom_structure[graph.element_atoms[c]]
            events = events + jax.ops.segment_sum(ev.astype(jnp.int32), slot, num_segments=B)
            atoms = atoms + jax.ops.segment_sum((ev > 0).astype(jnp.int32), slot, num_segments=B)
        return {"below": r["below"], "above": r["above"], "g_min": r["g_min"], "g_max": r["g_max"],
                "events": events, "atoms": atoms}

    return fn


def extrapolation_report(potential, structures, *, batch_size: int = 16, tolerance: float = DEFAULT_TOLERANCE,
                         batcher=None) -> ExtrapolationReport:
    """Count out-of-range symmetry-function values of ``potential`` on ``structures`` (batched)."""
    from jnnp.data.elements import symbol
    from jnnp.train.batch import Batcher

    structures = list(structures)
    S = len(structures)
    prov = [s.provenance for s in structures]
    if not has_statistics(potential):
        return ExtrapolationReport(False, np.zeros(S, int), np.zeros(S, int), [], prov)
    spec = potential.spec
    if batcher is None:
        batcher = Batcher(spec, structures, batch_size)
    fn = _batch_fn(spec, float(tolerance))
    n_f = spec.descriptor.n_features
    below = [np.zeros(n, int) for n in n_f]
    above = [np.zeros(n, int) for n in n_f]
    g_min = [np.full(n, np.inf) for n in n_f]
    g_max = [np.full(n, -np.inf) for n in n_f]
    per_structure, per_atoms = np.zeros(S, int), np.zeros(S, int)
    for batch in batcher.batches():
        r = jax.device_get(fn(potential.params, batch))
        ok = batch.structure_mask
        per_structure[batch.index[ok]] = r["events"][ok]
        per_atoms[batch.index[ok]] = r["atoms"][ok]
        for c in range(len(n_f)):
            below[c] += r["below"][c]
            above[c] += r["above"][c]
            g_min[c] = np.minimum(g_min[c], r["g_min"][c])
            g_max[c] = np.maximum(g_max[c], r["g_max"][c])
    functions = []
    for c, z in enumerate(spec.elements):
        st = potential.params["scaling"][c]
        for i in np.flatnonzero(below[c] + above[c]):
            functions.append({"element": symbol(z), "index": int(i),
                              "description": describe_function(spec.descriptor.functions[c][i]),
                              "below": int(below[c][i]), "above": int(above[c][i]),
                              "train_min": float(np.asarray(st["min"])[i]),
                              "train_max": float(np.asarray(st["max"])[i]),
                              "seen_min": float(g_min[c][i]), "seen_max": float(g_max[c][i])})
    return ExtrapolationReport(True, per_structure, per_atoms, functions, prov)


def extrapolation_observables_or_none(potential, tolerance: float = DEFAULT_TOLERANCE):
    """`extrapolation_observables` for a potential with fitted statistics, else None (nothing to
    check against; `has_statistics`)."""
    return extrapolation_observables(potential, tolerance) if has_statistics(potential) else None
