"""PNG plots of sweeps and committee selections (matplotlib, Agg backend, written atomically).

Each function returns False (and writes nothing) when matplotlib is missing or there is nothing
to plot.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np

from jnnp.atomic import atomic_write_bytes

__all__ = ["plot_sweep", "plot_selection", "plot_committee_md"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: skipping plots", stacklevel=3)
        return None
    return plt


def _save(fig, plt, path) -> bool:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True


def _log_axis(values) -> bool:
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)], np.float64)
    return len(v) > 1 and bool(np.all(v > 0)) and v.max() / v.min() >= 10.0


def plot_sweep(rows: list[dict], parameters: list[str], path,
               metrics=(("val_energy_rmse", "energy RMSE [meV/atom]"), ("val_force_rmse", "force RMSE [meV/Å]"))) -> bool:
    """Validation error against each swept value: one column per parameter that takes more than
    one value, one row per metric.

    Every member is a dot at its value; the line joins the mean over the members sharing that
    value (i.e. averaged over the other swept parameters and seeds).
    """
    plt = _pyplot()
    metrics = [(k, t) for k, t in metrics if any(_finite(r.get(k)) for r in rows)]
    varied = [p for p in parameters if len({r[p] for r in rows}) > 1]
    parameters = varied or list(parameters)[:1]  # a parameter with one value says nothing
    if plt is None or not rows or not parameters or not metrics:
        return False
    fig, axes = plt.subplots(len(metrics), len(parameters), figsize=(4.2 * len(parameters), 3.2 * len(metrics)),
                             squeeze=False)
    for j, p in enumerate(parameters):
        xs = [r[p] for r in rows]
        for i, (key, title) in enumerate(metrics):
            ax = axes[i][j]
            ys = [r.get(key) for r in rows]
            ok = [_finite(y) for y in ys]
            ax.scatter([x for x, o in zip(xs, ok) if o], [y for y, o in zip(ys, ok) if o], s=14, alpha=0.6)
            levels = sorted({x for x, o in zip(xs, ok) if o})
            means = [np.mean([y for x, y, o in zip(xs, ys, ok) if o and x == v]) for v in levels]
            if levels:
                ax.plot(levels, means, "-", lw=1.2, label="mean")
            if _log_axis(xs):
                ax.set_xscale("log")
            if all(_finite(y) and y > 0 for y in ys) and len(ys) > 1 and max(ys) / min(ys) >= 10.0:
                ax.set_yscale("log")
            ax.set_xlabel(p)
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def plot_selection(scores, selected, path, ylabel: str = "disagreement") -> bool:
    """Committee disagreement of every candidate (by index), the selected ones marked."""
    plt = _pyplot()
    scores = np.asarray(scores, np.float64)
    if plt is None or scores.size == 0:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(len(scores)), scores, "-", lw=0.8, color="0.4", label="candidates")
    sel = np.asarray(selected, np.int64)
    ax.scatter(sel, scores[sel], color="C3", s=20, zorder=3, label=f"selected ({len(sel)})")
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_committee_md(thermo_csv, path, columns=None) -> bool:
    """Committee disagreement (and extrapolation counts) along an MD run from ``thermo.csv``:
    one panel per column in ``columns`` (default: every column starting with ``committee_`` or
    ``extrapolat``) against time [fs]."""
    import csv

    plt = _pyplot()
    with open(thermo_csv) as fh:
        rows = list(csv.DictReader(fh))
    if plt is None or not rows:
        return False
    cols = columns or [c for c in rows[0] if c.startswith(("committee_", "extrapolat"))]
    if not cols:
        return False
    t = np.array([float(r["time_fs"]) for r in rows])
    fig, axes = plt.subplots(len(cols), 1, figsize=(7, 2.4 * len(cols)), sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], cols):
        ax.plot(t, [float(r[c]) for r in rows], lw=1.0)
        ax.set_ylabel(c, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time [fs]")
    return _save(fig, plt, path)


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating)) and math.isfinite(float(v))
