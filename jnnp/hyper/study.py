"""A fair comparison of symmetry-function sets of one size: ``jnnp hyper CONFIG.yaml``.

For the data of the config (train / validation / test split) every method produces a descriptor
set with exactly the per-element size n of the standard grid (``grid`` section):

* ``grid``: the standard grid itself (shifted or centred radial functions, Behler angular set);
* ``grid_centered``: the same grid with the other radial placement rule;
* ``hand``: a hand-chosen set in n2p2 syntax (``hand.path``), as n2p2/RuNNer users write them
  (centred and shell-shifted radial functions per element pair, a few angular ones per triple);
  it must have the grid's size unless ``hand.match_grid_size`` is false;
* ``cur`` / ``fps``: n functions per element selected from a large pool (`jnnp.hyper.select`)
  on the feature matrix of ``pool.frames`` training structures;
* ``ridge``: the grid's fields named in ``parameters`` optimised by Adam on the exact
  ridge-readout hypergradient of the validation loss (`jnnp.hyper.ridge`);
* ``unrolled``: the same with the K-step unrolled hypergradient through the network
  (`jnnp.hyper.unroll`, warm-started);
* ``learnable``: networks and functions trained jointly (`jnnp.hyper.learnable`).

Then each set is trained from scratch in the same way (``network``, ``train`` sections, every
seed of ``seeds``) with `jnnp.train.fit`, and evaluated. The gradient methods see only the
training and validation structures; the **test** errors are the headline numbers (validation
errors are reported too, but the validation set was used to choose the descriptor set and the
best epoch). Wall times: the method's own time (selection or optimisation; the pool's feature
matrix, computed once, is counted in each selection method) and the training time, separately.

Outputs in ``run_dir``: ``study.json`` (config, per method and seed the errors [meV/atom,
meV/Å], times [s], the descriptor set), ``study.png`` (test force RMSE and wall time per
method), ``descriptors.png`` (centre and width of the radial functions per method) and one
training run folder per method and seed.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.descriptors.grids import symmetry_function_grid
from jnnp.descriptors.spec import DescriptorSpec
from jnnp.hyper.config import HyperStudyConfig
from jnnp.hyper.param import FieldTransform, SFParameterization
from jnnp.model.potential import PotentialSpec, init_potential
from jnnp.train.metrics import write_json

__all__ = [
    "describe",
    "grid_spec",
    "parameterization",
    "plot_study",
    "pool_spec",
    "potential_spec",
    "run_study",
]


# ----------------------------------------------------------------------------------------------
# Descriptor sets
# ----------------------------------------------------------------------------------------------

def grid_spec(cfg: HyperStudyConfig, elements, radial_mode: str | None = None) -> DescriptorSpec:
    """The standard grid of the ``grid`` section (optionally with another radial mode)."""
    g = cfg.grid
    return symmetry_function_grid(elements, g.cutoff, n_radial=g.n_radial, radial_mode=radial_mode or g.radial_mode,
                                  r_min=g.r_min, angular_eta=tuple(g.angular_eta), zeta=tuple(g.zeta),
                                  lambdas=tuple(g.lambdas), angular_type=g.angular_type,
                                  angular_cutoff=g.angular_cutoff, cutoff_type=g.cutoff_type, angular=g.angular)


def pool_spec(cfg: HyperStudyConfig, elements) -> DescriptorSpec:
    """The candidate pool: radial grids of every mode in ``pool.radial_modes`` (each (η, r_s)
    once) and the angular product grid, at the grid's cutoffs."""
    g, p = cfg.grid, cfg.pool
    return symmetry_function_grid(elements, g.cutoff, n_radial=p.n_radial, radial_mode=tuple(p.radial_modes),
                                  r_min=p.r_min, angular_eta=tuple(p.angular_eta), zeta=tuple(p.zeta),
                                  lambdas=tuple(p.lambdas), angular_type=g.angular_type,
                                  angular_cutoff=g.angular_cutoff, cutoff_type=g.cutoff_type, angular=g.angular)


def potential_spec(cfg: HyperStudyConfig, desc: DescriptorSpec) -> PotentialSpec:
    n = cfg.network
    return PotentialSpec(desc, hidden=tuple(n.hidden), activations=(n.activation,) * len(n.hidden) + ("l",),
                         scaling=n.scaling)


def parameterization(cfg: HyperStudyConfig, desc: DescriptorSpec) -> SFParameterization:
    """The learnable fields of ``parameters`` with the configured ranges."""
    par = cfg.parameters
    tf = {}
    if "rc" in par.fields:
        lo, hi = par.rc_range or (0.5 * cfg.grid.cutoff, 1.25 * cfg.grid.cutoff)
        tf["rc"] = FieldTransform("bounded", float(lo), float(hi))
    if "zeta" in par.fields:
        tf["zeta"] = FieldTransform("softplus", float(par.zeta_min))
    return SFParameterization.create(desc, tuple(par.fields), tf)


