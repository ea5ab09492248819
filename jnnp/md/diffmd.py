"""A gradients-through-MD study from a config: ``jnnp diffmd CONFIG.yaml``.

For one model and start structure it estimates the derivatives of trajectory observables — the
mean potential energy [eV], one Gaussian-smoothed g(r) bin, the density [g/cm³] in NPT — with
respect to every parameter of the potential (network weights, scaling statistics, energy
scale/shift, and the symmetry-function fields listed in ``trainable_descriptor``), by two methods:

* ``direct``: backpropagation through a short MD window (`jnnp.md.gradients`, checkpointed scan).
  It is the exact derivative of *that finite-trajectory average* (same start, same noise); it
  explodes for long chaotic windows, so keep the window short.
* ``reweight``: the fluctuation formula d⟨O⟩/dθ = −β Cov(O, ∂U/∂θ) + ⟨∂O/∂θ⟩ over a longer
  canonical (NVT) run (`jnnp.md.reweight`): the derivative of the *ensemble average*, with
  blocked standard errors. Assumptions in `jnnp.md.reweight`.

The two estimate different things and agree only when the window average already equals the
ensemble average; the comparison in ``gradients.json`` (cosine, norm ratio) is reported, not
asserted. Outputs in ``run_dir``: ``gradients.json`` (values, gradient norms per parameter group,
the symmetry-function-parameter gradients, errors), ``gradients.npz`` (every gradient, keys
``method/observable/parameter path``) and ``diffmd.png``. Float64 throughout.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from jnnp.atomic import atomic_write_bytes, atomic_write_npz, atomic_write_text
from jnnp.config.load import load_model
from jnnp.errors import ConfigError

__all__ = ["DiffMDConfig", "add_parser", "load_diffmd_config", "run_diffmd"]

GROUPS = ("networks", "descriptor", "scaling", "energy")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RDFBinConfig(_Strict):
    """The observable: the mean smoothed g_AB(r) of the bin holding ``bin_r`` (bins of [0, r_max])."""

    pair: tuple[int, int] = (8, 8)
    bin_r: PositiveFloat = Field(..., description="distance [Å] whose bin is the observable (e.g. the first peak)")
    r_max: PositiveFloat | None = Field(None, description="default: half the smallest cell width")
    n_bins: PositiveInt = 60
    sigma: PositiveFloat = Field(0.05, description="Gaussian broadening [Å]")


class ObservablesConfig(_Strict):
    energy: bool = Field(True, description="mean potential energy [eV]")
    rdf: RDFBinConfig | None = None
    density: bool = Field(False, description="mean density [g/cm³] (npt_nose_hoover only)")


class DirectConfig(_Strict):
    """Backprop through ``samples × sample_every`` steps from the equilibrated state."""

    samples: PositiveInt = 40
    sample_every: PositiveInt = 5
    samples_per_chunk: PositiveInt | None = Field(None, description="checkpoint chunk (must divide samples); "
                                                  "default ≈ √samples")
    checkpoint: bool = True


class ReweightConfig(_Strict):
    """Fluctuation-formula estimate from ``samples`` frames, one every ``sample_every`` steps."""

    samples: PositiveInt = 2000
    sample_every: PositiveInt = 10
    segment_samples: PositiveInt = Field(500, description="frames per jitted segment (must divide samples)")
    n_blocks: int = Field(10, ge=2, description="blocks for the standard errors (longer than the correlation time)")

    @model_validator(mode="after")
    def _divides(self):
        if self.samples % self.segment_samples:
            raise ValueError(f"segment_samples ({self.segment_samples}) must divide samples ({self.samples})")
        if self.samples < 2 * self.n_blocks:
            raise ValueError(f"samples ({self.samples}) must be at least 2 × n_blocks ({self.n_blocks})")
        return self


class DiffMDConfig(_Strict):
    """``jnnp diffmd`` study (units: fs, K, bar, Å; η in Å⁻²)."""

    name: str = "diffmd"
    run_dir: str = "runs/diffmd"
    model: str = Field(..., description="jnnp model directory or n2p2 directory (input.nn)")
    model_length_unit: str | None = None
    model_energy_unit: str | None = None
    structure: str
    structure_index: int = 0
    length_unit: str | None = None
    energy_unit: str | None = None
    trainable_descriptor: list[Literal["eta", "rs", "rc", "zeta"]] = Field(
        default_factory=list, description="symmetry-function fields to differentiate as well")
    ensemble: Literal["nve", "nvt_nose_hoover", "nvt_langevin", "npt_nose_hoover"] = "nvt_langevin"
    timestep_fs: PositiveFloat = 0.5
    temperature_k: PositiveFloat = 300.0
    friction_per_fs: PositiveFloat = 0.01
    tau_fs: PositiveFloat | None = None
    pressure_bar: float = 1.0
    barostat_tau_fs: PositiveFloat | None = None
    equilibration_steps: NonNegativeInt = 1000
    skin: float = Field(1.0, ge=0.0, description="neighbour skin [Å]")
    neighbors: Literal["auto", "host", "jax-md"] = "auto"
    seed: int = 0
    observables: ObservablesConfig = ObservablesConfig()
    direct: DirectConfig | None = DirectConfig()
    reweight: ReweightConfig | None = ReweightConfig()

    @model_validator(mode="after")
    def _consistent(self):
        obs = self.observables
        if not (obs.energy or obs.rdf or obs.density):
            raise ValueError("observables: choose at least one of energy, rdf, density")
        if obs.density and self.ensemble != "npt_nose_hoover":
            raise ValueError("observables.density needs ensemble npt_nose_hoover (the volume is fixed otherwise)")
        if self.direct is None and self.reweight is None:
            raise ValueError("enable at least one method: direct or reweight")
        if self.reweight is not None and self.ensemble not in ("nvt_langevin", "nvt_nose_hoover"):
            raise ValueError("reweight assumes canonical (NVT) sampling: ensemble nvt_langevin or nvt_nose_hoover "
                             "(set reweight: null for nve/npt)")
        if self.direct and self.direct.samples_per_chunk and self.direct.samples % self.direct.samples_per_chunk:
            raise ValueError("direct.samples_per_chunk must divide direct.samples")
        return self


def load_diffmd_config(path, overrides=()) -> DiffMDConfig:
    """Read a study YAML; errors name the file and the key path (`ConfigError`)."""
    return load_model(DiffMDConfig, path, overrides)


# ----------------------------------------------------------------------------------------------
# the study


def _load_potential(cfg: DiffMDConfig):
    p = Path(cfg.model)
    if (p / "input.nn").exists():
        from jnnp.io import read_n2p2

        pot = read_n2p2(p, length_unit=cfg.model_length_unit, energy_unit=cfg.model_energy_unit)
    else:
        from jnnp.train.checkpoint import load_potential

        pot = load_potential(p)
    pot = pot.astype(jnp.float64)
    if cfg.trainable_descriptor:
        from jnnp.descriptors.params import init_descriptor_params

        fields = tuple(sorted(set(pot.spec.descriptor.trainable) | set(cfg.trainable_descriptor)))
        desc = pot.spec.descriptor.with_trainable(fields)
        params = dict(pot.params, descriptor=init_descriptor_params(desc, np.float64))
        pot = pot.replace(spec=dataclasses.replace(pot.spec, descriptor=desc), params=params)
    return pot


def _advance(traj, params, state, gstate, graph_fns, cell_of, what: str, tries: int = 4):
    """One trajectory segment; when the graph went stale or overflowed, rebuild it at the
    segment's start and run the segment again (the invalid attempt is discarded)."""
    for _ in range(tries):
        out = traj(params, state, gstate)
        if not bool(out.invalid):
            return out
        gstate = graph_fns.reallocate(state.position, gstate, cell=cell_of(state))
    raise RuntimeError(f"{what}: the neighbour graph went stale within one segment {tries} times in a row, even "
                       "when rebuilt at its start; increase 'skin' or shorten the segments")


