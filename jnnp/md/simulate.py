"""High-level MD: potential + structure + `MDConfig` → trajectory, thermo log, restarts, analysis.

    summary = run_md(potential, structure, cfg, "runs/md")      # or: jnnp md CONFIG.yaml

Writes into the run directory: ``thermo.csv`` (fs, K, eV), ``trajectory.extxyz`` (or ``.traj``),
``restart.npz`` (written atomically after every chunk: the full integrator state and neighbour
graph, so ``resume=True`` continues exactly), ``thermo.png``, ``rdf_*.png``/``.csv`` and
``summary.json`` (ns/day, atom-steps/s, energy drift in eV/atom/ps).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.plan import make_plan
from jnnp.geometry.cell import min_image_valid
from jnnp.md import analysis
from jnnp.md.host_graph import make_host_graph_fns
from jnnp.md.integrate import Ensemble, make_integrator, make_md_energy_fn, masses_of
from jnnp.md.output import ProgressMeter, ThermoLog, TrajectoryWriter, atomic_write_npz
from jnnp.md.run import init_state, make_chunk_fn, run_chunks
from jnnp.units import KB, TIME_UNIT_FS

__all__ = ["run_md", "make_graph_fns_for"]


def make_graph_fns_for(plan, structure, skin: float, mode: str = "auto"):
    """Neighbour lifecycle: jax-md cell lists inside jit for large boxes where the minimum image
    is valid, else host-built all-image graphs (any cell, incl. small training cells)."""
    use_jaxmd = mode == "jax-md" or (
        mode == "auto" and structure.periodic and bool(structure.pbc.all()) and structure.n_atoms >= 500
        and min_image_valid(structure.cell, plan.spec.cutoff + skin))
    if use_jaxmd:
        from jnnp.geometry.neighbors import make_graph_fns

        fns = make_graph_fns(plan, structure.cell, skin=skin)
        return fns, (lambda R: fns.allocate(R, structure.numbers)), "jax-md"
    fns = make_host_graph_fns(plan, structure.numbers, structure.cell, structure.pbc, skin=skin)
    return fns, fns.allocate, "host"


def _save_restart(path, step, state, gstate, key):
    leaves = jax.tree.leaves((state, gstate))
    atomic_write_npz(path, step=np.asarray(step), key=np.asarray(jax.random.key_data(key)),
                     **{f"leaf{i:04d}": np.asarray(x) for i, x in enumerate(leaves)})


def _load_restart(path, template):
    data = np.load(path)
    treedef = jax.tree.structure(template)
    n = treedef.num_leaves
    leaves = [jnp.asarray(data[f"leaf{i:04d}"]) for i in range(n)]
    return int(data["step"]), jax.tree.unflatten(treedef, leaves), jax.random.wrap_key_data(data["key"])


def run_md(potential, structure, cfg, run_dir, *, resume: bool = False, progress: bool = True) -> dict:
    """Run MD as configured by ``cfg`` (`jnnp.config.MDConfig`); returns the summary dict."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dtype = jnp.float64 if cfg.precision == "float64" else jnp.float32
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 MD needs jax.config.update('jax_enable_x64', True)")
    pot = potential.astype(dtype)
    ens = Ensemble(cfg.ensemble, cfg.timestep_fs, cfg.temperature_k, cfg.tau_fs, cfg.friction_per_fs)
    energy_fn = make_md_energy_fn(pot)
    init_fn, apply_fn = make_integrator(energy_fn, ens)
    plan = make_plan(pot.spec.descriptor)
    graph_fns, allocate, neighbor_mode = make_graph_fns_for(plan, structure, cfg.skin, cfg.neighbors)
    cell = jnp.asarray(structure.cell, dtype)
    R0 = jnp.asarray(structure.positions, dtype)
    gstate = allocate(R0)
    key = jax.random.PRNGKey(cfg.seed)
    key, sub = jax.random.split(key)
    state = init_state(init_fn, R0, masses_of(structure.numbers).astype(dtype), ens, sub, gstate.graph, cell)
    step0 = 0
    restart = run_dir / "restart.npz"
    if resume and restart.exists():
        step0, (state, gstate), key = _load_restart(restart, (state, gstate))
    chunk_fn = make_chunk_fn(energy_fn, apply_fn, graph_fns.update, cell, cfg.thermo_every,
                             cfg.samples_per_chunk)
    traj_path = run_dir / f"trajectory.{cfg.trajectory_format}"
    thermo = ThermoLog(run_dir / "thermo.csv", resume_from_step=step0 if resume else None)
    traj = TrajectoryWriter(traj_path, structure.numbers, structure.cell, structure.pbc,
                            fmt=cfg.trajectory_format, resume_from_step=step0 if resume else None)
    meter = ProgressMeter(cfg.steps, cfg.timestep_fs, structure.n_atoms, start_step=step0) if progress else None
    n_dof = 3 * structure.n_atoms - 3
    masses = np.asarray(masses_of(structure.numbers))[:, None]
    sampled = []

    def on_chunk(step, st, gst, out):
        e_pot, e_kin, temp, pos, mom = out
        steps = step - cfg.thermo_every * (len(e_pot) - 1 - np.arange(len(e_pot)))
        thermo.append({"step": steps, "time_fs": steps * cfg.timestep_fs, "temperature_K": 2 * e_kin / (n_dof * KB),
                       "e_pot_eV": e_pot, "e_kin_eV": e_kin})
        for k, s in enumerate(steps):
            if s % cfg.trajectory_every == 0:
                traj.append(pos[k], step=int(s), time_fs=float(s * cfg.timestep_fs), energy=float(e_pot[k]),
                            velocities=mom[k] / masses / TIME_UNIT_FS)
                sampled.append(np.asarray(pos[k]))
        traj.flush()
        _save_restart(restart, step, st, gst, key)
        if meter is not None:
            meter.update(step, float(2 * e_kin[-1] / (n_dof * KB)), float(e_pot[-1] + e_kin[-1]))

    n_samples = max(0, (cfg.steps - step0) // cfg.thermo_every)
    t0 = time.perf_counter()
    result = run_chunks(chunk_fn, state, gstate, graph_fns, n_samples, cfg.thermo_every, cfg.timestep_fs,
                        first_step=step0, on_chunk=on_chunk)
    _save_restart(restart, step0 + n_samples * cfg.thermo_every, result.state, result.graph_state, key)
    wall = time.perf_counter() - t0
    thermo.close(), traj.close()
    if meter is not None:
        meter.close()
    return _summarise(run_dir, cfg, structure, result, wall, neighbor_mode, sampled)


def _summarise(run_dir, cfg, structure, result, wall, neighbor_mode, sampled) -> dict:
    n_steps = len(result.e_pot) * cfg.thermo_every
    e_tot = result.e_pot + result.e_kin
    summary = {"steps": int(n_steps), "timestep_fs": cfg.timestep_fs, "ensemble": cfg.ensemble,
               "n_atoms": structure.n_atoms, "neighbors": neighbor_mode, "rebuilds": result.rebuilds,
               "wall_s_including_compile": wall, "wall_s_chunks": result.wall_s,
               "ns_per_day": (n_steps * cfg.timestep_fs * 1e-6) / (result.wall_s / 86400) if result.wall_s else None,
               "atom_steps_per_s": n_steps * structure.n_atoms / result.wall_s if result.wall_s else None,
               "temperature_mean_K": float(np.mean(result.temperature)) if len(e_tot) else None}
    if len(e_tot) > 2:
        summary["energy_drift"] = analysis.energy_drift(result.time_fs, e_tot, structure.n_atoms)
    analysis.plot_thermo(run_dir / "thermo.csv", run_dir / "thermo.png", title=f"{cfg.ensemble} MD")
    for pair in cfg.rdf_pairs:
        if len(sampled) and structure.periodic:
            r, g = analysis.rdf(np.stack(sampled), structure.cell, structure.numbers, pair=tuple(pair))
            name = f"rdf_{pair[0]}_{pair[1]}"
            np.savetxt(run_dir / f"{name}.csv", np.c_[r, g], delimiter=",", header="r_A,g", comments="")
            analysis.plot_rdf(r, g, run_dir / f"{name}.png", label=f"{pair[0]}-{pair[1]}")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary
