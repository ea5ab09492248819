"""Energy + forces of the 1080-atom RPBE-D3 water box with n2p2's reference HDNNP.

Runs each configuration (float32/float64 × 1 core, 2 cores, and 2 cores with the atoms shared out
over 2 host CPU devices, `jnnp.model.sharded`) in a fresh subprocess pinned to the cores,
and prints a table: host graph build time, jit compile time, steady-state time per call
(energy + forces, and energy + forces + stress), peak resident memory. Optionally the same box with
jax-md's own Behler–Parrinello models (`worker_jaxmd`) beside it; a run killed for memory is
recorded with its peak resident size.
Results go to benchmarks/results/ef_water.json. Needs ../shared/data (not a test).

    python benchmarks/ef_water.py [--repeats 20] [--jaxmd [VARIANT:CUTOFF ...]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "n2p2-examples" / "H2O_RPBE-D3"


def _timeit(fn, repeats):
    import jax

    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[0], ts[len(ts) // 2]


def worker_jnnp(arg: str, repeats: int) -> dict:
    """``arg`` = "DTYPE:PARTS": with PARTS > 1 the atoms are shared out over that many host CPU
    devices (`jnnp.model.sharded`; the caller sets XLA's device count)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jnnp
    from jnnp.model.evaluate import graph_for
    from jnnp.model.potential import make_energy_fn
    from jnnp.model.properties import make_properties_fn

    dtype_name, parts = arg.split(":")
    parts = int(parts)
    dtype = {"float32": jnp.float32, "float64": jnp.float64}[dtype_name]
    pot = jnnp.read_n2p2(DATA / "reference-fit-7241", input_nn="input.nn.predict",
                         length_unit="bohr", energy_unit="hartree").astype(dtype)
    s = jnnp.read(DATA / "input.data.H2O_1080_liquid", length_unit="bohr", energy_unit="hartree")[0]
    t = time.perf_counter()
    graph = graph_for(pot, s)
    t_graph = time.perf_counter() - t
    efn = make_energy_fn(pot.spec)
    if parts > 1:
        from jnnp.descriptors.plan import make_plan
        from jnnp.model.sharded import cpu_mesh, make_sharded_properties_fn, shard_graph, split_graph

        assert len(jax.devices()) == parts, jax.devices()
        mesh = cpu_mesh()
        t = time.perf_counter()
        full_graph, graph = graph, shard_graph(split_graph(graph, make_plan(pot.spec.descriptor), parts), mesh)
        t_graph += time.perf_counter() - t
        ef = make_sharded_properties_fn(efn, mesh, stress=False)
        efs = make_sharded_properties_fn(efn, mesh, stress=True)
    else:
        full_graph = graph
        ef = jax.jit(make_properties_fn(efn, stress=False))
        efs = jax.jit(make_properties_fn(efn, stress=True))
    R, C = jnp.asarray(s.positions, dtype), jnp.asarray(s.cell, dtype)
    res = {}
    for name, fn in (("ef", ef), ("efs", efs)):
        t = time.perf_counter()
        lowered = fn.lower(pot.params, R, C, graph)
        compiled = lowered.compile()
        res[f"compile_{name}_s"] = time.perf_counter() - t
        out = compiled(pot.params, R, C, graph)
        res[f"min_{name}_s"], res[f"median_{name}_s"] = _timeit(lambda: compiled(pot.params, R, C, graph), repeats)
    ref_e = -2.7564547347815904e04 * jnnp.units.HARTREE
    res.update(graph_build_s=t_graph, energy_eV=float(out["energy"]),
               energy_rel_err_vs_n2p2=abs(float(out["energy"]) - ref_e) / abs(ref_e),
               pairs=int(full_graph.pair_i.shape[0]), parts=parts,
               triplets=int(sum(b[0].shape[0] for b in full_graph.triplet_blocks)))
    return res


def worker_jaxmd(arg: str, repeats: int) -> dict:
    """jax-md's Behler–Parrinello on the same box, float32 (its own default symmetry functions and
    one MLP per species; not the n2p2 model, so the energies differ). ``arg`` = "VARIANT:CUTOFF":
    ``dense`` is ``energy.behler_parrinello_neighbor_list`` with a Dense neighbour list, ``sparse``
    the same with jax-md's default Sparse list, ``all`` is ``energy.behler_parrinello`` (every pair
    of atoms, no neighbour list). CUTOFF [Å] goes to the symmetry functions (``sym_kwargs``) and
    the neighbour list."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax_md import energy, partition, space

    import jnnp

    variant, cutoff = arg.split(":")
    cutoff = float(cutoff)
    s = jnnp.read(DATA / "input.data.H2O_1080_liquid", length_unit="bohr", energy_unit="hartree")[0]
    box = jnp.asarray(np.diag(s.cell), jnp.float32)
    disp, _ = space.periodic(box)
    species = jnp.asarray((s.numbers == 8).astype(np.int32))
    R = jnp.asarray(s.positions, jnp.float32)
    key, sym = jax.random.PRNGKey(0), {"cutoff_distance": cutoff}
    res_extra = {}
    t = time.perf_counter()
    if variant == "all":
        efn = energy.behler_parrinello(disp, key=key, species=species, sym_kwargs=sym)
        ef = jax.jit(jax.value_and_grad(efn))
        call = lambda: ef(R)
    else:
        from _jaxmd import behler_parrinello_nl

        fmt = {"dense": partition.Dense, "sparse": partition.Sparse}[variant]
        nfn, efn = behler_parrinello_nl(disp, box, species, R, cutoff, key=key, format=fmt)
        nbrs = nfn.allocate(R)
        ef = jax.jit(lambda R, n: jax.value_and_grad(efn)(R, n))
        call = lambda: ef(R, nbrs)
        res_extra = {"neighbors_per_atom": int(nbrs.idx.shape[-1])}
    jax.block_until_ready(call())
    res = {"compile_ef_s": time.perf_counter() - t, "cutoff_A": cutoff, "variant": variant, **res_extra}
    res["min_ef_s"], res["median_ef_s"] = _timeit(call, repeats)
    return res


def run_config(kind: str, arg: str, cores: int, repeats: int, devices: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--arg", arg, "--repeats", str(repeats),
           "--cores", str(cores)]
    env = dict(os.environ)
    if devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode == -9:  # the kernel's OOM killer (nothing else here sends SIGKILL)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        return {"error": f"killed (out of memory) at {peak:.1f} GiB resident", "peak_rss_GiB": peak}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--jaxmd", nargs="*", default=None, metavar="VARIANT:CUTOFF",
                    help="also jax-md's Behler–Parrinello (see worker_jaxmd), default dense:6.35; sparse and all "
                         "need terabytes / ~110 GB for this box")
    ap.add_argument("--worker", default=None)
    ap.add_argument("--arg", default=None)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()

    if args.worker:
        from jnnp.allocator import tune_allocator

        tune_allocator()
        os.sched_setaffinity(0, set(range(args.cores)))
        fn = worker_jnnp if args.worker == "jnnp" else worker_jaxmd
        res = fn(args.arg, args.repeats)
        res["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(res))
        return

    import jax

    rows = []
    for dtype in ("float64", "float32"):
        for cores, parts in ((1, 1), (2, 1), (2, 2)):
            r = run_config("jnnp", f"{dtype}:{parts}", cores, args.repeats, devices=parts)
            code = "jnnp" if parts == 1 else f"jnnp, {parts} CPU devices"
            rows.append({"code": code, "dtype": dtype, "cores": cores, **r})
    for arg in ([] if args.jaxmd is None else args.jaxmd or ["dense:6.35"]):
        r = run_config("jaxmd", arg, 2, max(2, args.repeats // 10))  # one at a time: each may need > 20 GB
        rows.append({"code": f"jax-md BP {arg.split(':')[0]} {arg.split(':')[1]} Å", "dtype": "float32", "cores": 2, **r})

    hdr = f"{'code':26s} {'dtype':8s} {'cores':>5s} {'graph s':>8s} {'compile s':>10s} {'E+F min/med ms':>16s} {'E+F+S min/med ms':>18s} {'peak GiB':>9s}"
    print("1080-atom water box, n2p2 RPBE-D3 reference model (cutoff 12 Bohr = 6.35 Å)")
    print(hdr)
    for r in rows:
        if "error" in r:
            print(f"{r['code']:26s} {r['dtype']:8s} {r['cores']:5d}  error: {r['error']}")
            continue
        efs = (f"{1e3 * r['min_efs_s']:.0f}/{1e3 * r['median_efs_s']:.0f}" if "min_efs_s" in r else "-")
        print(f"{r['code']:26s} {r['dtype']:8s} {r['cores']:5d} {r.get('graph_build_s', float('nan')):8.3f} "
              f"{r['compile_ef_s']:10.1f} {1e3 * r['min_ef_s']:7.0f}/{1e3 * r['median_ef_s']:<8.0f} "
              f"{efs:>18s} {r['peak_rss_GiB']:9.2f}")
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "numpy": __import__("numpy").__version__}
    out = HERE / "results" / "ef_water.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
