"""NVE MD speed of the 1080-atom RPBE-D3 water box with n2p2's reference HDNNP (0.5 fs).

Each configuration (float32/float64 × 1/2 cores, optionally split over 2 XLA CPU devices,
``dtype:cores:devices``, `jnnp.md.parallel`) runs in a fresh subprocess pinned to its cores
(``os.sched_setaffinity``) through `jnnp.md.run_md` — the program ``jnnp md`` runs: jit neighbour
graph (cell list, rebuilt inside the loop), energy, forces, velocity Verlet and thermo sampling
(pressure every ``--thermo-every`` steps) in jitted chunks. Reported per configuration:
compile time (apart), ns/day and atom-steps/s of the chunks (compilation excluded), the same
including host I/O, neighbour reallocations, energy drift [eV/atom/ps] and the largest
|E_tot − fit| [eV/atom], peak resident memory.

Optional: jax-md's own ``energy.behler_parrinello`` (dense neighbour list) NVE on the same box
(``--jaxmd``; its memory grows with the cutoff, failures are reported, not fatal), and a
scaling curve over replicated boxes (``--sizes 1,2,3``: 1080, 8640, 29160 atoms) to show linear
cost. Prints a table and writes benchmarks/results/md_water.json (machine, versions, date).
Needs ../shared/data (not a test).

    python benchmarks/md_water.py [--steps 1000] [--configs float64:1,float64:2,float64:2:2,float32:2:2]
                                  [--jaxmd] [--jaxmd-cutoff 6.35] [--sizes 1,2,3] [--size-config float32:2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "n2p2-examples" / "H2O_RPBE-D3"
TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0
SKIN_A = 0.5  # as configs/md_water_rpbe_d3.yaml


def _load_box(replicate: int = 1):
    import numpy as np

    import jnnp

    s = jnnp.read(DATA / "input.data.H2O_1080_liquid", length_unit="bohr", energy_unit="hartree")[0]
    if replicate == 1:
        return s
    n = replicate
    shifts = np.array([(i, j, k) for i in range(n) for j in range(n) for k in range(n)]) @ s.cell
    return jnnp.Structure(positions=(s.positions[None] + shifts[:, None]).reshape(-1, 3),
                          numbers=np.tile(s.numbers, n**3), cell=n * s.cell, pbc=True)


def worker_jnnp(dtype_name: str, steps: int, replicate: int, thermo_every: int, devices: int = 1) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jnnp
    from jnnp.config.schema import MDConfig
    from jnnp.md.simulate import run_md

    pot = jnnp.read_n2p2(DATA / "reference-fit-7241", input_nn="input.nn.predict",
                         length_unit="bohr", energy_unit="hartree")
    s = _load_box(replicate)
    samples = max(1, min(10, steps // thermo_every))
    cfg = MDConfig(ensemble="nve", timestep_fs=TIMESTEP_FS, steps=steps, temperature_k=TEMPERATURE_K,
                   thermo_every=thermo_every, trajectory_every=thermo_every * samples * 1000,
                   samples_per_chunk=samples, skin=SKIN_A, neighbors="jax-md", precision=dtype_name, seed=0,
                   devices=devices)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = run_md(pot, s, cfg, tmp, progress=False)
        total = time.perf_counter() - t
    n_steps = summary["steps"]
    wall_io = summary["wall_s_including_compile"] - summary["compile_s"]
    drift = summary.get("energy_drift", {})
    return {"atoms": s.n_atoms, "steps": n_steps, "compile_s": summary["compile_s"],
            "setup_and_total_s": total, "s_per_step": summary["wall_s_chunks"] / n_steps,
            "ns_per_day": summary["ns_per_day"], "atom_steps_per_s": summary["atom_steps_per_s"],
            "ns_per_day_incl_io": n_steps * TIMESTEP_FS * 1e-6 / (wall_io / 86400),
            "reallocations": summary["rebuilds"], "graph_rebuilds": summary["graph_rebuilds"],
            "graph_redos": summary["graph_redos"], "temperature_mean_K": summary["temperature_mean_K"],
            "drift_eV_per_atom_per_ps": drift.get("slope_eV_per_atom_per_ps"),
            "max_abs_dev_eV_per_atom": drift.get("max_abs_dev_eV_per_atom")}


def worker_jaxmd(cutoff: float, steps: int, replicate: int) -> dict:
    """jax-md's Behler–Parrinello (one shared MLP, its own symmetry functions, dense neighbour
    list, float32) on the same box: NVE steps in a ``lax.fori_loop`` with the list updated every
    step, as jax-md's examples do."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _jaxmd import behler_parrinello_nl
    from jax_md import quantity, simulate, space

    from jnnp.md.integrate import masses_of
    from jnnp.units import KB, fs_to_internal

    s = _load_box(replicate)
    box = jnp.asarray(np.diag(s.cell), jnp.float32)
    disp, shift = space.periodic(box)
    species = jnp.asarray((s.numbers == 8).astype(np.int32))
    R = jnp.asarray(np.mod(s.positions, np.diag(s.cell)), jnp.float32)
    nfn, efn = behler_parrinello_nl(disp, box, species, R, cutoff, key=jax.random.PRNGKey(0), dr_threshold=SKIN_A)
    t = time.perf_counter()
    nbrs = nfn.allocate(R)
    alloc_s = time.perf_counter() - t
    energy_fn = lambda R, neighbor, **kw: efn(R, neighbor)
    init, apply = simulate.nve(energy_fn, shift, fs_to_internal(TIMESTEP_FS))
    mass = masses_of(s.numbers).astype(jnp.float32)
    state = init(jax.random.PRNGKey(1), R, kT=KB * TEMPERATURE_K, mass=mass, neighbor=nbrs)

    @jax.jit
    def run(state, nbrs):
        def body(_, c):
            st, nb = c
            st = apply(st, neighbor=nb)
            return st, nb.update(st.position)
        return jax.lax.fori_loop(0, steps, body, (state, nbrs))

    t = time.perf_counter()
    compiled = run.lower(state, nbrs).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    state, nbrs = jax.block_until_ready(compiled(state, nbrs))
    wall = time.perf_counter() - t
    e_kin = float(quantity.kinetic_energy(momentum=state.momentum, mass=state.mass))
    return {"atoms": s.n_atoms, "steps": steps, "cutoff_A": cutoff, "neighbor_alloc_s": alloc_s,
            "compile_s": compile_s, "s_per_step": wall / steps,
            "ns_per_day": steps * TIMESTEP_FS * 1e-6 / (wall / 86400), "atom_steps_per_s": steps * s.n_atoms / wall,
            "overflow": bool(nbrs.did_buffer_overflow), "final_e_kin_eV": e_kin}


