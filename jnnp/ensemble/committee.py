"""Committees (ensembles) of HDNNPs with one spec: mean and spread of energy, forces, atomic energies.

A `Committee` holds M members' parameters stacked along a leading axis; every prediction is one
jitted `jax.vmap` over members. When all members have the same descriptor parameters (always,
unless descriptor hyperparameters were trained), the symmetry functions are computed once and only
the scaling, networks and the backward passes are batched.

Statistics over members k = 1..M (``ddof`` 0 by default, i.e. the population spread):

* ``energy_mean``, ``energy_std`` [eV]; ``energies_mean``, ``energies_std`` (N,) atomic energies;
* ``forces_mean``, ``forces_std`` (N, 3) [eV/Å] per Cartesian component;
* ``force_disagreement`` (N,) [eV/Å] = sqrt(Σ_α var_k F_iα), the spread of atom i's force vector
  (Schran et al., J. Chem. Phys. 153, 104105 (2020) use the same per-atom force deviation);
* ``members``: each member's ``energy`` (M,), ``forces`` (M, N, 3), ``energies`` (M, N).

`mean_potential` rewrites the committee mean as *one* `Potential` (a block-diagonal network M
times wider), so MD, ASE and n2p2 export run the committee mean with no special code. Saved
committees are a folder with ``committee.json`` and one `jnnp.train.checkpoint.save_model`
folder per member (``member_000/``, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.atomic import atomic_write_text
from jnnp.descriptors.scaling import apply_scaling, identity_statistics
from jnnp.model.potential import Potential, PotentialSpec, make_atomic_energy_fn

__all__ = ["Committee", "committee_statistics", "make_member_properties_fn", "make_committee_fn",
           "compiled_committee_fn", "committee_compute", "committee_predict", "mean_potential",
           "committee_observables", "save_committee", "load_committee", "is_committee_dir", "COMMITTEE_FORMAT"]

COMMITTEE_FORMAT = "jnnp-committee"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Committee:
    """M potentials of one ``spec``; ``params`` is their parameter pytree stacked on axis 0."""

    spec: PotentialSpec = dataclasses.field(metadata=dict(static=True))
    params: dict

    @classmethod
    def from_potentials(cls, potentials) -> "Committee":
        """Stack the parameters of potentials that share one spec (at least two)."""
        pots = list(potentials)
        if len(pots) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(pots)}")
        spec = pots[0].spec
        for k, p in enumerate(pots[1:], 1):
            if p.spec != spec:
                raise ValueError(f"member {k} has a different potential spec than member 0; committee members "
                                 "must share descriptors and network shapes")
        params = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[p.params for p in pots])
        return cls(spec, params)

    @property
    def n_members(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    def member(self, k: int) -> Potential:
        return Potential(self.spec, jax.tree.map(lambda x: np.asarray(x)[k], self.params))

    def members(self) -> list[Potential]:
        return [self.member(k) for k in range(self.n_members)]

    def replace(self, **kw) -> "Committee":
        return dataclasses.replace(self, **kw)

    def astype(self, dtype) -> "Committee":
        """Every floating-point parameter cast to ``dtype``."""
        cast = lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x
        return self.replace(params=jax.tree.map(cast, self.params))

    @property
    def dtype(self):
        return jnp.asarray(self.params["energy"]["scale"]).dtype

    @property
    def shared_descriptor(self) -> bool:
        """All members have identical descriptor parameters (then G is computed once)."""
        return all(bool(np.all(np.asarray(x) == np.asarray(x)[:1])) for x in jax.tree.leaves(self.params["descriptor"]))


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------

def committee_statistics(out: dict, ddof: int = 0) -> dict:
    """Mean/std over the leading (member) axis of ``out`` (``energy`` (M,), ``forces``
    (M, N, 3), ``energies`` (M, N)); see the module docstring. Jittable."""
    M = out["energy"].shape[0]
    if M - ddof <= 0:
        raise ValueError(f"need more than ddof={ddof} members, got {M}")

    def mean_var(x):
        mean = jnp.mean(x, axis=0)
        return mean, jnp.sum((x - mean) ** 2, axis=0) / (M - ddof)

    e_mean, e_var = mean_var(out["energy"])
    f_mean, f_var = mean_var(out["forces"])
    a_mean, a_var = mean_var(out["energies"])
    return {"energy_mean": e_mean, "energy_std": jnp.sqrt(e_var), "forces_mean": f_mean,
            "forces_std": jnp.sqrt(f_var), "force_disagreement": jnp.sqrt(jnp.sum(f_var, axis=-1)),
            "energies_mean": a_mean, "energies_std": jnp.sqrt(a_var), "members": out}


# ----------------------------------------------------------------------------------------------
# Single structures (any graph: host graphs, MD graphs)
# ----------------------------------------------------------------------------------------------

def make_member_properties_fn(spec: PotentialSpec):
    """``fn(params, positions, cell, graph) -> {"energy" (), "forces" (N, 3), "energies" (N,)}``
    of one member (one forward and one backward pass; differentiable w.r.t. params)."""
    atomic = make_atomic_energy_fn(spec)

    def fn(params, positions, cell, graph):
        def total(R):
            e = atomic(params, R, cell, graph)
            return jnp.sum(e), e

        (energy, energies), grad = jax.value_and_grad(total, has_aux=True)(positions)
        return {"energy": energy, "forces": -grad, "energies": energies}

    return fn


def _member_axes(params: dict, shared_descriptor: bool):
    """(params with the descriptor unstacked when shared, vmap in_axes prefix)."""
    axes = {k: 0 for k in params}
    if shared_descriptor:
        params = dict(params)
        params["descriptor"] = jax.tree.map(lambda x: x[0], params["descriptor"])
        axes["descriptor"] = None
    return params, axes


def make_committee_fn(spec: PotentialSpec, *, shared_descriptor: bool = True, ddof: int = 0):
    """``fn(stacked_params, positions, cell, graph) -> statistics`` (`committee_statistics`),
    not jitted (it can be used inside other jitted code, e.g. an MD observable).

    ``shared_descriptor``: take member 0's descriptor parameters for all members, so the
    symmetry functions are computed once (only valid when `Committee.shared_descriptor`).
    """
    member = make_member_properties_fn(spec)

    def fn(params, positions, cell, graph):
        params, axes = _member_axes(params, shared_descriptor)
        out = jax.vmap(member, in_axes=(axes, None, None, None))(params, positions, cell, graph)
        return committee_statistics(out, ddof)

    return fn


@functools.lru_cache(maxsize=16)
def compiled_committee_fn(spec: PotentialSpec, shared_descriptor: bool = True, ddof: int = 0):
    """Jitted `make_committee_fn`, memoised per (spec, shared_descriptor, ddof)."""
    return jax.jit(make_committee_fn(spec, shared_descriptor=shared_descriptor, ddof=ddof))


def committee_compute(committee: Committee, structure, *, ddof: int = 0) -> dict:
    """Committee statistics of one `Structure` as numpy float64 arrays (atoms trimmed to N).

    Neighbour arrays are padded to bucketed sizes as in `jnnp.model.compute`.
    """
    from jnnp.model.evaluate import padded_inputs

    fn = compiled_committee_fn(committee.spec, committee.shared_descriptor, ddof)
    out = fn(committee.params, *padded_inputs(committee.member(0), structure, committee.dtype))
    return _trim(jax.device_get(out), structure.n_atoms)


def _trim(out: dict, n: int) -> dict:
    res = {}
    for k, v in out.items():
        if k == "members":
            res[k] = {kk: np.asarray(vv, np.float64)[:, :n] if vv.ndim > 1 else np.asarray(vv, np.float64)
                      for kk, vv in v.items()}
        else:
            v = np.asarray(v, np.float64)
            res[k] = v[:n] if v.ndim else v
    return res


def committee_observables(committee: Committee, *, ddof: int = 0) -> dict:
    """MD observables of the committee's disagreement, each ``fn(positions (N, 3) Å, cell (3, 3) Å,
    graph) -> scalar`` (evaluated inside the jitted MD chunk, logged as thermo columns):

    * ``committee_energy_std_eV``: σ_E of the total energy;
    * ``committee_force_std_max_eV_per_A``: max over atoms of the force disagreement σ_F,i;
    * ``committee_force_std_mean_eV_per_A``: its mean over atoms.

    The committee is evaluated once per sample for all three (the statistics are reused while the
    arguments are the same objects, i.e. within one trace).
    """
    fn = make_committee_fn(committee.spec, shared_descriptor=committee.shared_descriptor, ddof=ddof)
    params = committee.params
    cache = {}

    def stats(positions, cell, graph):
        if cache.get("args") is not None and all(a is b for a, b in zip(cache["args"], (positions, cell, graph))):
            return cache["out"]
        p = jax.tree.map(lambda x: jnp.asarray(x, positions.dtype)
                         if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else jnp.asarray(x), params)
        out = fn(p, positions, cell, graph)
        cache.update(args=(positions, cell, graph), out=out)
        return out

    def f_max(R, cell, graph):
        d = stats(R, cell, graph)["force_disagreement"]
        return jnp.max(jnp.where(graph.atom_mask, d, 0.0))

    def f_mean(R, cell, graph):
        d = stats(R, cell, graph)["force_disagreement"]
        return jnp.sum(jnp.where(graph.atom_mask, d, 0.0)) / jnp.maximum(jnp.sum(graph.atom_mask), 1)

    return {"committee_energy_std_eV": lambda R, cell, graph: stats(R, cell, graph)["energy_std"],
            "committee_force_std_max_eV_per_A": f_max, "committee_force_std_mean_eV_per_A": f_mean}


# ----------------------------------------------------------------------------------------------
# Many structures: padded batches
# ----------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _batch_committee_fn(spec: PotentialSpec, shared_descriptor: bool):
    """Jitted ``fn(stacked_params, batch) -> {"energy" (M, B), "forces" (M, A, 3), "energies"
    (M, A)}`` on a `jnnp.train.batch.Batch` (cell = I, Cartesian image offsets)."""
    atomic = make_atomic_energy_fn(spec)

    def member(params, batch):
        dtype = jnp.asarray(params["energy"]["scale"]).dtype
        graph = batch.graph.replace(pair_shift=jnp.asarray(batch.graph.pair_shift).astype(dtype))
        eye = jnp.eye(3, dtype=dtype)

        def total(R):
            e = atomic(params, R, eye, graph)
            return jnp.sum(e), e

        (_, energies), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(batch.positions).astype(dtype))
        energy = jax.ops.segment_sum(energies, batch.atom_structure, num_segments=batch.structure_mask.shape[0])
        return {"energy": energy, "forces": -grad, "energies": energies}

    def fn(params, batch):
        params, axes = _member_axes(params, shared_descriptor)
        return jax.vmap(member, in_axes=(axes, None))(params, batch)

    return jax.jit(fn)


def committee_predict(committee: Committee, structures, *, batch_size: int = 16, ddof: int = 0,
                      batcher=None) -> list[dict]:
    """Committee statistics (`committee_compute` keys, numpy float64) of many structures, batched.

    Returns one dict per structure, in order.
    """
    from jnnp.train.batch import Batcher

    if batcher is None:
        batcher = Batcher(committee.spec, structures, batch_size)
    fn = _batch_committee_fn(committee.spec, committee.shared_descriptor)
    stats = jax.jit(functools.partial(committee_statistics, ddof=ddof))
    out = [None] * len(batcher)
    for batch in batcher.batches():
        raw = fn(committee.params, batch)
        e = np.asarray(raw["energy"], np.float64)
        f = np.asarray(raw["forces"], np.float64)
        a = np.asarray(raw["energies"], np.float64)
        a0 = 0
        for k in range(batch.n_structures):
            if not batch.structure_mask[k]:
                continue
            n = int(batch.n_atoms[k])
            rec = stats({"energy": e[:, k], "forces": f[:, a0:a0 + n], "energies": a[:, a0:a0 + n]})
            out[int(batch.index[k])] = _trim(jax.device_get(rec), n)
            a0 += n
    return out


# ----------------------------------------------------------------------------------------------
# The committee mean as one potential
# ----------------------------------------------------------------------------------------------

def mean_potential(committee: Committee) -> Potential:
    """One `Potential` whose energy is the committee mean, E = (1/M) Σ_k E_k (to rounding).

    Its element networks are the members' networks side by side (hidden layers M times wider,
    block-diagonal weights); each member's symmetry-function scaling (an affine map) is folded
    into its first-layer weights, so the new spec has ``scaling="none"``; the output layer sums
    the members' outputs with weights scale_k / (M · scale) and the shifts are averaged. Needs a
    linear output activation and shared descriptor parameters. Forces are exact derivatives of
    the mean energy, hence equal the mean of the members' forces.
    """
    spec = committee.spec
    if spec.activations[-1] != "l":
        raise ValueError(f"the committee mean is one network only for a linear output activation, "
                         f"got {spec.activations[-1]!r}")
    if not committee.shared_descriptor:
        raise ValueError("members have different descriptor parameters: their mean is not one potential")
    M = committee.n_members
    p = jax.tree.map(np.asarray, committee.params)
    dtype = p["energy"]["scale"].dtype
    scales = p["energy"]["scale"].astype(np.float64)
    scale = float(np.mean(scales))
    weights = scales / (M * scale)
    n_layers = len(spec.hidden) + 1
    networks = []
    for c, n_c in enumerate(spec.descriptor.n_features):
        layers = {}
        for l in range(n_layers):
            name = f"layer_{l}"
            ks = [np.asarray(p["networks"][c]["params"][name]["kernel"][k], np.float64) for k in range(M)]
            bs = [np.asarray(p["networks"][c]["params"][name]["bias"][k], np.float64) for k in range(M)]
            if l == 0:  # fold the affine symmetry-function scaling x = o + f ⊙ G into the first layer
                for k in range(M):
                    stats = jax.tree.map(lambda x, k=k: np.asarray(x[k], np.float64), p["scaling"][c])
                    o = np.asarray(apply_scaling(spec.scaling, stats, np.zeros(n_c), spec.scale_min, spec.scale_max))
                    f = np.asarray(apply_scaling(spec.scaling, stats, np.ones(n_c), spec.scale_min, spec.scale_max)) - o
                    bs[k] = bs[k] + o @ ks[k]
                    ks[k] = f[:, None] * ks[k]
            # normalize_nodes divides by the fan-in, which grows M-fold after the first layer
            fan = M if (spec.normalize_nodes and l > 0) else 1
            if l == n_layers - 1:
                kernel = (np.concatenate([w * ks[k] for k, w in enumerate(weights)], axis=0) if l > 0
                          else sum(w * ks[k] for k, w in enumerate(weights)))
                bias = sum(w * bs[k] for k, w in enumerate(weights))
            else:
                kernel = _block_diag(ks) if l > 0 else np.concatenate(ks, axis=1)
                bias = np.concatenate(bs)
            layers[name] = {"kernel": (fan * kernel).astype(dtype), "bias": (fan * bias).astype(dtype)}
        networks.append({"params": layers})
    new_spec = dataclasses.replace(spec, hidden=tuple(M * h for h in spec.hidden), scaling="none")
    params = {"descriptor": jax.tree.map(lambda x: np.asarray(x[0]), p["descriptor"]),
              "scaling": tuple(identity_statistics(n).copy() for n in spec.descriptor.n_features),
              "networks": tuple(networks),
              "energy": {"scale": np.asarray(scale, dtype), "shift": p["energy"]["shift"].mean(0).astype(dtype)}}
    params["scaling"] = tuple({k: v.astype(dtype) for k, v in s.items()} for s in params["scaling"])
    return Potential(new_spec, params)


def _block_diag(blocks) -> np.ndarray:
    rows, cols = sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols))
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def save_committee(directory, committee: Committee, metadata: dict | None = None) -> Path:
    """Write ``committee.json`` and ``member_000/``, ... (`save_model` folders) into ``directory``."""
    from jnnp.train.checkpoint import save_model

    directory = Path(directory)
    names = [f"member_{k:03d}" for k in range(committee.n_members)]
    for k, name in enumerate(names):
        save_model(directory / name, committee.member(k), metadata={"committee_member": k})
    # written last: a folder with committee.json is complete
    atomic_write_text(directory / "committee.json", json.dumps(
        {"format": COMMITTEE_FORMAT, "version": 1, "members": names, "metadata": metadata or {}}, indent=2,
        default=float) + "\n")
    return directory


def is_committee_dir(path) -> bool:
    return (Path(path) / "committee.json").is_file()


def load_committee(directory, dtype=None) -> Committee:
    """Load a committee written by `save_committee`."""
    from jnnp.errors import ModelFormatError
    from jnnp.train.checkpoint import load_potential

    directory = Path(directory)
    path = directory / "committee.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no committee.json (a committee folder holds committee.json "
                                "and one model folder per member)")
    body = json.loads(path.read_text())
    if body.get("format") != COMMITTEE_FORMAT or not isinstance(body.get("members"), list):
        raise ModelFormatError(path, f"format {COMMITTEE_FORMAT!r} with a 'members' list",
                               str(body.get("format")))
    pots = [load_potential(directory / name, dtype=dtype) for name in body["members"]]
    return Committee.from_potentials(pots)
