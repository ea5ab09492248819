"""One config, one command: data → split → descriptors → potential → training → test → MD.

`train_from_config` is what ``jnnp train CONFIG.yaml`` runs. The run directory receives the
model (``model/``, loadable without the training data), training checkpoints, ``metrics.csv``,
``metrics.json``, ``test_metrics.json``, learning-curve and parity plots, ``split.json`` and, when
the config has an ``md`` section, a short MD run in ``md/``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np

from jnnp.config.schema import RunConfig
from jnnp.data import Dataset, read
from jnnp.descriptors.grids import symmetry_function_grid
from jnnp.model.extrapolation import extrapolation_observables_or_none
from jnnp.model.potential import PotentialSpec, init_potential

__all__ = ["build_potential_spec", "load_data", "train_from_config"]


def load_data(cfg: RunConfig):
    """(train, validation, test, split record) from the config's data section."""
    from jnnp.train.splits import make_split

    d = cfg.data
    paths = [d.path] if isinstance(d.path, str) else d.path
    ds = Dataset([s for p in paths for s in read(p, format=d.format, length_unit=d.length_unit,
                                                 energy_unit=d.energy_unit, index=d.index)])
    sp = d.split
    test_fraction = 0.0 if d.test_path else sp.test
    split = make_split(ds, validation=sp.validation, test=test_fraction, seed=sp.seed, per_system=sp.per_system,
                       train_indices=sp.train_indices, validation_indices=sp.validation_indices,
                       test_indices=sp.test_indices)
    train, val, test = split.apply(ds)
    if d.test_path:
        test = read(d.test_path, format=d.format, length_unit=d.length_unit, energy_unit=d.energy_unit)
    return list(train), list(val), list(test), split


def build_potential_spec(cfg: RunConfig, elements, train=None) -> PotentialSpec:
    """PotentialSpec from the model section: a descriptor grid for ``elements``, an n2p2 set, or
    (``descriptor.select``) the functions of the grid chosen on the training structures ``train``
    by CUR / farthest-point sampling (deterministic: the same training data give the same set)."""
    m = cfg.model
    dc = m.descriptor
    if dc.kind == "n2p2":
        from jnnp.io.n2p2 import parse_input_nn

        desc = parse_input_nn(dc.input_nn, dc.length_unit or "angstrom", "eV")[0].descriptor
    else:
        desc = symmetry_function_grid(elements, dc.cutoff, n_radial=dc.n_radial, radial_mode=dc.radial_mode,
                                      r_min=dc.r_min, angular_eta=tuple(dc.angular_eta), zeta=tuple(dc.zeta),
                                      lambdas=tuple(dc.lambdas), angular_type=dc.angular_type,
                                      angular_cutoff=dc.angular_cutoff, cutoff_type=dc.cutoff_type)
        if dc.select is not None:
            desc = _select_from_pool(desc, dc, train)
    acts = (m.activation,) * len(m.hidden) + ("l",)
    return PotentialSpec(descriptor=desc, hidden=tuple(m.hidden), activations=acts, scaling=m.scaling)


def _select_from_pool(pool, dc, train):
    """``dc.select_n`` functions per element of ``pool`` by ``dc.select`` on the atoms of the
    training structures (``dc.select_frames`` of them, evenly spaced)."""
    from jnnp.hyper.select import feature_matrix, select_functions

    if not train:
        raise ValueError("model.descriptor.select chooses functions on the training structures: "
                         "pass them to build_potential_spec (train=...)")
    if dc.select_n > min(pool.n_features):
        raise ValueError(f"model.descriptor.select_n = {dc.select_n} exceeds the grid's "
                         f"{dict(zip(pool.elements, pool.n_features))} functions per element")
    frames = list(train)
    if dc.select_frames is not None and dc.select_frames < len(frames):
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, dc.select_frames).round().astype(int)]
    return select_functions(pool, feature_matrix(pool, frames), dc.select_n, dc.select)[0]


def train_settings(cfg: RunConfig):
    from jnnp.train.loop import TrainSettings

    return TrainSettings(**cfg.train.model_dump())


def train_from_config(cfg: RunConfig, *, resume: bool = False, progress: bool = True, callback=None) -> dict:
    """Run the whole pipeline of ``cfg``; returns a summary dict (also in ``summary.json``).

    ``callback`` is passed to `jnnp.train.loop.fit` (called after every step and epoch). With
    ``data.split.per_system``, validation and test metrics are also reported per system (source).
    """
    from jnnp.train.checkpoint import save_model
    from jnnp.train.loop import evaluate, fit
    from jnnp.train.splits import system_keys

    if cfg.data is None:
        raise ValueError("the config has no 'data' section to train on")
    dtype = jax.numpy.float64 if cfg.model.precision == "float64" else jax.numpy.float32
    if dtype == jax.numpy.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 training needs jax.config.update('jax_enable_x64', True)")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    t0 = time.perf_counter()
    train, val, test, split = load_data(cfg)
    (run_dir / "split.json").write_text(json.dumps(split.to_dict()))
    elements = sorted({int(z) for s in train + val + test for z in s.numbers})
    spec = build_potential_spec(cfg, elements, train)
    pot = init_potential(spec, jax.random.PRNGKey(cfg.train.seed), dtype=dtype)
    if progress:
        select = cfg.model.descriptor.select
        chosen = f" (chosen from the grid by {select})" if select else ""
        print(f"data: {len(train)} train / {len(val)} validation / {len(test)} test structures; "
              f"elements {elements}; {spec.descriptor.n_features} symmetry functions per element{chosen}; "
              f"network {spec.hidden}")
    per_system = cfg.data.split.per_system
    settings = train_settings(cfg)
    pot, history = fit(pot, train, val, settings, run_dir, resume=resume, progress=progress,
                       split=split.to_dict(), callback=callback,
                       systems=system_keys(val) if per_system else None)
    save_model(run_dir / "model", pot, metadata={"config": cfg.name, "elements": elements})
    summary = {"name": cfg.name, "n_train": len(train), "n_validation": len(val), "n_test": len(test),
               "train_wall_s": time.perf_counter() - t0}
    if test:
        # padded like the validation batches, so that their compiled program is reused
        summary["test"] = evaluate(pot, test, run_dir=run_dir, name="test",
                                   batch_size=settings.validation_batch_size, like=val,
                                   cache_dir=run_dir / "cache" if cfg.train.cache_graphs else None,
                                   systems=system_keys(test) if per_system else None)
        if progress:
            _print_metrics("test", summary["test"])
    if cfg.md is not None:
        from jnnp.md.simulate import run_md

        md = cfg.md
        start = (read(md.structure, length_unit=md.length_unit, energy_unit=md.energy_unit)[md.structure_index]
                 if md.structure else (test or val or train)[0])
        summary["md"] = run_md(pot, start, md, run_dir / "md", progress=progress,
                               observables=extrapolation_observables_or_none(pot))
        if progress:
            s = summary["md"]
            drift = s.get("energy_drift", {}).get("slope_eV_per_atom_per_ps")
            print(f"md: {s['steps']} steps of {md.timestep_fs} fs, mean T {s['temperature_mean_K']:.1f} K, "
                  f"energy drift {drift:.3g} eV/atom/ps, outputs in {run_dir / 'md'}")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
    return summary


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _print_metrics(name, m):
    keys = [k for k in m if any(t in k for t in ("rmse", "mae"))]
    print(f"{name}: " + ", ".join(f"{k} {m[k]:.3f}" for k in keys if isinstance(m[k], (int, float))))
