"""Hyperparameter sweeps in one compiled program: ``jnnp sweep CONFIG.yaml``.

`run_sweep` reads the data and builds the potential spec exactly as ``jnnp train`` does
(`jnnp.pipeline`), expands the sweep section into members (`jnnp.ensemble.members.member_grid`),
trains them together (`jnnp.ensemble.train.train_members`) and writes into the run directory:

* ``sweep.csv`` / ``sweep.json``: one row per member — the swept values, the subset size, best
  epoch, and the training/validation errors at the best epoch (energy RMSE [meV/atom], force
  RMSE [meV/Å]) plus test errors when the split has a test set;
* ``sweep.png``: validation error against each swept value (`jnnp.ensemble.plots.plot_sweep`);
* ``history.csv``: every member's learning curve (long format: member, epoch, ...);
* ``members/``: the best model of every member (a `jnnp.ensemble.committee` folder);
* ``config.json``, ``split.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.ensemble.members import (HYPERPARAMETERS, Member, init_members, member_arrays, member_grid,
                                   subset_masks)
from jnnp.ensemble.train import _Sums, make_vmapped_eval_fn, train_members

__all__ = ["MembersRun", "member_errors", "prepare_members", "run_sweep", "train_prepared"]


@dataclasses.dataclass
class MembersRun:
    """Data, spec, settings, members and batchers of a vectorised training run."""

    spec: object
    settings: object
    members: list
    masks: np.ndarray
    train: list
    val: list
    test: list
    split: object
    train_batcher: object
    val_batcher: object
    dtype: object
    run_dir: Path


def prepare_members(run_cfg, members_fn, *, progress: bool = True) -> MembersRun:
    """Load data and build spec, settings and batchers of ``run_cfg`` (a `RunConfig`);
    ``members_fn(train_settings) -> list[Member]`` gives the members."""
    from jnnp.pipeline import build_potential_spec, load_data, train_settings
    from jnnp.train.batch import Batcher

    dtype = jnp.float64 if run_cfg.model.precision == "float64" else jnp.float32
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 training needs jax.config.update('jax_enable_x64', True)")
    run_dir = Path(run_cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train, val, test, split = load_data(run_cfg)
    (run_dir / "split.json").write_text(json.dumps(split.to_dict()))
    elements = sorted({int(z) for s in train + val + test for z in s.numbers})
    spec = build_potential_spec(run_cfg, elements, train)
    settings = train_settings(run_cfg)
    members = list(members_fn(settings))
    masks = subset_masks(members, len(train))
    cache = run_dir / "cache" if settings.cache_graphs else None
    train_b = Batcher(spec, train, settings.batch_size, cache_dir=cache, growth=settings.growth, progress=progress)
    val_b = (Batcher(spec, val, settings.eval_batch_size or settings.batch_size, cache_dir=cache,
                     growth=settings.growth) if val else None)
    if progress:
        print(f"data: {len(train)} train / {len(val)} validation / {len(test)} test structures; elements "
              f"{elements}; {spec.descriptor.n_features} symmetry functions per element; network {spec.hidden}; "
              f"{len(members)} members trained together")
    return MembersRun(spec, settings, members, masks, train, val, test, split, train_b, val_b, dtype, run_dir)


def train_prepared(run: MembersRun, *, progress: bool = True):
    """Initialise (normalise) and train the members of ``run``: (best stacked params, history)."""
    s = run.settings
    params0 = init_members(run.spec, run.members, run.train, masks=run.masks, batcher=run.train_batcher,
                           dtype=run.dtype, normalize=s.normalize, energy_scale=s.energy_scale)
    hp = member_arrays(run.members, s.learning_rate, s.stress_weight)
    return train_members(run.spec, params0, hp, run.train, run.val, s, masks=run.masks,
                         train_batcher=run.train_batcher, val_batcher=run.val_batcher, progress=progress)


def member_errors(spec, params, structures, *, batch_size: int = 16, batcher=None) -> dict:
    """(M,) energy RMSE [meV/atom] and force RMSE [meV/Å] of stacked ``params`` on ``structures``."""
    from jnnp.train.batch import Batcher

    M = jax.tree.leaves(params)[0].shape[0]
    if not structures:
        return {"energy_rmse": [np.nan] * M, "force_rmse": [np.nan] * M}
    batcher = batcher or Batcher(spec, structures, batch_size)
    fn = make_vmapped_eval_fn(spec)
    sums = _Sums(M)
    for batch in batcher.batches():
        sums.add(jax.device_get(fn(params, batch)))
    return {"energy_rmse": sums.rmse_mev("energy").tolist(), "force_rmse": sums.rmse_mev("force").tolist()}


def run_sweep(cfg, *, progress: bool = True) -> dict:
    """Run the sweep of a `jnnp.ensemble.config.SweepConfig`; returns the summary dict."""
    from jnnp.ensemble.committee import Committee, save_committee
    from jnnp.ensemble.plots import plot_sweep
    from jnnp.train.metrics import write_history_csv, write_json

    swept = cfg.sweep.parameters.values()

    def members_fn(settings):
        base = Member(seed=settings.seed, learning_rate=settings.learning_rate,
                      force_weight=settings.force_weight, energy_weight=settings.energy_weight)
        return member_grid(base, swept, cfg.sweep.mode)

    t0 = time.perf_counter()
    run = prepare_members(cfg.run_config(), members_fn, progress=progress)
    (run.run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    best, history = train_prepared(run, progress=progress)
    train_wall = time.perf_counter() - t0
    test = member_errors(run.spec, best, run.test, batch_size=run.settings.eval_batch_size or run.settings.batch_size)
    has_val = run.val_batcher is not None
    rows = []
    for k, m in enumerate(run.members):
        row = {"member": k, **{p: getattr(m, p) for p in HYPERPARAMETERS}, "n_train": int(run.masks[k].sum()),
               "best_epoch": history.best_epoch[k], "best_loss": history.best_loss[k]}
        for key in ("train_energy_rmse", "train_force_rmse") + (("val_energy_rmse", "val_force_rmse") if has_val else ()):
            row[key] = history.at_best(key)[k]
        if run.test:
            row["test_energy_rmse"], row["test_force_rmse"] = test["energy_rmse"][k], test["force_rmse"][k]
        if k in history.failures:
            row["failure"] = history.failures[k]
        rows.append(row)
    out = run.run_dir
    write_history_csv(rows, out / "sweep.csv")
    write_history_csv(history.rows(), out / "history.csv")
    metrics = ((("val_energy_rmse", "validation energy RMSE [meV/atom]"), ("val_force_rmse", "validation force RMSE [meV/Å]"))
               if has_val else (("train_energy_rmse", "training energy RMSE [meV/atom]"),
                                ("train_force_rmse", "training force RMSE [meV/Å]")))
    plotted = run.settings.plots and plot_sweep(rows, list(swept), out / "sweep.png", metrics=metrics)
    save_committee(out / "members", Committee(run.spec, best), metadata={"sweep": cfg.name, "members": rows})
    summary = {"name": cfg.name, "mode": cfg.sweep.mode, "parameters": swept, "n_members": len(run.members),
               "n_train": len(run.train), "n_validation": len(run.val), "n_test": len(run.test),
               "epochs_run": len(history.epochs), "stop_reason": history.stop_reason,
               "train_wall_s": train_wall, "failures": history.failures, "members": rows,
               "files": {"table": "sweep.csv", "history": "history.csv", "models": "members",
                         **({"plot": "sweep.png"} if plotted else {})}}
    write_json(summary, out / "sweep.json")
    if progress:
        key = "val_force_rmse" if has_val else "train_force_rmse"
        best_k = int(np.nanargmin([r[key] for r in rows]))
        print(f"sweep: {len(rows)} members in {train_wall:.1f} s; lowest {key} {rows[best_k][key]:.4g} meV/Å for "
              + ", ".join(f"{p}={rows[best_k][p]}" for p in swept) + f"; table {out / 'sweep.csv'}")
    return summary
