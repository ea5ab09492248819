"""High-level MD: potential + structure + `MDConfig` → trajectory, thermo log, restarts, analysis.

    summary = run_md(potential, structure, cfg, "runs/md")      # or: jnnp md CONFIG.yaml

Writes into the run directory: ``thermo.csv`` (fs, K, eV, GPa, Å³; see below), ``trajectory.extxyz``
(or ``.traj``; NPT frames carry their cell), ``restart.npz`` (written atomically after every
chunk: the full integrator state — for NPT including the box — and the neighbour graph with its
capacities, so ``resume=True`` continues exactly, `jnnp.md.restart`), ``thermo.png``,
``rdf_*.png``/``.csv`` and ``summary.json`` (ns/day, atom-steps/s, compile time, energy drift in
eV/atom/ps).

thermo.csv columns: step, time_fs, temperature_K, e_pot_eV, e_kin_eV, e_tot_eV, pressure_GPa and
volume_A3 (periodic cells; empty otherwise), then ``e_conserved_eV`` for the Nosé–Hoover
ensembles (the extended-system energy jax-md conserves), then one column per observable.

Observables (``run_md(..., observables={name: fn})``): ``fn(positions, cell, graph) -> scalar``
with positions (N, 3) [Å] (unwrapped Cartesian), cell (3, 3) [Å] (rows; the current NPT box),
and the `jnnp.geometry.Graph` the forces use (complete for these positions within the model's
cutoffs; padded entries masked). It is traced into the jitted chunk (jax-transformable, no host
callbacks needed) and evaluated at every thermo sample; ``name`` is the CSV header verbatim, so
it carries the unit (``com_x_A``, ``committee_std_eV``, ``extrapolations_count``): a letter, then
letters, digits, ``_``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.plan import make_plan
from jnnp.geometry.cell import min_image_valid
from jnnp.md import analysis
from jnnp.md.host_graph import make_host_graph_fns
from jnnp.md.integrate import (
    Ensemble,
    conserved_energy,
    make_integrator,
    make_md_energy_fn,
    masses_of,
    state_cell,
)
from jnnp.md.parallel import md_mesh, on_parts, split_energy_fn
from jnnp.md.output import ProgressMeter, ThermoLog, TrajectoryWriter, check_column_names
from jnnp.md.restart import load_restart, save_restart
from jnnp.md.run import init_state, make_chunk_fn, run_chunks
from jnnp.units import EV_PER_A3_GPA, KB, TIME_UNIT_FS

__all__ = ["run_md", "make_graph_fns_for", "MDGraph"]


class MDGraph(NamedTuple):
    """Neighbour machinery of one MD run: ``fns`` (`GraphFns`), ``allocate(R, cell=None)``,
    ``restore(R, description)`` and ``mode`` ("jax-md" or "host")."""

    fns: object
    allocate: Callable
    restore: Callable
    mode: str


def make_graph_fns_for(plan, structure, skin: float, mode: str = "auto",
                       capacity_multiplier: float = 1.25, parts: int = 1) -> MDGraph:
    """Neighbour lifecycle: jax-md cell lists inside jit for large boxes where the minimum image
    is valid, else host-built all-image graphs (any cell, incl. small training cells).
    ``parts`` > 1: the jit graph split over that many devices (`jnnp.md.parallel`)."""
    use_jaxmd = mode == "jax-md" or (
        mode == "auto" and structure.periodic and bool(structure.pbc.all()) and structure.n_atoms >= 500
        and min_image_valid(structure.cell, plan.spec.cutoff + skin))
    if parts > 1 and not use_jaxmd:
        raise ValueError(f"devices: {parts} needs the jax-md neighbour graph (a fully periodic box of ≥ 500 atoms "
                         f"whose widths are ≥ 2·(cutoff + skin); neighbors: jax-md), not the host-built one")
    if use_jaxmd:
        from jnnp.geometry.neighbors import make_graph_fns

        fns = make_graph_fns(plan, structure.cell, skin=skin, capacity_multiplier=capacity_multiplier,
                             parts=parts)
        return MDGraph(fns, lambda R, cell=None: fns.allocate(R, structure.numbers, cell=cell),
                       lambda R, meta: fns.restore(R, structure.numbers, meta), "jax-md")
    fns = make_host_graph_fns(plan, structure.numbers, structure.cell, structure.pbc, skin=skin)
    return MDGraph(fns, lambda R, cell=None: fns.allocate(R, R.dtype, cell=cell),
                   lambda R, meta: fns.restore(R, meta, R.dtype), "host")


def _fully_periodic(structure) -> bool:
    return bool(structure.periodic and np.all(structure.pbc) and abs(np.linalg.det(structure.cell)) > 1e-10)


def run_md(potential, structure, cfg, run_dir, *, resume: bool = False, progress: bool = True,
           observables: Mapping[str, Callable] | None = None) -> dict:
    """Run MD as configured by ``cfg`` (`jnnp.config.MDConfig`); returns the summary dict.

    Args:
        potential: `jnnp.Potential` (cast to ``cfg.precision``).
        structure: start `jnnp.Structure` (positions [Å], cell rows [Å]).
        cfg: `MDConfig` (fs, K, bar).
        run_dir: output folder (module docstring).
        resume: continue from ``run_dir/restart.npz`` up to ``cfg.steps`` (same config).
        progress: live progress line with ns/day.
        observables: ``{column_name: fn(positions, cell, graph) -> scalar}`` logged as extra
            thermo.csv columns (module docstring). With ``cfg.devices`` > 1 each device evaluates
            them on its part of the graph and the values are added up: they must be sums over
            centre atoms (extrapolation counts are; a committee's spread is not).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    observables = dict(observables or {})
    check_column_names(["e_conserved_eV", *observables])
    dtype = jnp.float64 if cfg.precision == "float64" else jnp.float32
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 MD needs jax.config.update('jax_enable_x64', True)")
    pot = potential.astype(dtype)
    ens = Ensemble(cfg.ensemble, cfg.timestep_fs, cfg.temperature_k, cfg.tau_fs, cfg.friction_per_fs,
                   pressure_bar=cfg.pressure_bar, barostat_tau_fs=cfg.barostat_tau_fs)
    periodic = _fully_periodic(structure)
    if ens.changes_cell and not periodic:
        raise ValueError(f"ensemble {ens.kind} needs a structure periodic in all directions with a 3D cell")
    mesh = md_mesh(cfg.devices) if cfg.devices > 1 else None
    energy_fn = make_md_energy_fn(pot)
    if mesh is not None:
        energy_fn = split_energy_fn(energy_fn)
    init_fn, apply_fn = make_integrator(energy_fn, ens)
    plan = make_plan(pot.spec.descriptor)
    graph = make_graph_fns_for(plan, structure, cfg.skin, cfg.neighbors, cfg.neighbor_capacity_multiplier,
                               parts=cfg.devices)
    cell = jnp.asarray(structure.cell, dtype)
    R0 = jnp.asarray(structure.positions, dtype)
    gstate = graph.allocate(R0)
    reallocations = 0
    if bool(np.any(gstate.overflow)):  # buffers too small already: the initial forces need a complete graph
        gstate, reallocations = graph.fns.reallocate(R0, gstate), 1
    key = jax.random.PRNGKey(cfg.seed)
    key, sub = jax.random.split(key)
    masses = masses_of(structure.numbers).astype(dtype)
    init = functools.partial(init_state, init_fn, ensemble=ens)
    if mesh is not None:
        init = on_parts(init, mesh)
    state = init(R0, masses, key=sub, graph=gstate.graph, cell=cell)
    step0 = 0
    restart = run_dir / "restart.npz"
    if resume and restart.exists():
        step0, state, gstate, key = load_restart(restart, state, graph.restore)
    cell_of = functools.partial(state_cell, cell=None) if ens.changes_cell else None
    conserved = (functools.partial(conserved_energy, ens)
                 if ens.kind in ("nvt_nose_hoover", "npt_nose_hoover") else None)
    chunk_fn = make_chunk_fn(energy_fn, apply_fn, graph.fns.update, cell_of or cell, cfg.thermo_every,
                             cfg.samples_per_chunk, pressure=periodic, conserved=conserved,
                             observables=observables, dt=ens.dt, mesh=mesh)
    extra_columns = (["e_conserved_eV"] if conserved else []) + list(observables)
    traj_path = run_dir / f"trajectory.{cfg.trajectory_format}"
    thermo = ThermoLog(run_dir / "thermo.csv", resume_from_step=step0 if resume else None,
                       extra_columns=extra_columns)
    traj = TrajectoryWriter(traj_path, structure.numbers, structure.cell, structure.pbc,
                            fmt=cfg.trajectory_format, resume_from_step=step0 if resume else None)
    meter = ProgressMeter(cfg.steps, cfg.timestep_fs, structure.n_atoms, start_step=step0) if progress else None
    n_dof = 3 * structure.n_atoms - 3
    masses = np.asarray(masses_of(structure.numbers))[:, None]
    sampled, sampled_cells = [], []

    def on_chunk(step, st, gst, out):
        e_pot, e_kin = out["e_pot"], out["e_kin"]
        steps = step - cfg.thermo_every * (len(e_pot) - 1 - np.arange(len(e_pot)))
        rows = {"step": steps, "time_fs": steps * cfg.timestep_fs, "temperature_K": 2 * e_kin / (n_dof * KB),
                "e_pot_eV": e_pot, "e_kin_eV": e_kin}
        if periodic:
            rows["pressure_GPa"] = out["pressure"] * EV_PER_A3_GPA
            rows["volume_A3"] = out["volume"]
        if conserved:
            rows["e_conserved_eV"] = out["conserved"]
        rows.update({name: out[name] for name in observables})
        thermo.append(rows)
        cells = out.get("cell")
        for k, s in enumerate(steps):
            if s % cfg.trajectory_every == 0:
                c = structure.cell if cells is None else cells[k]
                traj.append(out["positions"][k], step=int(s), time_fs=float(s * cfg.timestep_fs),
                            energy=float(e_pot[k]), velocities=out["momenta"][k] / masses / TIME_UNIT_FS, cell=c)
                sampled.append(np.asarray(out["positions"][k]))
                sampled_cells.append(np.asarray(c))
        traj.flush()
        save_restart(restart, step, st, gst, key, graph.fns.describe(gst))
        if meter is not None:
            meter.update(step, float(2 * e_kin[-1] / (n_dof * KB)), float(e_pot[-1] + e_kin[-1]))

    n_samples = max(0, (cfg.steps - step0) // cfg.thermo_every)
    t0 = time.perf_counter()
    try:
        result = run_chunks(chunk_fn, state, gstate, graph.fns, n_samples, cfg.thermo_every, cfg.timestep_fs,
                            first_step=step0, on_chunk=on_chunk, cell_of=cell_of)
    finally:
        thermo.close(), traj.close()
        if meter is not None:
            meter.close()
    save_restart(restart, step0 + n_samples * cfg.thermo_every, result.state, result.graph_state, key,
                 graph.fns.describe(result.graph_state))
    wall = time.perf_counter() - t0
    summary = _summarise(run_dir, cfg, structure, result, wall, graph.mode, sampled, sampled_cells,
                         reallocations if step0 == 0 else 0)
    return summary


def _summarise(run_dir, cfg, structure, result, wall, neighbor_mode, sampled, sampled_cells,
               initial_reallocations=0) -> dict:
    n_steps = len(result.e_pot) * cfg.thermo_every
    e_tot = result.e_pot + result.e_kin
    rate = result.wall_s if result.wall_s else None
    summary = {"steps": int(n_steps), "timestep_fs": cfg.timestep_fs, "ensemble": cfg.ensemble,
               "n_atoms": structure.n_atoms, "neighbors": neighbor_mode,
               "rebuilds": result.rebuilds + initial_reallocations,
               "graph_rebuilds": int(np.sum(result.extras.get("graph_rebuilds", 0))),
               "graph_redos": int(np.sum(result.extras.get("graph_redos", 0))),
               "wall_s_including_compile": wall, "wall_s_chunks": result.wall_s, "compile_s": result.compile_s,
               "ns_per_day": (n_steps * cfg.timestep_fs * 1e-6) / (rate / 86400) if rate else None,
               "atom_steps_per_s": n_steps * structure.n_atoms / rate if rate else None,
               "temperature_mean_K": float(np.mean(result.temperature)) if len(e_tot) else None}
    ex = result.extras
    if "pressure" in ex and len(ex["pressure"]):
        summary["pressure_mean_GPa"] = float(np.mean(ex["pressure"]) * EV_PER_A3_GPA)
        summary["volume_mean_A3"] = float(np.mean(ex["volume"]))
    if len(e_tot) > 2:
        summary["energy_drift"] = analysis.energy_drift(result.time_fs, e_tot, structure.n_atoms)
        if "conserved" in ex:
            summary["conserved_drift"] = analysis.energy_drift(result.time_fs, ex["conserved"], structure.n_atoms)
    if len(e_tot):
        analysis.plot_thermo(run_dir / "thermo.csv", run_dir / "thermo.png", title=f"{cfg.ensemble} MD")
    for pair in cfg.rdf_pairs:
        if len(sampled) and structure.periodic:
            r, g = analysis.rdf(np.stack(sampled), np.stack(sampled_cells), structure.numbers, pair=tuple(pair))
            name = f"rdf_{pair[0]}_{pair[1]}"
            np.savetxt(run_dir / f"{name}.csv", np.c_[r, g], delimiter=",", header="r_A,g", comments="")
            analysis.plot_rdf(r, g, run_dir / f"{name}.png", label=f"{pair[0]}-{pair[1]}")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary

