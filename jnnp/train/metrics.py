"""Error metrics (meV/atom, meV/Å), per element and per system, and their files and plots.

`ErrorAccumulator` collects predictions batch by batch on the host; ``summary()`` gives

* ``energy_rmse``, ``energy_mae`` [meV/atom]: errors of E/N per structure;
* ``force_rmse``, ``force_mae`` [meV/Å]: over force components;
* ``stress_rmse``, ``stress_mae`` [meV/Å³] where stress labels exist;
* ``per_element[symbol]``: force errors of the atoms of that element;
* ``per_system[key]``: all of the above for the structures of each system (e.g. source file).

Files: `write_history_csv` (metrics.csv, one row per epoch), `write_rows_csv` (per-structure
errors, `ErrorAccumulator.structure_rows`), `write_json` (metrics.json),
`plot_learning_curve` and `plot_parity` (PNG, matplotlib with the Agg backend; skipped with a
warning when matplotlib is missing).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

from jnnp.atomic import atomic_write_text  # noqa: F401  (re-exported)
import numpy as np

from jnnp.data.elements import symbol

__all__ = ["ErrorAccumulator", "error_stats", "write_history_csv", "write_rows_csv", "write_json",
           "plot_learning_curve", "plot_parity", "atomic_write_text"]

MEV = 1000.0


def error_stats(err) -> dict:
    """``{"rmse", "mae", "max", "count"}`` of an error array (NaN for an empty one)."""
    err = np.asarray(err, dtype=np.float64).ravel()
    if err.size == 0:
        return {"rmse": math.nan, "mae": math.nan, "max": math.nan, "count": 0}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))),
            "max": float(np.max(np.abs(err))), "count": int(err.size)}


class ErrorAccumulator:
    """Collects per-structure energy and per-atom force errors from batch predictions.

    Args:
        elements: atomic numbers of the model (element index → symbol).
        systems: optional system key of each structure, indexed like ``Batch.index``.
    """

    def __init__(self, elements, systems=None):
        self.elements = tuple(int(z) for z in elements)
        self.systems = None if systems is None else list(systems)
        self.e_ref, self.e_pred, self.e_sys = [], [], []
        self.f_ref, self.f_pred, self.f_el, self.f_sys = [], [], [], []
        self.s_ref, self.s_pred, self.s_sys = [], [], []
        self.rows = {}   # structure index -> its atom count and positions in the lists above

    def add(self, batch, pred) -> None:
        """Add one batch (`jnnp.train.batch.Batch`, or a `jnnp.train.features.FeatureBatch` with
        energy predictions only) and its predictions (numpy or jax)."""
        e = np.asarray(pred["energy"], np.float64)
        f = np.asarray(pred["forces"], np.float64) if "forces" in pred else None
        st = np.asarray(pred["stress"], np.float64) if "stress" in pred else None
        species = np.asarray(batch.graph.species) if f is not None else None
        a0 = 0
        for k in range(batch.n_structures):
            if not batch.structure_mask[k]:
                continue
            n = int(batch.n_atoms[k])
            idx = int(batch.index[k])
            key = self.systems[idx] if self.systems is not None else ""
            row = self.rows.setdefault(idx, {"n_atoms": n})
            if batch.has_energy[k]:
                self.e_ref.append(batch.energy[k] / n)
                self.e_pred.append(e[k] / n)
                self.e_sys.append(key)
                row["e"] = len(self.e_ref) - 1
            if f is not None and batch.has_forces[k]:
                self.f_ref.append(batch.forces[a0:a0 + n])
                self.f_pred.append(f[a0:a0 + n])
                self.f_el.append(species[a0:a0 + n])
                self.f_sys.append([key] * n)
                row["f"] = len(self.f_ref) - 1
            if st is not None and batch.has_stress[k]:
                self.s_ref.append(batch.stress[k])
                self.s_pred.append(st[k])
                self.s_sys.append(key)
            a0 += n

    def arrays(self) -> dict:
        """Concatenated reference/predicted values: ``energy_ref``/``energy_pred`` [eV/atom],
        ``forces_ref``/``forces_pred`` (M, 3) [eV/Å], ``force_species`` (M,) element index,
        and stress (K, 3, 3) [eV/Å³]."""
        cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)
        return {"energy_ref": np.asarray(self.e_ref, np.float64),
                "energy_pred": np.asarray(self.e_pred, np.float64),
                "energy_system": np.asarray(self.e_sys, dtype=object),
                "forces_ref": cat(self.f_ref, (0, 3)), "forces_pred": cat(self.f_pred, (0, 3)),
                "force_species": cat(self.f_el, (0,)).astype(np.int64),
                "force_system": np.asarray([k for ks in self.f_sys for k in ks], dtype=object),
                "stress_ref": np.asarray(self.s_ref, np.float64).reshape(-1, 3, 3),
                "stress_pred": np.asarray(self.s_pred, np.float64).reshape(-1, 3, 3),
                "stress_system": np.asarray(self.s_sys, dtype=object)}

    def structure_rows(self, structures=None) -> list[dict]:
        """One row per structure evaluated, in index order: ``index`` (into the evaluated
        sequence), ``source`` and ``frame`` (from ``structures[index]`` when given), ``n_atoms``,
        ``energy_ref_eV_per_atom``, ``energy_pred_eV_per_atom``, ``energy_error_meV_per_atom``
        (pred − ref) and ``force_rmse_meV_per_A``; absent labels are empty. The file n2p2 writes
        as testpoints.out: where the outliers are."""
        out = []
        for idx in sorted(self.rows):
            r = self.rows[idx]
            s = structures[idx] if structures is not None else None
            row = {"index": idx, "source": s.source if s is not None else "",
                   "frame": s.index if s is not None else "", "n_atoms": r["n_atoms"],
                   "energy_ref_eV_per_atom": "", "energy_pred_eV_per_atom": "",
                   "energy_error_meV_per_atom": "", "force_rmse_meV_per_A": ""}
            if "e" in r:
                ref, pred = self.e_ref[r["e"]], self.e_pred[r["e"]]
                row.update(energy_ref_eV_per_atom=ref, energy_pred_eV_per_atom=pred,
                           energy_error_meV_per_atom=(pred - ref) * MEV)
            if "f" in r:
                diff = self.f_pred[r["f"]] - self.f_ref[r["f"]]
                row["force_rmse_meV_per_A"] = float(np.sqrt(np.mean(diff**2))) * MEV
            out.append(row)
        return out

    @staticmethod
    def _summarise(a, e_sel, f_sel, s_sel) -> dict:
        out = {}
        es = error_stats((a["energy_pred"][e_sel] - a["energy_ref"][e_sel]) * MEV)
        out.update(energy_rmse=es["rmse"], energy_mae=es["mae"], energy_max=es["max"], n_energies=es["count"])
        fs = error_stats((a["forces_pred"][f_sel] - a["forces_ref"][f_sel]) * MEV)
        out.update(force_rmse=fs["rmse"], force_mae=fs["mae"], force_max=fs["max"],
                   n_force_components=fs["count"])
        if len(a["stress_ref"]):
            ss = error_stats((a["stress_pred"][s_sel] - a["stress_ref"][s_sel]) * MEV)
            out.update(stress_rmse=ss["rmse"], stress_mae=ss["mae"])
        return out

    def summary(self) -> dict:
        """Overall, per-element (forces) and per-system metrics (module docstring)."""
        a = self.arrays()
        all_e = np.ones(len(a["energy_ref"]), bool)
        all_f = np.ones(len(a["forces_ref"]), bool)
        all_s = np.ones(len(a["stress_ref"]), bool)
        out = self._summarise(a, all_e, all_f, all_s)
        out["per_element"] = {}
        for c, z in enumerate(self.elements):
            sel = a["force_species"] == c
            if sel.any():
                fs = error_stats((a["forces_pred"][sel] - a["forces_ref"][sel]) * MEV)
                out["per_element"][symbol(z)] = {"force_rmse": fs["rmse"], "force_mae": fs["mae"],
                                                 "n_force_components": fs["count"]}
        if self.systems is not None:
            keys = sorted(set(a["energy_system"]) | set(a["force_system"]) | set(a["stress_system"]))
            out["per_system"] = {str(k): self._summarise(a, a["energy_system"] == k, a["force_system"] == k,
                                                         a["stress_system"] == k) for k in keys}
        return out


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def write_json(obj, path) -> None:
    """Write ``obj`` as indented JSON (numpy scalars converted, NaN/inf → null), atomically."""
    atomic_write_text(path, json.dumps(_clean(obj), indent=2) + "\n")


def write_rows_csv(rows, path, columns=None) -> None:
    """``rows`` (list of flat dicts) as CSV with a header of ``columns`` (default: the first row's
    keys; other keys are left out), atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns if columns is not None else rows[0] if rows else []),
                       extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_history_csv(history, path) -> None:
    """One row per epoch record of ``history`` (list of flat dicts), columns in first-seen order."""
    cols = []
    for rec in history:
        for k, v in rec.items():
            if k not in cols and not isinstance(v, (dict, list, tuple)):
                cols.append(k)
    write_rows_csv([{k: _clean(rec.get(k)) for k in cols} for rec in history], path, cols)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: skipping plots (pip install 'jnnp[plot]')", stacklevel=3)
        return None
    return plt


