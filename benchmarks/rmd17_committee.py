"""rMD17 split 01: test errors of several independently trained models of one molecule and of their
committee mean (energies and forces averaged over the members).

The models are run directories of `benchmarks/rmd17.py` trainings that differ only in
``train.seed`` (network initialisation and batch order). Prints, per model and for the committee,
energy MAE (whole molecule, meV) and force MAE / RMSE (meV/Å) on all of ``test_01``, and writes
``benchmarks/results/rmd17_committee.json`` keyed by molecule. The single-model numbers give the
seed-to-seed spread of the published protocol's metric; the committee is a different model (M
networks) and is reported as such, never in place of a single-model result.
Long only through its inputs: e.g. ``python benchmarks/rmd17_committee.py ethanol runs/a runs/b``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from _common import RESULTS, ROOT, SHARED_DATA, machine_info, print_table, update_results

MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
             "salicylic", "toluene", "uracil")
COLUMNS = [("model", "model"), ("energy_mae_meV", "E MAE meV"), ("force_mae_meV_per_A", "F MAE meV/Å"),
           ("force_rmse_meV_per_A", "F RMSE meV/Å"), ("median_frame", "F MAE median frame"),
           ("worst_frame", "worst frame F MAE")]


def errors(energy, forces, test) -> dict:
    """Whole-molecule energy MAE [meV], force MAE / RMSE [meV/Å], median and worst frame force MAE
    of predictions ``energy`` (S,) [eV] and ``forces`` (S, N, 3) [eV/Å] on the structures ``test``."""
    de = (energy - np.array([s.energy for s in test])) * 1000
    df = (forces - np.stack([s.forces for s in test])) * 1000
    frame = np.abs(df).mean(axis=(1, 2))
    return {"energy_mae_meV": float(np.abs(de).mean()), "force_mae_meV_per_A": float(np.abs(df).mean()),
            "force_rmse_meV_per_A": float(np.sqrt((df**2).mean())), "median_frame": float(np.median(frame)),
            "worst_frame": float(frame.max()), "worst_frame_index": int(frame.argmax())}


def evaluate(mol: str, run_dirs) -> dict:
    import jnnp
    from jnnp.train.checkpoint import load_potential
    from jnnp.train.step import predict

    test = list(jnnp.read(SHARED_DATA / "rmd17" / f"rmd17_{mol}_test_01.npz"))
    E, F, members = [], [], []
    for d in run_dirs:
        out = predict(load_potential(Path(d) / "model"), test, batch_size=64)
        E.append(np.array([o["energy"] for o in out]))
        F.append(np.stack([o["forces"] for o in out]))
        members.append({"run_dir": str(d), **errors(E[-1], F[-1], test)})
        jax.clear_caches()
    mae = np.array([m["force_mae_meV_per_A"] for m in members])
    return {"members": members, "committee": errors(np.mean(E, 0), np.mean(F, 0), test),
            "member_force_mae_mean": float(mae.mean()),
            "member_force_mae_std": float(mae.std(ddof=1)) if len(mae) > 1 else None,
            "n_test": len(test), "machine": machine_info()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("molecule", choices=MOLECULES)
    ap.add_argument("run_dirs", nargs="+", help="run directories with a saved model/ (rmd17.py runs)")
    ap.add_argument("--results-dir", default=str(RESULTS))
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    dirs = [Path(d) if Path(d).is_absolute() else ROOT / d for d in args.run_dirs]
    entry = evaluate(args.molecule, dirs)
    update_results("rmd17_committee", args.molecule, entry, args.results_dir)
    rows = [{"model": Path(m["run_dir"]).name, **m} for m in entry["members"]]
    rows.append({"model": f"committee of {len(dirs)}", **entry["committee"]})
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
