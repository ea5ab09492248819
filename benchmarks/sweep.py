"""Cost of a vectorised sweep: 8 small networks trained in one program vs one network, same epochs.

Each configuration runs in a fresh subprocess (no shared compilation caches):

* ``vmap-1``: `jnnp.ensemble.train.train_members` with one member;
* ``vmap-M``: the same with M members (seeds 0..M−1; cost does not depend on which
  hyperparameter differs);
* ``fit``: one model with the ordinary training loop `jnnp.train.fit` (the sequential baseline:
  M separate runs cost M times this).

Both loops validate after every epoch. Reported per configuration: wall time of the first epoch
(includes XLA compilation), median steady-state epoch time (epochs 2..E), total training time.
The ratios ``steady_ratio`` = steady(vmap-M)/steady(vmap-1) and ``total_ratio`` (with
compilation) are the numbers the sweep issue asks for (target: well under M); ``vs_fit`` compares
with M sequential ``fit`` runs. Results: benchmarks/results/sweep.json (with machine and versions).

    python benchmarks/sweep.py                          # 8 members, 20 epochs, shipped ethanol data
    python benchmarks/sweep.py --members 8 --epochs 3 --frames 24 --hidden 4 --out /tmp/s.json   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / "tests" / "data" / "rmd17_ethanol_100.npz"


def _setup(args):
    import jax

    jax.config.update("jax_enable_x64", args.precision == "float64")
    import jax.numpy as jnp

    import jnnp
    from jnnp.descriptors.grids import symmetry_function_grid
    from jnnp.model import PotentialSpec

    data = list(jnnp.read(args.data))[: args.frames]
    n_val = max(1, len(data) // 5)
    train, val = data[n_val:], data[:n_val]
    elements = sorted({int(z) for s in data for z in s.numbers})
    desc = symmetry_function_grid(elements, args.cutoff, n_radial=args.n_radial, r_min=0.8, angular_eta=(0.05,),
                                  zeta=(1.0, 4.0), lambdas=(-1.0, 1.0), angular_type=9, cutoff_type="poly2",
                                  angular=not args.radial_only)
    hidden = tuple(args.hidden)
    spec = PotentialSpec(desc, hidden=hidden, activations=("t",) * len(hidden) + ("l",))
    dtype = jnp.float64 if args.precision == "float64" else jnp.float32
    return spec, train, val, dtype


def _settings(args):
    from jnnp.train.loop import TrainSettings

    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=5e-3, force_weight=10.0,
                         patience=args.epochs + 1, seed=0, plots=False, cache_graphs=False)


def _summary(epoch_times, total):
    steady = epoch_times[1:] or epoch_times
    return {"first_epoch_s": epoch_times[0], "steady_epoch_s": statistics.median(steady),
            "total_train_s": total, "epoch_times_s": epoch_times}


def worker(args) -> dict:
    import jax

    spec, train, val, dtype = _setup(args)
    cfg = _settings(args)
    from jnnp.train.batch import Batcher

    train_b = Batcher(spec, train, cfg.batch_size)
    val_b = Batcher(spec, val, cfg.batch_size)
    if args.worker == "fit":
        import tempfile

        from jnnp.model import init_potential
        from jnnp.train.loop import fit
        from jnnp.train.normalize import normalize_potential

        pot = normalize_potential(init_potential(spec, jax.random.PRNGKey(0), dtype), train, batcher=train_b)
        cfg = cfg.__class__(**{**cfg.to_dict(), "normalize": False})
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            _, hist = fit(pot, train, val, cfg, d, progress=False)
            total = time.perf_counter() - t
        times = hist.column("time_s")
        members = 1
    else:
        from jnnp.ensemble.members import Member, init_members, member_arrays
        from jnnp.ensemble.train import train_members

        members = int(args.worker)
        ms = [Member(seed=k, learning_rate=cfg.learning_rate, force_weight=cfg.force_weight) for k in range(members)]
        params = init_members(spec, ms, train, batcher=train_b, dtype=dtype)
        t = time.perf_counter()
        _, hist = train_members(spec, params, member_arrays(ms, cfg.learning_rate), train, val, cfg,
                                train_batcher=train_b, val_batcher=val_b, progress=False)
        total = time.perf_counter() - t
        times = [r["time_s"] for r in hist.epochs]
    return {"mode": "fit" if args.worker == "fit" else "vmap", "members": members, "n_train": len(train),
            "n_val": len(val), "batches_per_epoch": train_b.n_batches(), "device": str(jax.devices()[0]),
            **_summary(times, total)}


def _run(args, which: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", which] + _pass_through(args)
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if out.returncode:
        raise RuntimeError(f"worker {which} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pass_through(args) -> list[str]:
    argv = ["--data", str(args.data), "--frames", str(args.frames), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--cutoff", str(args.cutoff), "--n-radial", str(args.n_radial),
            "--precision", args.precision, "--hidden", *map(str, args.hidden)]
    return argv + (["--radial-only"] if args.radial_only else [])


def _meta() -> dict:
    import jax
    import numpy as np

    return {"date": datetime.date.today().isoformat(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__,
            "backend": jax.default_backend(), "device": str(jax.devices()[0])}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--frames", type=int, default=100, help="structures used (1/5 validation)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 16])
    ap.add_argument("--cutoff", type=float, default=4.0)
    ap.add_argument("--n-radial", type=int, default=6)
    ap.add_argument("--radial-only", action="store_true")
    ap.add_argument("--precision", choices=("float64", "float32"), default="float64")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sweep.json")
    ap.add_argument("--no-fit", action="store_true", help="skip the jnnp.train.fit baseline")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return {}
    rows = [_run(args, "1"), _run(args, str(args.members))] + ([] if args.no_fit else [_run(args, "fit")])
    one, many = rows[0], rows[1]
    result = {"meta": _meta(), "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                            if k not in ("worker", "out")},
              "rows": rows, "members": args.members,
              "steady_ratio": many["steady_epoch_s"] / one["steady_epoch_s"],
              "total_ratio": many["total_train_s"] / one["total_train_s"]}
    if not args.no_fit:
        fit = rows[2]
        result["vs_fit"] = {"sequential_steady_s": args.members * fit["steady_epoch_s"],
                            "vmapped_steady_s": many["steady_epoch_s"],
                            "speedup_steady": args.members * fit["steady_epoch_s"] / many["steady_epoch_s"],
                            "speedup_total": args.members * fit["total_train_s"] / many["total_train_s"]}
    print(f"{'config':10s} {'first epoch s':>14s} {'steady epoch s':>15s} {'total s':>9s}")
    for r in rows:
        name = "fit" if r["mode"] == "fit" else f"vmap-{r['members']}"
        print(f"{name:10s} {r['first_epoch_s']:14.3f} {r['steady_epoch_s']:15.4f} {r['total_train_s']:9.2f}")
    print(f"{args.members} members vs 1: steady epoch ×{result['steady_ratio']:.2f}, total ×{result['total_ratio']:.2f}"
          + (f"; vs {args.members} sequential fit runs: {result['vs_fit']['speedup_steady']:.2f}× faster (steady)"
             if "vs_fit" in result else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.out)
    return result


if __name__ == "__main__":
    main()