def _paths(tree) -> list[str]:
    return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _group_norms(grad) -> dict:
    return {g: float(np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree.leaves(grad[g]))))
            for g in GROUPS if g in grad and jax.tree.leaves(grad[g])}


def _descriptor_part(grad, spec) -> dict:
    """{element symbol: {field: [d/dfield per function]}} for the trainable descriptor fields."""
    from ase.data import chemical_symbols

    out = {}
    for z, fields in zip(spec.descriptor.elements, grad.get("descriptor", {}).get("elements", ())):
        if fields:
            out[chemical_symbols[z]] = {f: np.asarray(v).tolist() for f, v in fields.items()}
    return out


def run_diffmd(cfg: DiffMDConfig, *, progress: bool = True) -> dict:
    """Run the study (see the module docstring); returns the summary written to gradients.json."""
    from jnnp.data import read
    from jnnp.descriptors.plan import make_plan
    from jnnp.md.gradients import (
        density_observable,
        make_diff_md,
        make_trajectory_fn,
        potential_energy_observable,
        rdf_observable,
    )
    from jnnp.md.host_graph import make_host_graph_fns
    from jnnp.md.integrate import Ensemble, masses_of, state_cell
    from jnnp.md.reweight import blocked, fluctuation_gradient
    from jnnp.md.simulate import make_graph_fns_for
    from jnnp.model.potential import make_energy_fn

    if not jax.config.jax_enable_x64:
        raise RuntimeError("jnnp diffmd runs in float64: jax.config.update('jax_enable_x64', True)")
    log = print if progress else (lambda *a, **k: None)
    run_dir = Path(cfg.run_dir)
    pot = _load_potential(cfg)
    spec, params = pot.spec, pot.params
    s = read(cfg.structure, length_unit=cfg.length_unit, energy_unit=cfg.energy_unit)[cfg.structure_index]
    periodic = bool(s.periodic and np.all(s.pbc))
    if (cfg.observables.rdf or cfg.observables.density) and not periodic:
        raise ConfigError(f"{cfg.structure}: observables rdf/density need a fully periodic cell")
    cell = np.asarray(s.cell, dtype=np.float64) if s.periodic else np.zeros((3, 3))
    ens = Ensemble(cfg.ensemble, cfg.timestep_fs, cfg.temperature_k, tau_fs=cfg.tau_fs,
                   friction_per_fs=cfg.friction_per_fs, pressure_bar=cfg.pressure_bar,
                   barostat_tau_fs=cfg.barostat_tau_fs)
    md = make_diff_md(spec, ens)
    plan = make_plan(spec.descriptor)
    graph = make_graph_fns_for(plan, s, cfg.skin, cfg.neighbors)
    cell_of = (lambda st: state_cell(st, jnp.asarray(cell))) if ens.changes_cell else (lambda st: None)
    R0 = jnp.asarray(s.positions, jnp.float64)
    masses = masses_of(s.numbers)
    gstate = graph.allocate(R0)
    state = md.init(params, jax.random.PRNGKey(cfg.seed), R0, masses, gstate.graph, cell)

    observables, scalars, units = {}, {}, {}
    if cfg.observables.energy:
        observables["energy"] = potential_energy_observable(md)
        scalars["energy"], units["energy"] = (lambda x: x["energy"]), "eV"
    rdf_info = None
    if cfg.observables.rdf:
        from jnnp.md.analysis import perpendicular_widths

        rc = cfg.observables.rdf
        r_max = rc.r_max or 0.5 * float(perpendicular_widths(cell).min())
        edges = np.linspace(0.0, r_max, rc.n_bins + 1)
        b = int(np.searchsorted(edges, rc.bin_r, side="right") - 1)
        if not 0 <= b < rc.n_bins:
            raise ConfigError(f"observables.rdf.bin_r = {rc.bin_r} Å lies outside [0, r_max = {r_max:.4f}) Å")
        observables["rdf"] = rdf_observable(s.numbers, rc.pair, cell, r_max, rc.n_bins, rc.sigma)
        name = f"g_{rc.pair[0]}_{rc.pair[1]}_bin"
        scalars[name], units[name] = (lambda x, b=b: x["rdf"][..., b]), "1"
        rdf_info = {"pair": list(rc.pair), "r_max": r_max, "n_bins": rc.n_bins, "sigma": rc.sigma,
                    "bin": [float(edges[b]), float(edges[b + 1])], "centres": 0.5 * (edges[1:] + edges[:-1])}
    if cfg.observables.density:
        observables["density"] = density_observable(masses)
        scalars["density"], units["density"] = (lambda x: x["density"]), "g/cm³"
    names = list(scalars)

    # equilibration (not differentiated)
    if cfg.equilibration_steps:
        block = min(cfg.equilibration_steps, 1000)
        eq = make_trajectory_fn(md, cell, 1, sample_every=block, graph_update=graph.fns.update,
                                observables=lambda p, R, g, c: jnp.zeros(()))
        t0 = time.perf_counter()
        for _ in range(math.ceil(cfg.equilibration_steps / block)):
            out = _advance(eq, params, state, gstate, graph.fns, cell_of, "equilibration")
            state, gstate = out.state, out.graph_state
        log(f"equilibrated {cfg.equilibration_steps} steps in {time.perf_counter() - t0:.1f} s")

    summary = {"name": cfg.name, "n_atoms": s.n_atoms, "ensemble": cfg.ensemble, "temperature_k": cfg.temperature_k,
               "timestep_fs": cfg.timestep_fs, "neighbors": graph.mode,
               "observables": {n: {"unit": units[n]} for n in names}, "parameter_groups": list(GROUPS)}
    if rdf_info:
        summary["rdf"] = {k: v for k, v in rdf_info.items() if k != "centres"}
    arrays, grads, curves = {}, {}, {}

    if cfg.direct is not None:
        d = cfg.direct
        traj = make_trajectory_fn(md, cell, d.samples, sample_every=d.sample_every, observables=observables,
                                  graph_update=graph.fns.update, checkpoint=d.checkpoint,
                                  samples_per_chunk=d.samples_per_chunk)
        # a graph built at the window's start: the whole skin is available for the window
        start, gstart = state, graph.fns.reallocate(state.position, gstate, cell=cell_of(state))

        def loss(p, w):
            out = traj(p, start, gstart)
            m = jnp.stack([jnp.mean(scalars[n](out.samples)) for n in names])
            rdf = jnp.mean(out.samples["rdf"], axis=0) if "rdf" in out.samples else jnp.zeros(0)
            return jnp.vdot(w, m), (m, out.invalid, rdf)

        f = jax.jit(jax.value_and_grad(loss, has_aux=True))
        t0 = time.perf_counter()
        direct = {}
        for k, n in enumerate(names):
            (_, (m, invalid, rdf)), g = f(params, jnp.eye(len(names))[k])
            if bool(invalid):
                raise RuntimeError("direct window: the neighbour graph went stale inside the differentiated "
                                   "window; increase 'skin' or shorten the window")
            g = jax.tree.map(np.asarray, g)
            grads[("direct", n)] = g
            direct[n] = {"value": float(m[k]), "gradient_norm_by_group": _group_norms(g),
                         "descriptor_gradient": _descriptor_part(g, spec)}
        if rdf_info:
            curves["direct window"] = np.asarray(rdf)
        summary["direct"] = {"steps": d.samples * d.sample_every, "samples": d.samples,
                             "checkpoint": d.checkpoint, "wall_s": time.perf_counter() - t0, "observables": direct}
        log(f"direct: {summary['direct']['steps']} steps, {summary['direct']['wall_s']:.1f} s")

    if cfg.reweight is not None:
        r = cfg.reweight
        sampler = make_trajectory_fn(md, cell, r.segment_samples, sample_every=r.sample_every,
                                     observables={**observables, "R": lambda p, R, g, c: R},
                                     graph_update=graph.fns.update, checkpoint=False)
        t0 = time.perf_counter()
        segs = []
        for _ in range(r.samples // r.segment_samples):
            out = _advance(sampler, params, state, gstate, graph.fns, cell_of, "reweight sampling")
            state, gstate = out.state, out.graph_state
            segs.append(jax.tree.map(np.asarray, out.samples))
        frames = jax.tree.map(lambda *a: np.concatenate(a), *segs)
        o = np.stack([np.asarray(scalars[n](frames)) for n in names], axis=1)  # (F, K)
        # ∂U/∂θ per frame, with exact host graphs (skin, rebuilt on the host when stale)
        efn = make_energy_fn(spec)
        grad_u = jax.jit(jax.grad(lambda p, R, g: efn(p, R, jnp.asarray(cell), g)))
        host = make_host_graph_fns(plan, s.numbers, cell, s.pbc if s.periodic else False, skin=max(cfg.skin, 0.5))
        hstate, du = None, []
        for R in frames["R"]:
            if hstate is None or np.max(np.sum((R - np.asarray(hstate.reference)) ** 2, axis=-1)) > (
                    0.5 * max(cfg.skin, 0.5)) ** 2:
                hstate = host.allocate(R)
            du.append(jax.tree.map(np.asarray, grad_u(params, jnp.asarray(R), hstate.graph)))
        du = jax.tree.map(lambda *a: np.stack(a), *du)
        explicit = np.array([n == "energy" for n in names], dtype=np.float64)

        @jax.jit
        def estimate(o, du):
            do_mean = jax.tree.map(lambda d: explicit.reshape((-1,) + (1,) * (d.ndim - 1)) * d.mean(0), du)
            return fluctuation_gradient(o, du, ens.kT, do_mean=do_mean)

        est, err = blocked(estimate, o, du, n_blocks=r.n_blocks)
        mean, mean_err = blocked(lambda x: x.mean(0), o, n_blocks=r.n_blocks)
        rew = {}
        for k, n in enumerate(names):
            g, e = (jax.tree.map(lambda a, k=k: a[k], t) for t in (est, err))
            grads[("reweight", n)] = g
            grads[("reweight_error", n)] = e
            rew[n] = {"value": float(mean[k]), "value_error": float(mean_err[k]),
                      "gradient_norm_by_group": _group_norms(g), "descriptor_gradient": _descriptor_part(g, spec),
                      "descriptor_gradient_error": _descriptor_part(e, spec)}
        if rdf_info:
            curves["reweight run"] = frames["rdf"].mean(0)
        summary["reweight"] = {"frames": int(o.shape[0]), "steps": r.samples * r.sample_every, "n_blocks": r.n_blocks,
                               "wall_s": time.perf_counter() - t0, "observables": rew}
        log(f"reweight: {o.shape[0]} frames, {summary['reweight']['wall_s']:.1f} s")

    if cfg.direct is not None and cfg.reweight is not None:
        comp = {}
        for n in names:
            a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads[("direct", n)])])
            b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads[("reweight", n)])])
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            comp[n] = {"cosine": float(a @ b / (na * nb)) if na and nb else None,
                       "norm_ratio_direct_over_reweight": float(na / nb) if nb else None}
        summary["comparison"] = comp

    for (method, n), g in grads.items():
        for path, leaf in zip(_paths(g), jax.tree.leaves(g)):
            arrays[f"{method}/{n}/{path}"] = np.asarray(leaf)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_npz(run_dir / "gradients.npz", **arrays)
    atomic_write_text(run_dir / "gradients.json", json.dumps(summary, indent=1, default=float))
    _plot(run_dir / "diffmd.png", summary, names, rdf_info, curves)
    return summary


