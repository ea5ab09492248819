"""Query by committee: pick the K structures the committee disagrees on most, write them for DFT.

Scores (``by``), from `jnnp.ensemble.committee.committee_predict` statistics:

* ``"force"``: max_i σ_F,i [eV/Å], the largest per-atom force disagreement (Schran et al. 2020);
* ``"force_mean"``: mean_i σ_F,i [eV/Å];
* ``"energy"``: σ_E / N [eV/atom].

`select_top_k` takes the K highest scores, optionally at least ``min_separation`` frames apart
(consecutive MD frames are nearly the same structure, so labelling both adds little).
`write_selection` writes the chosen structures *without* labels (any energies/forces a
trajectory file carries are model predictions, not reference data) as extended XYZ and n2p2
``input.data`` (placeholder zeros for energy and forces, which n2p2 requires, and a comment line
saying so), plus ``selection.csv``/``selection.json`` and a plot of the scores.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from jnnp.atomic import atomic_write_text

__all__ = ["SCORES", "Selection", "disagreement_scores", "select_top_k", "query_by_committee", "write_selection"]

SCORES = ("force", "force_mean", "energy")
_UNITS = {"force": "eV/Å", "force_mean": "eV/Å", "energy": "eV/atom"}


def disagreement_scores(stats: list[dict], by: str = "force") -> np.ndarray:
    """(S,) score of each structure's committee statistics (module docstring)."""
    if by not in SCORES:
        raise ValueError(f"unknown disagreement score {by!r}; expected one of {SCORES}")
    if by == "force":
        return np.array([float(np.max(s["force_disagreement"])) for s in stats])
    if by == "force_mean":
        return np.array([float(np.mean(s["force_disagreement"])) for s in stats])
    return np.array([float(s["energy_std"]) / len(s["force_disagreement"]) for s in stats])


def select_top_k(scores, k: int, min_separation: int = 0) -> np.ndarray:
    """Indices of the ``k`` largest scores, highest first; with ``min_separation`` > 0 a candidate
    closer than that many frames to an already chosen one is skipped (greedy). Non-finite scores
    (NaN) rank first: a diverged prediction is the most urgent frame to label."""
    scores = np.asarray(scores, np.float64)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    key = np.where(np.isfinite(scores), scores, np.inf)
    order = np.argsort(-key, kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) == k:
            break
        if min_separation > 0 and any(abs(int(i) - j) < min_separation for j in chosen):
            continue
        chosen.append(int(i))
    return np.asarray(chosen, np.int64)


@dataclasses.dataclass
class Selection:
    """Result of `query_by_committee`: ``indices`` (K,) chosen (highest score first), ``scores``
    (S,) of every candidate, the score kind ``by``, and the candidates' statistics summary
    ``energy_std`` (S,) [eV] and ``force_max`` (S,) [eV/Å]."""

    indices: np.ndarray
    scores: np.ndarray
    by: str
    energy_std: np.ndarray
    force_max: np.ndarray

    def rows(self, structures) -> list[dict]:
        return [{"rank": r + 1, "index": int(i), "source": structures[i].provenance, "score": float(self.scores[i]),
                 "energy_std_eV": float(self.energy_std[i]), "force_disagreement_max_eV_per_A": float(self.force_max[i])}
                for r, i in enumerate(self.indices)]


def query_by_committee(committee, structures, k: int, *, by: str = "force", min_separation: int = 0,
                       batch_size: int = 16) -> Selection:
    """Score every structure with the committee and select the ``k`` most uncertain."""
    from jnnp.ensemble.committee import committee_predict

    structures = list(structures)
    stats = committee_predict(committee, structures, batch_size=batch_size)
    scores = disagreement_scores(stats, by)
    return Selection(indices=select_top_k(scores, k, min_separation), scores=scores, by=by,
                     energy_std=np.array([float(s["energy_std"]) for s in stats]),
                     force_max=np.array([float(np.max(s["force_disagreement"])) for s in stats]))


def _atomic_file(path: Path, writer) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` (a reader never sees a torn file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_selection(structures, selection: Selection, out_dir, *, formats=("extxyz", "n2p2"),
                    length_unit: str = "angstrom", energy_unit: str = "eV", plot: bool = True) -> dict:
    """Write the selected structures (unlabelled) and the selection table into ``out_dir``.

    Files: ``selected.extxyz``, ``selected.input.data`` (n2p2; lengths/energies in the given
    units), ``selection.csv``, ``selection.json`` and ``selection.png``. Returns name → path.
    """
    from jnnp.data.write import write_extxyz, write_n2p2
    from jnnp.ensemble.plots import plot_selection
    from jnnp.train.metrics import write_history_csv, write_json

    bad = set(formats) - {"extxyz", "n2p2"}
    if bad:
        raise ValueError(f"unknown output format(s) {sorted(bad)}; expected 'extxyz' and/or 'n2p2'")
    out_dir = Path(out_dir)
    structures = list(structures)
    rows = selection.rows(structures)
    unit = _UNITS[selection.by]
    chosen = []
    for row in rows:
        s = structures[row["index"]]
        note = (f"query-by-committee rank {row['rank']}: {row['source']}, {selection.by} disagreement "
                f"{row['score']:.6g} {unit}; no reference labels (compute them)")
        chosen.append(s.replace(energy=None, forces=None, stress=None, comment=note))
    paths = {}
    if "extxyz" in formats:
        paths["extxyz"] = out_dir / "selected.extxyz"
        _atomic_file(paths["extxyz"], lambda p: write_extxyz(p, chosen))
    if "n2p2" in formats:
        paths["n2p2"] = out_dir / "selected.input.data"
        _atomic_file(paths["n2p2"], lambda p: write_n2p2(p, chosen, length_unit, energy_unit,
                                                         allow_missing_labels=True))
    paths["csv"] = out_dir / "selection.csv"
    write_history_csv(rows, paths["csv"]) if rows else atomic_write_text(paths["csv"], "")
    paths["json"] = out_dir / "selection.json"
    write_json({"by": selection.by, "unit": unit, "k": len(rows), "selected": rows,
                "scores": selection.scores.tolist(), "sources": [s.provenance for s in structures]}, paths["json"])
    if plot and plot_selection(selection.scores, selection.indices, out_dir / "selection.png",
                               ylabel=f"{selection.by} disagreement [{unit}]"):
        paths["png"] = out_dir / "selection.png"
    return paths