def run_config(kind: str, cores: int, args: list[str], devices: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--cores", str(cores), "--devices", str(devices), *args]
    env = dict(os.environ)
    if devices > 1:  # fixed when JAX starts; one thread per device (jnnp.md.parallel)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
                            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        return {"error": tail or f"exit code {proc.returncode} (killed: out of memory?)"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_configs(text: str) -> list[tuple[str, int, int]]:
    """``dtype:cores[:devices]`` items → (dtype, cores, devices)."""
    out = []
    for item in text.split(","):
        fields = item.split(":")
        if len(fields) not in (2, 3) or fields[0] not in ("float32", "float64"):
            raise SystemExit(f"--configs: expected dtype:cores[:devices] with dtype float32 or float64, got {item!r}")
        out.append((fields[0], int(fields[1]), int(fields[2]) if len(fields) == 3 else 1))
    return out


def _row_text(r: dict) -> str:
    head = f"{r['code']:26s} {r['dtype']:8s} {r['cores']:5d} {r.get('devices', 1):7d} {r.get('atoms', 0):7d}"
    if "error" in r:
        return f"{head}  error: {r['error']}"
    drift = r.get("drift_eV_per_atom_per_ps")
    dev = r.get("max_abs_dev_eV_per_atom")
    return (f"{head} {r['steps']:6d} {r['compile_s']:9.1f} {1e3 * r['s_per_step']:9.1f} {r['ns_per_day']:8.3f} "
            f"{r['atom_steps_per_s']:12.4g} {'-' if drift is None else f'{drift:.2e}':>10s} "
            f"{'-' if dev is None else f'{dev:.1e}':>9s} {r.get('reallocations', '-')!s:>6s} "
            f"{r['peak_rss_GiB']:7.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="MD steps per configuration (0.5 fs each)")
    ap.add_argument("--configs", default="float64:1,float64:2,float64:2:2,float32:1,float32:2,float32:2:2",
                    help="dtype:cores[:devices],... (devices: the step split over that many XLA CPU devices)")
    ap.add_argument("--thermo-every", type=int, default=10)
    ap.add_argument("--jaxmd", action="store_true", help="also jax-md's behler_parrinello (needs ~19 GB at 6.35 Å)")
    ap.add_argument("--jaxmd-cutoff", type=float, default=6.35)
    ap.add_argument("--jaxmd-steps", type=int, default=10)
    ap.add_argument("--sizes", default=None, help="replications per side for a scaling curve, e.g. 1,2,3")
    ap.add_argument("--size-config", default=None, help="dtype:cores[:devices] of the scaling curve (default: the last of --configs)")
    ap.add_argument("--size-steps", type=int, default=None, help="steps per size (default: --steps)")
    ap.add_argument("--output", default=str(HERE / "results" / "md_water.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cores", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float64", help=argparse.SUPPRESS)
    ap.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--replicate", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        os.sched_setaffinity(0, set(range(args.cores)))
        if args.worker == "jnnp":
            res = worker_jnnp(args.dtype, args.steps, args.replicate, args.thermo_every, args.devices)
        else:
            res = worker_jaxmd(args.jaxmd_cutoff, args.steps, args.replicate)
        res["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(res))
        return

    if not DATA.exists():
        raise SystemExit(f"{DATA} not found (the benchmark needs ../shared/data)")
    configs = _parse_configs(args.configs)
    common = ["--thermo-every", str(args.thermo_every)]
    rows = []
    for dtype, cores, devices in configs:
        r = run_config("jnnp", cores, ["--dtype", dtype, "--steps", str(args.steps), *common], devices)
        rows.append({"code": "jnnp", "dtype": dtype, "cores": cores, "devices": devices, "atoms": 1080, **r})
    if args.jaxmd:
        r = run_config("jaxmd", max(c for _, c, _ in configs),
                       ["--jaxmd-cutoff", str(args.jaxmd_cutoff), "--steps", str(args.jaxmd_steps)])
        rows.append({"code": f"jax-md BP (r_c {args.jaxmd_cutoff} Å)", "dtype": "float32",
                     "cores": max(c for _, c, _ in configs), "atoms": 1080, **r})
    scaling = []
    if args.sizes:
        dtype, cores, devices = _parse_configs(args.size_config)[0] if args.size_config else configs[-1]
        for n in (int(x) for x in args.sizes.split(",")):
            r = run_config("jnnp", cores, ["--dtype", dtype, "--steps", str(args.size_steps or args.steps),
                                           "--replicate", str(n), *common], devices)
            scaling.append({"code": "jnnp", "dtype": dtype, "cores": cores, "devices": devices, "replicate": n,
                            "atoms": 1080 * n**3, **r})

    print(f"NVE MD, 1080-atom RPBE-D3 water box, n2p2 reference model, {TIMESTEP_FS} fs, skin {SKIN_A} Å, "
          f"thermo (E, P) every {args.thermo_every} steps")
    hdr = (f"{'code':26s} {'dtype':8s} {'cores':>5s} {'devices':>7s} {'atoms':>7s} {'steps':>6s} {'compile s':>9s} "
           f"{'ms/step':>9s} {'ns/day':>8s} {'atom-steps/s':>12s} {'drift':>10s} {'max|dE|':>9s} "
           f"{'realloc':>6s} {'GiB':>7s}")
    print(hdr)
    for r in rows:
        print(_row_text(r))
    if scaling:
        print("scaling over box size (drift in eV/atom/ps, max|dE| in eV/atom):")
        for r in scaling:
            print(_row_text(r))
    from importlib.metadata import version

    import jax
    import numpy as np

    import jnnp

    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
            "jax": jax.__version__, "jax_md": version("jax-md"), "numpy": np.__version__,
            "jnnp": getattr(jnnp, "__version__", "?"), "devices": [str(d) for d in jax.devices()],
            "timestep_fs": TIMESTEP_FS, "temperature_K": TEMPERATURE_K, "skin_A": SKIN_A,
            "thermo_every": args.thermo_every, "command": " ".join(sys.argv)}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows, "scaling": scaling}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