def describe(desc: DescriptorSpec) -> dict:
    """JSON-ready listing of a descriptor set: per element symbol, one dict per function."""
    from jnnp.data.elements import symbol

    out = {}
    for z, fs in zip(desc.elements, desc.functions):
        out[symbol(z)] = [{"type": sf.type, "neighbors": [symbol(e) for e in sf.neighbors], "eta": sf.eta,
                           "rs": sf.rs, "zeta": sf.zeta, "lam": sf.lam, "rc": sf.rc} for sf in fs]
    return out


# ----------------------------------------------------------------------------------------------
# Methods: each returns (descriptor spec, info dict); the time is measured by the caller
# ----------------------------------------------------------------------------------------------

def _dtype(cfg):
    return jnp.float64 if cfg.network.precision == "float64" else jnp.float32


def _method_grid(cfg, elements, train, val, progress, shared):
    return grid_spec(cfg, elements), {}


def _method_grid_centered(cfg, elements, train, val, progress, shared):
    other = "centered" if cfg.grid.radial_mode == "shifted" else "shifted"
    return grid_spec(cfg, elements, other), {"radial_mode": other}


def _method_hand(cfg, elements, train, val, progress, shared):
    from jnnp.io.n2p2 import read_symmetry_functions

    h = cfg.hand
    desc = read_symmetry_functions(h.path, elements, cutoff_type=cfg.grid.cutoff_type, length_unit=h.length_unit)
    size = grid_spec(cfg, elements).n_features
    if h.match_grid_size and tuple(desc.n_features) != tuple(size):
        raise ValueError(f"{h.path}: {list(desc.n_features)} functions per element (elements {list(desc.elements)}), "
                         f"but the grid has {list(size)}; a fair comparison needs the same size "
                         "(or set hand.match_grid_size: false)")
    return desc, {"path": h.path}


def _pool_features(cfg, elements, train, shared):
    """(pool spec, feature matrices, seconds to compute them, whether they were computed before):
    computed once per study."""
    reused = "pool" in shared
    if not reused:
        from jnnp.hyper.select import feature_matrix

        t0 = time.perf_counter()
        pool = pool_spec(cfg, elements)
        X = feature_matrix(pool, train[:cfg.pool.frames])
        shared["pool"] = (pool, X, time.perf_counter() - t0)
    return (*shared["pool"], reused)


def _method_select(kind):
    def run(cfg, elements, train, val, progress, shared):
        from jnnp.hyper.select import select_functions

        pool, X, features_s, reused = _pool_features(cfg, elements, train, shared)
        desc, picks = select_functions(pool, X, grid_spec(cfg, elements).n_features, kind)
        # the pool's feature matrix is computed once, but counted in every selection method's time
        return desc, {"picks": [list(map(int, p)) for p in picks], "pool_size": list(pool.n_features),
                      "pool_atoms": [int(x.shape[0]) for x in X], "pool_features_s": features_s,
                      "extra_s": features_s if reused else 0.0}
    return run


def _method_ridge(cfg, elements, train, val, progress, shared):
    from jnnp.hyper.learnable import make_learnable
    from jnnp.hyper.ridge import RidgeSettings, linear_spec, optimize_ridge
    from jnnp.hyper.stacked import stack_batches
    from jnnp.train.normalize import normalize_potential

    r = cfg.ridge
    grid = grid_spec(cfg, elements)
    param = parameterization(cfg, grid)
    spec = linear_spec(potential_spec(cfg, grid))
    pot, raw = make_learnable(init_potential(spec, jax.random.PRNGKey(cfg.seeds[0]), _dtype(cfg)), param)
    tr, va = train[:r.frames_train], val[:r.frames_validation]
    pot = normalize_potential(pot, tr)
    res = optimize_ridge(pot.spec, param, pot.params, raw, stack_batches(param.graph_spec, tr, r.batch_size),
                         stack_batches(param.graph_spec, va, r.batch_size),
                         RidgeSettings(alpha=r.alpha, energy_weight=r.energy_weight, force_weight=r.force_weight),
                         steps=r.steps, learning_rate=r.learning_rate, progress=progress)
    return param.to_spec(res.raw), {"history": res.history, "best_step": res.best_step}


