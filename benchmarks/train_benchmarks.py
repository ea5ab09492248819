"""Training benchmarks on periodic DFT data sets: TiO2, mica/water, Li8Mo2Ni7Ti7O32.

Each benchmark trains its config (configs/<name>.yaml) under a wall-time budget, evaluates the
test split, prints energy/force RMSE and MAE (overall and per system) beside the published numbers
quoted in the data set's SOURCE.md, and writes benchmarks/results/<name>.json: test and validation
errors (meV/atom, meV/Å; per element and per system), wall time, epochs, training throughput
(structures/s), the settings, the machine, and the published numbers. rMD17 has its own script
(benchmarks/rmd17.py, one model per molecule).

Long: run by hand, one benchmark at a time, e.g.

    python benchmarks/train_benchmarks.py tio2 --budget-s 14400
    python benchmarks/train_benchmarks.py li8mo2ni7ti7o32 --set train.epochs=5   # overrides as for jnnp train
"""

from __future__ import annotations

import argparse
import math

from _common import RESULTS, ROOT, print_table, run_config, write_results

_TIO2_SOURCE = "../shared/data/tio2-artrith-urban-2016/SOURCE.md"
# Published numbers, copied from each data set's SOURCE.md (the line named in "where").
BENCHMARKS = {
    "tio2": {
        "config": "configs/tio2.yaml",
        "published": {
            "where": f"{_TIO2_SOURCE}, 'Reference numbers from the same repository'",
            "note": "aenet tutorial fits (psi-k-mlip-workshop-2021 02-train/example-good-ann-fits), "
                    "energy-only BFGS training, 10 % test, epoch 5000; test errors",
            "fits": {"aenet set003, 40-40 tanh": {"energy_rmse_meV_per_atom": 4.97,
                                                  "energy_mae_meV_per_atom": 2.20},
                     "aenet set001, 15-15 tanh": {"energy_rmse_meV_per_atom": 3.69},
                     "aenet set002, 10-10 tanh": {"energy_rmse_meV_per_atom": 7.54}},
        },
    },
    "mica_water": {
        "config": "configs/mica_water.yaml",
        "published": {"where": "../shared/data/mica-water-scan-2024/SOURCE.md, 'Published accuracy'",
                      "note": "no published errors reachable from here", "fits": {}},
    },
    "li8mo2ni7ti7o32": {
        "config": "configs/li8mo2ni7ti7o32.yaml",
        "published": {"where": "../shared/data/li8mo2ni7ti7o32-cooper-2020/SOURCE.md",
                      "note": "SOURCE.md quotes no published errors", "fits": {}},
    },
}
COLUMNS = [("set", "set"), ("n", "n test"), ("energy_rmse_meV_per_atom", "E RMSE meV/at"),
           ("energy_mae_meV_per_atom", "E MAE meV/at"), ("force_rmse_meV_per_A", "F RMSE meV/Å"),
           ("force_mae_meV_per_A", "F MAE meV/Å")]


def run(name: str, overrides=(), *, budget_s: float | None = None, results_dir=RESULTS,
        progress: bool = True) -> dict:
    """Train benchmark ``name`` and write ``<results_dir>/<name>.json``; returns the record."""
    spec = BENCHMARKS[name]
    overrides = list(overrides) + ([f"train.max_time_s={budget_s}"] if budget_s else [])
    record = run_config(ROOT / spec["config"], overrides, progress=progress)
    record = {"benchmark": name, **record, "published": spec["published"]}
    write_results(name, record, results_dir)
    return record


def table_rows(name: str, record: dict) -> list[dict]:
    """Rows for `print_table`: overall test errors, each system, then the published fits."""
    t = record["test"]
    rows = [{"set": f"{name} (test)", "n": t.get("n_structures"), **t}]
    for sysname, e in sorted(t.get("per_system", {}).items()):
        rows.append({"set": f"  {sysname}", "n": e.get("n_structures"), **e})
    for fit, e in record["published"]["fits"].items():
        rows.append({"set": f"  published: {fit}", **e})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmarks", nargs="+", choices=[*BENCHMARKS, "all"])
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-time budget of the training [s] (default: the config's train.max_time_s)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. train.epochs=5 (repeatable)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    args = ap.parse_args(argv)
    names = list(BENCHMARKS) if "all" in args.benchmarks else args.benchmarks
    rows = []
    for name in names:
        rec = run(name, args.set, budget_s=args.budget_s, results_dir=args.results_dir,
                  progress=not args.quiet)
        tr = rec["training"]
        rate = tr["throughput"]["structures_per_s"]
        print(f"{name}: {rec['data']['n_train']} train / {rec['data']['n_validation']} validation / "
              f"{rec['data']['n_test']} test; {tr['epochs_run']} epochs in {tr['wall_s']:.0f} s "
              f"({tr['stop_reason']}), best epoch {tr['best_epoch']}, "
              f"{'-' if rate is None or not math.isfinite(rate) else f'{rate:.3g}'} structures/s")
        rows += table_rows(name, rec)
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
