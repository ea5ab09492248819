"""rMD17 split 01 benchmark: train on 950 of train_01 (50 validation), test on all of test_01, per molecule.

Prints energy and force MAE beside the published ANI column and writes
benchmarks/results/rmd17.json keyed by molecule: ``energy_mae_meV`` (whole molecule, as the
published tables), ``force_mae_meV_per_A``, RMSEs, and the benchmark record of `_common.run_config`
(per-atom errors, wall time, epochs, throughput, settings, machine).
Long: run by hand, e.g. ``python benchmarks/rmd17.py --molecules ethanol --budget-s 1800``.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _common import RESULTS, ROOT, SHARED_DATA, print_table, read_results, run_config, update_results

DATA = SHARED_DATA / "rmd17"
MOLECULES = ["aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
             "salicylic", "toluene", "uracil"]
# Published ANI (BP-type) force MAEs [meV/Å] on rMD17 split 01, as quoted in the training issue
# (issue 4, "Benchmarks" 1); only the values quoted there are listed.
ANI_FORCE_MAE = {"ethanol": 13.4, "aspirin": 40.6}
COLUMNS = [("molecule", "molecule"), ("energy_mae_meV", "E MAE meV"), ("force_mae_meV_per_A", "F MAE meV/Å"),
           ("ani", "ANI F MAE"), ("energy_rmse_meV", "E RMSE meV"), ("force_rmse_meV_per_A", "F RMSE meV/Å"),
           ("rate", "struct/s"), ("epochs", "epochs")]


def run(mol: str, overrides=(), *, budget_s: float | None = None, results_dir=RESULTS,
        progress: bool = True) -> dict:
    """Train and test one molecule; updates ``<results_dir>/rmd17.json`` and returns its entry."""
    test_path = DATA / f"rmd17_{mol}_test_01.npz"
    overrides = [f"name=rmd17_{mol}", f"run_dir=runs/rmd17/{mol}",
                 f"data.path={DATA / f'rmd17_{mol}_train_01.npz'}", f"data.test_path={test_path}", *overrides]
    if budget_s:
        overrides.append(f"train.max_time_s={budget_s}")
    rec = run_config(ROOT / "configs" / "rmd17.yaml", overrides, progress=progress)
    # every frame of a molecule has the same atoms, so whole-molecule errors are N × per-atom errors
    n_atoms = len(np.load(test_path)["nuclear_charges"])
    t = rec["test"]
    entry = {"energy_mae_meV": t["energy_mae_meV_per_atom"] * n_atoms,
             "force_mae_meV_per_A": t["force_mae_meV_per_A"],
             "energy_rmse_meV": t["energy_rmse_meV_per_atom"] * n_atoms,
             "force_rmse_meV_per_A": t["force_rmse_meV_per_A"], "n_atoms": n_atoms,
             "published_ani_force_mae_meV_per_A": ANI_FORCE_MAE.get(mol), **rec}
    update_results("rmd17", mol, entry, results_dir)
    return entry


def table_rows(results: dict) -> list[dict]:
    rows = []
    for mol, r in results.items():
        tr = r.get("training", {})
        rows.append({"molecule": mol, "ani": ANI_FORCE_MAE.get(mol),
                     "rate": tr.get("throughput", {}).get("structures_per_s"), "epochs": tr.get("epochs_run"),
                     **{k: r.get(k) for k, _ in COLUMNS[1:] if k in r}})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--molecules", nargs="*", default=MOLECULES, choices=MOLECULES)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-time budget per molecule [s] (default: the config's train.max_time_s)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. train.epochs=100 (repeatable)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    args = ap.parse_args(argv)
    for mol in args.molecules:
        run(mol, args.set, budget_s=args.budget_s, results_dir=args.results_dir, progress=not args.quiet)
        jax.clear_caches()   # free the molecule's compiled programs (XLA:CPU code mappings, see jnnp.hyper.study)
    print_table(table_rows(read_results("rmd17", args.results_dir)), COLUMNS)


if __name__ == "__main__":
    main()