def _method_unrolled(cfg, elements, train, val, progress, shared):
    from jnnp.hyper.learnable import make_learnable
    from jnnp.hyper.stacked import stack_batches
    from jnnp.hyper.unroll import UnrollSettings, optimize_unrolled
    from jnnp.train.normalize import normalize_potential

    u = cfg.unrolled
    grid = grid_spec(cfg, elements)
    param = parameterization(cfg, grid)
    pot, raw = make_learnable(init_potential(potential_spec(cfg, grid), jax.random.PRNGKey(cfg.seeds[0]),
                                             _dtype(cfg)), param)
    tr, va = train[:u.frames_train], val[:u.frames_validation]
    pot = normalize_potential(pot, tr)
    st = UnrollSettings(steps=u.inner_steps, optimizer=u.inner_optimizer, learning_rate=u.inner_learning_rate,
                        energy_weight=u.energy_weight, force_weight=u.force_weight)
    res = optimize_unrolled(pot.spec, param, pot.params, raw, stack_batches(param.graph_spec, tr, u.batch_size),
                            stack_batches(param.graph_spec, va, u.batch_size), st, outer_steps=u.outer_steps,
                            outer_learning_rate=u.outer_learning_rate, warm_start=u.warm_start, progress=progress)
    return param.to_spec(res.raw), {"history": res.history, "best_step": res.best_step}


def _method_learnable(cfg, elements, train, val, progress, shared):
    from jnnp.hyper.learnable import LearnableSettings, fit_learnable
    from jnnp.train.loop import evaluate

    lc = cfg.learnable
    grid = grid_spec(cfg, elements)
    param = parameterization(cfg, grid)
    pot = init_potential(potential_spec(cfg, grid), jax.random.PRNGKey(cfg.seeds[0]), _dtype(cfg))
    st = LearnableSettings(epochs=lc.epochs, batch_size=lc.batch_size, learning_rates=dict(lc.learning_rates),
                           refresh_scaling=lc.refresh_scaling, energy_weight=cfg.train.energy_weight,
                           force_weight=lc.force_weight, seed=cfg.seeds[0], clip_norm=cfg.train.clip_norm)
    res = fit_learnable(pot, param, train, val, st, progress=progress)
    joint = {"best_epoch": res.best_epoch, "history": res.history,
             "validation": _errors(evaluate(res.potential, val, plots=False))}
    return res.potential.spec.descriptor, {"joint_model": joint}


METHOD_RUNNERS = {"grid": _method_grid, "grid_centered": _method_grid_centered, "hand": _method_hand,
                  "cur": _method_select("cur"),
                  "fps": _method_select("fps"), "ridge": _method_ridge, "unrolled": _method_unrolled,
                  "learnable": _method_learnable}


def _errors(summary: dict) -> dict:
    keys = ("energy_rmse", "energy_mae", "force_rmse", "force_mae")
    return {k: summary.get(k) for k in keys}


# ----------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------

def run_study(cfg: HyperStudyConfig, *, progress: bool = True) -> dict:
    """Run every method of ``cfg`` and the common final training; returns the summary (also
    written to ``run_dir/study.json``)."""
    from jnnp.pipeline import load_data
    from jnnp.train.loop import TrainSettings, evaluate, fit

    dtype = _dtype(cfg)
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 needs jax.config.update('jax_enable_x64', True)")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train, val, test, _ = load_data(cfg)
    if not val:
        raise ValueError("the study needs validation structures (data.split.validation > 0)")
    elements = sorted({int(z) for s in train + val + test for z in s.numbers})
    size = grid_spec(cfg, elements).n_features
    settings = TrainSettings(**cfg.train.model_dump())
    if progress:
        print(f"study {cfg.name}: {len(train)} train / {len(val)} validation / {len(test)} test structures, "
              f"elements {elements}, {size} functions per element, methods {cfg.methods}", flush=True)
    summary = {"name": cfg.name, "config": cfg.model_dump(mode="json"), "elements": elements,
               "n_train": len(train), "n_validation": len(val), "n_test": len(test),
               "functions_per_element": list(size), "reported": "test" if test else "validation",
               "fairness": ("every descriptor set has the grid's size per element and is trained from scratch "
                            "with the same network, settings, data and seeds; the gradient methods used only the "
                            "training and validation structures"),
               "methods": {}}
    shared = {}     # work shared between methods (the pool's feature matrix)
    for name in cfg.methods:
        if progress:
            print(f"--- method {name}", flush=True)
        t0 = time.perf_counter()
        desc, info = METHOD_RUNNERS[name](cfg, elements, list(train), list(val), progress, shared)
        method_s = time.perf_counter() - t0 + info.pop("extra_s", 0.0)
        if desc.n_features != size and name != "hand":   # the hand set's size is checked on reading
            raise RuntimeError(f"method {name} produced {desc.n_features} functions per element, expected {size}")
        runs = []
        for seed in cfg.seeds:
            t1 = time.perf_counter()
            pot = init_potential(potential_spec(cfg, desc), jax.random.PRNGKey(seed), dtype)
            best, hist = fit(pot, train, val, dataclasses.replace(settings, seed=seed),
                             run_dir / name / f"seed{seed}", progress=progress)
            train_s = time.perf_counter() - t1
            # the validation batch size of fit: its compiled evaluation program is reused
            bs = settings.eval_batch_size or settings.batch_size
            rec = {"seed": seed, "train_s": train_s, "epochs": len(hist), "best_epoch": hist.best_epoch,
                   "validation": _errors(evaluate(best, val, batch_size=bs, plots=False))}
            if test:
                rec["test"] = _errors(evaluate(best, test, batch_size=bs, plots=False))
            runs.append(rec)
        summary["methods"][name] = {"method_s": method_s, "runs": runs, "aggregate": _aggregate(runs),
                                    "descriptor": describe(desc), **info}
        write_json(summary, run_dir / "study.json")
        # Every method compiles its own programs; XLA:CPU maps each compiled kernel's code
        # separately, and a long study reached the kernel's limit of 65530 mappings (LLVM:
        # "Cannot allocate memory", then a crash). Dropping the finished method's programs frees them.
        jax.clear_caches()
        if progress:
            a = summary["methods"][name]["aggregate"]
            print(f"{name}: {summary['reported']} force RMSE {a['force_rmse_mean']:.4g} ± {a['force_rmse_std']:.2g} "
                  f"meV/Å, method {method_s:.1f} s, training {a['train_s_mean']:.1f} s", flush=True)
    summary["wall_s"] = time.perf_counter() - t_start
    write_json(summary, run_dir / "study.json")
    plot_study(summary, run_dir / "study.png")
    plot_descriptors(summary, run_dir / "descriptors.png")
    return summary


