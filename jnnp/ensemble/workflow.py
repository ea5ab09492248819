"""Committee workflow: ``jnnp committee CONFIG.yaml``.

train M members together (seeds ``committee.seed + k``, each on a random ``train_fraction`` of the
training split) → save the committee (``committee/``) → test errors of every member and of the
committee mean, with the mean predicted disagreement beside them (``test_metrics.json``) →
optional MD driven by the committee mean (or member 0) with the committee disagreement and the
extrapolation counts logged per sampled step as ``thermo.csv`` columns (``md/``, plot
``md/committee.png``) → optional query by committee on the MD trajectory or a given candidate file
(``selection/``, see `jnnp.ensemble.select`). Everything is summarised in ``summary.json``.
"""

from __future__ import annotations

import inspect
import time

import numpy as np

from jnnp.ensemble.members import Member

__all__ = ["committee_test_metrics", "run_committee", "run_committee_md"]


def committee_test_metrics(committee, structures, *, batch_size: int = 16) -> dict:
    """Errors of the committee mean and of each member on labelled ``structures``.

    Returns ``mean`` (``energy_rmse`` [meV/atom], ``force_rmse`` [meV/Å]), ``members`` (lists of
    both), and the committee's own uncertainty on the same structures: ``energy_std_mean``
    [meV/atom] and ``force_std_rms`` [meV/Å] (RMS over force components of σ_F,iα), to compare
    with the actual errors.
    """
    from jnnp.ensemble.committee import committee_predict

    stats = committee_predict(committee, structures, batch_size=batch_size)
    M = committee.n_members
    e_err, f_err, e_mem, f_mem, e_std, f_std = [], [], [[] for _ in range(M)], [[] for _ in range(M)], [], []
    for s, st in zip(structures, stats):
        n = s.n_atoms
        if s.energy is not None:
            e_err.append((st["energy_mean"] - s.energy) / n)
            for k in range(M):
                e_mem[k].append((st["members"]["energy"][k] - s.energy) / n)
        if s.forces is not None:
            f_err.append((st["forces_mean"] - s.forces).ravel())
            for k in range(M):
                f_mem[k].append((st["members"]["forces"][k] - s.forces).ravel())
        e_std.append(st["energy_std"] / n)
        f_std.append(st["forces_std"].ravel())

    def rmse(x):
        x = np.concatenate([np.atleast_1d(v) for v in x]) if x else np.zeros(0)
        return float(np.sqrt(np.mean(x**2)) * 1000.0) if x.size else float("nan")

    return {"mean": {"energy_rmse": rmse(e_err), "force_rmse": rmse(f_err)},
            "members": {"energy_rmse": [rmse(x) for x in e_mem], "force_rmse": [rmse(x) for x in f_mem]},
            "energy_std_mean": float(np.mean(e_std) * 1000.0) if e_std else float("nan"),
            "force_std_rms": rmse(f_std), "n_structures": len(structures)}


def run_committee_md(committee, structure, md_cfg, run_dir, *, driver: str = "mean", ddof: int = 0,
                     progress: bool = True) -> dict:
    """MD of ``structure`` driven by the committee mean (`mean_potential`) or member 0, logging the
    committee disagreement (`committee_observables`) and extrapolation counts
    (`jnnp.model.extrapolation.extrapolation_observables`, when the members store statistics) in
    ``thermo.csv``; writes ``committee.png``. Returns run_md's summary plus ``committee``: max and
    mean of each logged disagreement column and the total extrapolation count."""
    from jnnp.ensemble.committee import committee_observables, mean_potential
    from jnnp.ensemble.plots import plot_committee_md
    from jnnp.md.simulate import run_md
    from jnnp.model.extrapolation import extrapolation_observables, has_statistics

    if "observables" not in inspect.signature(run_md).parameters:
        raise RuntimeError("jnnp.md.simulate.run_md has no 'observables' argument in this version: committee "
                           "disagreement cannot be logged along MD")
    pot = mean_potential(committee) if driver == "mean" else committee.member(0)
    obs = committee_observables(committee, ddof=ddof)
    member0 = committee.member(0)
    if has_statistics(member0):
        obs.update(extrapolation_observables(member0))
    summary = run_md(pot, structure, md_cfg, run_dir, progress=progress, observables=obs)
    thermo = _read_thermo(run_dir / "thermo.csv")
    summary["committee"] = {
        "driver": driver,
        **{f"{k}_max": float(np.max(thermo[k])) for k in obs if k.startswith("committee_") and k in thermo},
        **{f"{k}_mean": float(np.mean(thermo[k])) for k in obs if k.startswith("committee_") and k in thermo}}
    if "extrapolations" in thermo:
        summary["committee"]["extrapolations_total"] = int(np.sum(thermo["extrapolations"]))
        summary["committee"]["samples_with_extrapolation"] = int(np.sum(thermo["extrapolations"] > 0))
    plot_committee_md(run_dir / "thermo.csv", run_dir / "committee.png")
    return summary


