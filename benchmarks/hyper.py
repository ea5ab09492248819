"""Descriptor-set benchmark: gradient-optimised vs standard grid vs n2p2-style hand-chosen vs CUR/FPS
symmetry functions.

Runs the studies of configs/hyper_ethanol.yaml (rMD17 ethanol, split 01) and configs/hyper_tio2.yaml
(bulk TiO2, Artrith & Urban) with `jnnp.hyper.study.run_study` and writes
benchmarks/results/hyper.json keyed by system: per method the reported (test) force and energy
RMSE (mean and std over seeds), the validation force RMSE, the method's own wall time
(selection / optimisation) and the mean training time, with machine, versions and overrides.
The full per-run records stay in each study's run_dir (study.json, study.png, descriptors.png).

Long: run by hand, e.g. ``python benchmarks/hyper.py`` (both systems) or
``python benchmarks/hyper.py --systems ethanol --set seeds=[0]``. ``--tiny`` runs both studies
with tiny budgets (a smoke test of a few minutes) and writes runs/hyper_tiny/hyper.json instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = {"ethanol": ROOT / "configs" / "hyper_ethanol.yaml", "tio2": ROOT / "configs" / "hyper_tio2.yaml"}

_TINY_COMMON = ["grid.n_radial=2", "grid.zeta=[1.0]", "grid.lambdas=[1.0]", "pool.n_radial=4",
                "pool.angular_eta=[0.02, 0.2]", "pool.zeta=[1.0, 4.0]", "pool.frames=8", "network.hidden=[4]",
                "train.epochs=2", "train.batch_size=4", "train.warmup_epochs=0", "ridge.steps=2",
                "ridge.frames_train=8", "ridge.frames_validation=4", "ridge.batch_size=4", "unrolled.outer_steps=1",
                "unrolled.inner_steps=2", "unrolled.frames_train=4", "unrolled.frames_validation=4",
                "unrolled.batch_size=4", "learnable.epochs=1", "learnable.batch_size=4", "hand.match_grid_size=false",
                "seeds=[0]"]
TINY = {"ethanol": ["data.index=':40'", "data.test_path=null", "data.split={validation: 0.25, test: 0.25, seed: 0}",
                    *_TINY_COMMON],
        "tio2": ["data.index='::400'", "data.split={validation: 0.25, test: 0.25, seed: 0}", *_TINY_COMMON]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--set", action="append", default=[], help="config override for every system, e.g. seeds=[0]")
    ap.add_argument("--tiny", action="store_true", help="tiny budgets (smoke test)")
    ap.add_argument("--out", default=None, help="results JSON (default benchmarks/results/hyper.json)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    from jnnp.hyper.config import load_hyper_config
    from jnnp.hyper.study import run_study
    from jnnp.train.metrics import write_json

    os.chdir(ROOT)   # the configs' data paths are relative to the repository root
    out = Path(args.out) if args.out else (ROOT / "runs" / "hyper_tiny" / "hyper.json" if args.tiny
                                           else HERE / "results" / "hyper.json")
    results = json.loads(out.read_text()) if out.exists() else {}
    for system in args.systems:
        overrides = list(TINY[system]) if args.tiny else []
        if args.tiny:
            overrides.append(f"run_dir=runs/hyper_tiny/{system}")
        overrides += args.set
        cfg = load_hyper_config(CONFIGS[system], overrides)
        t0 = time.perf_counter()
        summary = run_study(cfg, progress=not args.quiet)
        results[system] = {
            "config": str(CONFIGS[system].relative_to(ROOT)), "overrides": overrides, "run_dir": cfg.run_dir,
            "reported": summary["reported"], "n_train": summary["n_train"], "n_validation": summary["n_validation"],
            "n_test": summary["n_test"], "functions_per_element": summary["functions_per_element"],
            "seeds": cfg.seeds, "wall_s": time.perf_counter() - t0,
            "methods": {name: {"method_s": m["method_s"], **m["aggregate"]} for name, m in summary["methods"].items()},
            "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "devices": [str(d) for d in jax.devices()], "jax": jax.__version__}
        write_json(results, out)
    print(f"{'system':8s} {'method':14s} {'F RMSE meV/Å':>14s} {'± std':>8s} {'val F RMSE':>11s} "
          f"{'method s':>9s} {'train s':>8s}")
    for system, r in results.items():
        for name, m in r["methods"].items():
            print(f"{system:8s} {name:14s} {m['force_rmse_mean']:14.2f} {m['force_rmse_std']:8.2f} "
                  f"{m['validation_force_rmse_mean']:11.2f} {m['method_s']:9.1f} {m['train_s_mean']:8.1f}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