def _aggregate(runs: list) -> dict:
    part = "test" if "test" in runs[0] else "validation"
    out = {}
    for k in ("force_rmse", "energy_rmse"):
        v = np.array([r[part][k] for r in runs], np.float64)
        out[f"{k}_mean"] = float(np.mean(v))
        out[f"{k}_std"] = float(np.std(v))
    vf = np.array([r["validation"]["force_rmse"] for r in runs], np.float64)
    out["validation_force_rmse_mean"] = float(np.mean(vf))
    out["train_s_mean"] = float(np.mean([r["train_s"] for r in runs]))
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_study(summary: dict, path) -> None:
    """Bar charts: reported force RMSE (mean ± std over seeds, seeds as dots) and wall time
    (method + mean training) per method."""
    from jnnp.atomic import atomic_write_bytes

    plt = _pyplot()
    names = list(summary["methods"])
    agg = [summary["methods"][n]["aggregate"] for n in names]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(names))
    a1.bar(x, [a["force_rmse_mean"] for a in agg], yerr=[a["force_rmse_std"] for a in agg], color="tab:blue",
           alpha=0.7, capsize=3)
    part = summary["reported"]
    for i, n in enumerate(names):
        vals = [r[part]["force_rmse"] for r in summary["methods"][n]["runs"]]
        a1.plot([i] * len(vals), vals, "k.", ms=4)
    a1.set_xticks(x, names, rotation=30, ha="right")
    a1.set_ylabel(f"{part} force RMSE [meV/Å]")
    a1.set_title(f"{summary['name']}: {summary['functions_per_element']} functions per element")
    method_s = [summary["methods"][n]["method_s"] for n in names]
    train_s = [a["train_s_mean"] for a in agg]
    a2.bar(x, method_s, label="method (selection / optimisation)", color="tab:orange")
    a2.bar(x, train_s, bottom=method_s, label="training (mean over seeds)", color="tab:gray")
    a2.set_xticks(x, names, rotation=30, ha="right")
    a2.set_ylabel("wall time [s]")
    a2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_descriptors(summary: dict, path) -> None:
    """Per method, centre r_s against width σ = 1/√(2η) of every exponential radial function."""
    from jnnp.atomic import atomic_write_bytes

    plt = _pyplot()
    names = list(summary["methods"])
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.8 * nrow), squeeze=False, sharex=True, sharey=True)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    for ax, n in zip(axes.ravel(), names):
        for sym, fs in summary["methods"][n]["descriptor"].items():
            pts = [(f["rs"], 1.0 / math.sqrt(2 * f["eta"])) for f in fs if f["type"] == 2 and f["eta"] > 0]
            if pts:
                r, w = zip(*pts)
                ax.plot(r, w, ".", label=sym)
        ax.set_title(n)
        ax.set_xlabel("r_s [Å]")
    for row in axes:
        row[0].set_ylabel("width 1/√(2η) [Å]")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
