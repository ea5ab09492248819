"""Element-decoupled Kalman filter vs Adam: validation error against wall time on the same data.

Both optimisers start from the same initial potential and train on the same split of the same
data (configs/kalman_vs_adam.yaml: rMD17 ethanol, 200 training / 50 validation frames) under the
same wall-time budget (train.max_time_s or --budget-s). Adam uses the config's train section; the
Kalman run sets ``train.optimizer=kalman`` and ``train.batch_size=1`` (one filter update per
structure, as n2p2/RuNNer). After every epoch the validation energy and force RMSE are recorded
with the wall time since the start of `fit` (neighbour lists, normalisation and JIT compilation
included). The result lists, for each target RMSE, the wall time each optimiser needed to reach
it; without explicit targets these are the lowest RMSE that both reached and 1.25× and 1.5× that.

Writes benchmarks/results/kalman_vs_adam.json and kalman_vs_adam.png and prints a table.
Long: run by hand, e.g.

    python benchmarks/kalman_vs_adam.py --budget-s 1200
    python benchmarks/kalman_vs_adam.py --set data.index=':60' --budget-s 60     # a quick look
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

from _common import RESULTS, ROOT, ThroughputMeter, machine_info, print_table, repo_relative, write_results

CONFIG = ROOT / "configs" / "kalman_vs_adam.yaml"
OPTIMIZERS = {"adam": [], "kalman": ["train.optimizer=kalman", "train.batch_size=1"]}
CURVES = {"force": ("val_force_rmse", "force_rmse_meV_per_A", "validation force RMSE [meV/Å]"),
          "energy": ("val_energy_rmse", "energy_rmse_meV_per_atom", "validation energy RMSE [meV/atom]")}
TARGET_FACTORS = (1.0, 1.25, 1.5)


def time_to_reach(curve: list[dict], key: str, target: float) -> float | None:
    """Wall time [s] of the first epoch whose ``key`` is ≤ ``target`` (None if never)."""
    for point in curve:
        v = point.get(key)
        if v is not None and math.isfinite(v) and v <= target:
            return point["time_s"]
    return None


def default_targets(runs: dict, key: str) -> list[float]:
    """The lowest value of ``key`` that every run reached, and 1.25× and 1.5× of it."""
    bests = []
    for r in runs.values():
        vals = [p[key] for p in r["curve"] if p.get(key) is not None and math.isfinite(p[key])]
        if not vals:
            return []
        bests.append(min(vals))
    floor = max(bests)
    return [floor * f for f in TARGET_FACTORS]


def train_one(cfg_path, overrides, optimizer: str, train, val, potential, run_root: Path,
              progress: bool) -> dict:
    """Fit ``potential`` with ``optimizer``'s settings; returns curve, settings and timings."""
    from jnnp.config import load_config
    from jnnp.pipeline import train_settings
    from jnnp.train.loop import fit

    cfg = load_config(cfg_path, [*overrides, *OPTIMIZERS[optimizer]])
    settings = train_settings(cfg)
    t0 = time.perf_counter()
    with ThroughputMeter() as meter:
        _, history = fit(potential, train, val, settings, run_root / optimizer, progress=progress,
                         callback=meter)
    wall = time.perf_counter() - t0
    curve = [{"epoch": rec["epoch"], "time_s": t, "val_energy_rmse": rec.get("val_energy_rmse"),
              "val_force_rmse": rec.get("val_force_rmse"), "train_loss": rec.get("train_loss")}
             for rec, t in zip(history.epochs, meter.epoch_ends)]
    return {"settings": settings.to_dict(), "curve": curve, "wall_s": wall, "epochs_run": len(history),
            "stop_reason": history.stop_reason, "best_epoch": history.best_epoch,
            "throughput": meter.summary(len(train))}