def _plot(path, summary, names, rdf_info, curves) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    ax_g, ax_n = fig.subplots(1, 2)
    if rdf_info:
        for label, g in curves.items():
            ax_g.plot(rdf_info["centres"], g, label=label)
        ax_g.axvspan(*rdf_info["bin"], color="0.85", label="observable bin")
        ax_g.set_xlabel("r [Å]")
        ax_g.set_ylabel(f"g(r), pair {rdf_info['pair']}, σ = {rdf_info['sigma']} Å")
        ax_g.legend(fontsize=8)
    else:
        ax_g.set_axis_off()
    bars = [(m, n) for m in ("direct", "reweight") if m in summary for n in names]
    width = 0.8 / max(1, len(bars))
    for k, (m, n) in enumerate(bars):
        norms = summary[m]["observables"][n]["gradient_norm_by_group"]
        x = np.arange(len(GROUPS)) + k * width
        ax_n.bar(x, [norms.get(g, 0.0) for g in GROUPS], width, label=f"{m}: d⟨{n}⟩/dθ")
    ax_n.set_xticks(np.arange(len(GROUPS)) + 0.4 - width / 2, GROUPS)
    ax_n.set_yscale("log")
    ax_n.set_ylabel("‖d⟨O⟩/dθ‖ per parameter group")
    ax_n.legend(fontsize=8)
    fig.suptitle(f"{summary['name']}: {summary['ensemble']}, {summary['n_atoms']} atoms", fontsize=10)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------
# command line


def _cmd_diffmd(args) -> int:
    jax.config.update("jax_enable_x64", True)
    cfg = load_diffmd_config(args.config, args.set)
    if args.validate:
        print(f"{args.config}: ok")
        return 0
    summary = run_diffmd(cfg, progress=not args.quiet)
    brief = {m: {n: {k: v for k, v in o.items() if k in ("value", "value_error", "gradient_norm_by_group")}
                 for n, o in summary[m]["observables"].items()} for m in ("direct", "reweight") if m in summary}
    print(json.dumps({**brief, **({"comparison": summary["comparison"]} if "comparison" in summary else {})},
                     indent=1, default=float))
    print(f"run directory: {cfg.run_dir} (gradients.json, gradients.npz, diffmd.png)")
    return 0


def add_parser(sub) -> None:
    """Add ``diffmd`` to an argparse sub-parser set."""
    p = sub.add_parser("diffmd", help="gradients of MD observables w.r.t. potential parameters (backprop, reweighting)")
    p.add_argument("config", help="study YAML (see configs/diffmd_water64.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--validate", action="store_true", help="only validate the config")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_diffmd)