def _read_thermo(path) -> dict:
    import csv

    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    # empty cells (e.g. pressure of a free molecule) read as NaN
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
            for k in (rows[0] if rows else {})}


def run_committee(cfg, *, progress: bool = True) -> dict:
    """Run the workflow of a `jnnp.ensemble.config.CommitteeConfig` (module docstring)."""
    from jnnp.data import read
    from jnnp.ensemble.committee import Committee, save_committee
    from jnnp.ensemble.select import query_by_committee, write_selection
    from jnnp.ensemble.sweep import prepare_members, train_prepared
    from jnnp.model.extrapolation import extrapolation_report
    from jnnp.train.metrics import write_history_csv, write_json

    c = cfg.committee

    def members_fn(s):
        return [Member(seed=c.seed + k, learning_rate=s.learning_rate, force_weight=s.force_weight,
                       energy_weight=s.energy_weight, train_fraction=c.train_fraction) for k in range(c.members)]

    t0 = time.perf_counter()
    run = prepare_members(cfg.run_config(), members_fn, progress=progress)
    out = run.run_dir
    (out / "config.json").write_text(cfg.model_dump_json(indent=1))
    best, history = train_prepared(run, progress=progress)
    committee = Committee(run.spec, best)
    save_committee(out / "committee", committee, metadata={"config": cfg.name, "seeds": [m.seed for m in run.members],
                                                           "train_fraction": c.train_fraction})
    write_history_csv(history.rows(), out / "history.csv")
    summary = {"name": cfg.name, "members": c.members, "n_train": len(run.train), "n_validation": len(run.val),
               "n_test": len(run.test), "train_wall_s": time.perf_counter() - t0, "stop_reason": history.stop_reason,
               "best_epoch": history.best_epoch, "failures": history.failures}
    if run.test:
        summary["test"] = committee_test_metrics(committee, run.test)
        rep = extrapolation_report(committee.member(0), run.test)
        summary["test"]["extrapolation"] = rep.to_dict()
        write_json(summary["test"], out / "test_metrics.json")
        if progress:
            t = summary["test"]
            print(f"test: committee mean E {t['mean']['energy_rmse']:.3g} meV/atom, F {t['mean']['force_rmse']:.3g} "
                  f"meV/Å; members F {min(t['members']['force_rmse']):.3g}…{max(t['members']['force_rmse']):.3g} "
                  f"meV/Å; predicted σ_F {t['force_std_rms']:.3g} meV/Å")
            for line in rep.lines():
                print(line)
    trajectory = None
    if cfg.md is not None:
        md = cfg.md
        start = (read(md.structure, length_unit=md.length_unit, energy_unit=md.energy_unit)[md.structure_index]
                 if md.structure else (run.test or run.val or run.train)[0])
        summary["md"] = run_committee_md(committee, start, md, out / "md", driver=c.md_driver, ddof=c.ddof,
                                         progress=progress)
        trajectory = out / "md" / f"trajectory.{md.trajectory_format}"
    if cfg.select is not None:
        sel = cfg.select
        path = sel.candidates or trajectory
        candidates = list(read(path, length_unit=sel.length_unit, energy_unit=sel.energy_unit)
                          if sel.candidates else read(path))
        k = min(sel.k, len(candidates))
        selection = query_by_committee(committee, candidates, k, by=sel.by, min_separation=sel.min_separation)
        files = write_selection(candidates, selection, out / "selection", formats=tuple(sel.formats),
                                length_unit=sel.output_length_unit, energy_unit=sel.output_energy_unit)
        summary["selection"] = {"candidates": str(path), "n_candidates": len(candidates),
                                "selected": selection.rows(candidates), "files": {k: str(v) for k, v in files.items()}}
        if progress:
            print(f"selection: {len(selection.indices)} of {len(candidates)} structures by {sel.by} disagreement "
                  f"→ {out / 'selection'}")
    write_json(summary, out / "summary.json")
    return summary