def plot(result: dict, path: Path) -> bool:
    """Validation force and energy RMSE against wall time, one line per optimiser, target lines."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return False
    from jnnp.atomic import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, (key, tkey, label)) in zip(axes, CURVES.items()):
        for opt, r in result["runs"].items():
            pts = [(p["time_s"], p[key]) for p in r["curve"] if p.get(key) is not None and p[key] > 0]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=opt)
        for t in result["targets"].get(tkey, []):
            ax.axhline(t["target"], color="grey", lw=0.6, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("wall time since start of fit [s]")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"Kalman filter vs Adam ({result['data']['n_train']} training structures, "
                 f"{result['data']['source']})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True


def compare(config=CONFIG, overrides=(), *, optimizers=tuple(OPTIMIZERS), budget_s: float | None = None,
            targets: dict | None = None, run_dir: str | None = None, progress: bool = True) -> dict:
    """Run every optimiser on the config's data; returns the result dict (see module docstring)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jnnp.config import load_config
    from jnnp.model.potential import init_potential
    from jnnp.pipeline import build_potential_spec, load_data

    overrides = list(overrides) + ([f"train.max_time_s={budget_s}"] if budget_s else [])
    cfg = load_config(config, overrides)
    train, val, _, _ = load_data(cfg)
    if not val:
        raise ValueError(f"{config}: the comparison needs a validation split (data.split.validation > 0)")
    elements = sorted({int(z) for s in train + val for z in s.numbers})
    dtype = jax.numpy.float64 if cfg.model.precision == "float64" else jax.numpy.float32
    spec = build_potential_spec(cfg, elements, train)
    potential = init_potential(spec, jax.random.PRNGKey(cfg.train.seed), dtype=dtype)
    run_root = Path(run_dir or cfg.run_dir)
    machine = machine_info()
    runs = {opt: train_one(config, overrides, opt, train, val, potential, run_root, progress)
            for opt in optimizers}
    first_path = cfg.data.path if isinstance(cfg.data.path, str) else cfg.data.path[0]
    result = {"config": repo_relative(config), "overrides": overrides,
              "data": {"source": Path(first_path).name,
                       "n_train": len(train), "n_validation": len(val)},
              "budget_s": cfg.train.max_time_s, "runs": runs, "targets": {}, "machine": machine}
    for name, (key, tkey, _) in CURVES.items():
        values = (targets or {}).get(name) or default_targets(runs, key)
        result["targets"][tkey] = [{"target": v, "time_s": {opt: time_to_reach(r["curve"], key, v)
                                                             for opt, r in runs.items()}} for v in values]
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--budget-s", type=float, default=None, help="wall-time budget per optimiser [s]")
    ap.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    ap.add_argument("--target-force-rmse", type=float, nargs="*", default=None, metavar="MEV_PER_A")
    ap.add_argument("--target-energy-rmse", type=float, nargs="*", default=None, metavar="MEV_PER_ATOM")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable)")
    ap.add_argument("--run-dir", default=None, help="folder for the two runs (default: the config's run_dir)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    result = compare(args.config, args.set, optimizers=tuple(args.optimizers), budget_s=args.budget_s,
                     targets={"force": args.target_force_rmse, "energy": args.target_energy_rmse},
                     run_dir=args.run_dir, progress=not args.quiet)
    out = write_results("kalman_vs_adam", result, args.results_dir)
    plot(result, Path(args.results_dir) / "kalman_vs_adam.png")
    rows = []
    for opt, r in result["runs"].items():
        scored = [p for p in r["curve"] if p["val_force_rmse"] is not None]
        best = min(scored, key=lambda p: p["val_force_rmse"], default={})
        rows.append({"optimizer": opt, "epochs": r["epochs_run"], "wall": r["wall_s"],
                     "rate": r["throughput"]["structures_per_s"], "F": best.get("val_force_rmse"),
                     "E": best.get("val_energy_rmse")})
    print_table(rows, [("optimizer", "optimizer"), ("epochs", "epochs"), ("wall", "wall s"),
                       ("rate", "struct/s"), ("F", "best val F RMSE"), ("E", "its val E RMSE")])
    for tkey, items in result["targets"].items():
        for t in items:
            times = ", ".join(f"{opt} {'not reached' if s is None else f'{s:.0f} s'}"
                              for opt, s in t["time_s"].items())
            print(f"time to validation {tkey} ≤ {t['target']:.3g}: {times}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