def plot_learning_curve(history, path, keys=None) -> bool:
    """Loss and RMSE curves per epoch (log scale) to a PNG; False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None or not history:
        return False
    epochs = [r["epoch"] for r in history]
    panels = [("loss", ["train_loss", "val_loss"]),
              ("energy RMSE [meV/atom]", ["train_energy_rmse", "val_energy_rmse"]),
              ("force RMSE [meV/Å]", ["train_force_rmse", "val_force_rmse"])]
    if keys is not None:
        panels = [(k, [k]) for k in keys]
    panels = [(t, [k for k in ks if any(_finite(r.get(k)) for r in history)]) for t, ks in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, (title, ks) in zip(axes[0], panels):
        for k in ks:
            ys = [r.get(k) for r in history]
            ok = [_finite(y) and y > 0 for y in ys]
            ax.plot([e for e, o in zip(epochs, ok) if o], [y for y, o in zip(ys, ok) if o], label=k)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return True


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))


def _savefig(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_parity(acc: ErrorAccumulator, path, title: str = "") -> bool:
    """Energy (per atom) and force parity plots side by side to a PNG (False: not written)."""
    plt = _pyplot()
    if plt is None:
        return False
    a = acc.arrays()
    if not len(a["energy_ref"]) and not len(a["forces_ref"]):
        return False
    s = acc.summary()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, ref, pred, unit, name, rmse in (
            (axes[0], a["energy_ref"], a["energy_pred"], "eV/atom", "energy", s["energy_rmse"]),
            (axes[1], a["forces_ref"].ravel(), a["forces_pred"].ravel(), "eV/Å", "force", s["force_rmse"])):
        if len(ref):
            ax.scatter(ref, pred, s=4, alpha=0.5)
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {name} [{unit}]")
        ax.set_ylabel(f"predicted {name} [{unit}]")
        ax.set_title(f"{title} {name}: RMSE {rmse:.3g} m{unit}".strip())
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return True
