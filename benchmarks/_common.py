"""Shared helpers of the training benchmarks (rmd17.py, train_benchmarks.py, kalman_vs_adam.py).

* `run_config`: train one config (``jnnp.pipeline.train_from_config``) with overrides, under the
  config's wall-time budget (``train.max_time_s``), and collect what a benchmark reports: test and
  validation errors (overall, per element, per system), wall time, epochs, training throughput,
  the settings and the machine.
* `ThroughputMeter`: a `jnnp.train.loop.fit` callback timing the training steps.
* `errors`: the four headline numbers of a metrics dict, with units in the key names.
* `write_results` / `update_results`: ``benchmarks/results/<name>.json``, written atomically.
* `print_table`: a plain-text table.

Units: energies meV/atom, forces meV/Å (as `jnnp.train.metrics`), times s.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"

__all__ = [
    "HERE",
    "RESULTS",
    "ROOT",
    "SHARED_DATA",
    "ThroughputMeter",
    "errors",
    "machine_info",
    "print_table",
    "read_results",
    "repo_relative",
    "run_config",
    "system_names",
    "update_results",
    "write_results",
]


class ThroughputMeter:
    """`fit` callback measuring training throughput [structures/s]; use it as a context manager
    (it listens to JAX's compilation events meanwhile).

    The training time of epoch e ≥ 2 is the time from the end of epoch e−1 (after its
    validation and checkpoint) to the last training step of epoch e, less the JIT compilations
    inside that window (a batch of a new padded shape compiles a new program). So validation,
    checkpoints, compilation and the first epoch (neighbour lists, normalisation) are excluded. A
    run that ends before a second epoch completes falls back to the first epoch measured from
    the meter's creation, less compilation (``includes_setup`` is then True).
    """

    COMPILE_EVENTS = "/jax/core/compile/"

    def __init__(self):
        self.t_created = time.monotonic()
        self.t_last_step = None
        self.t_epoch_end = None
        self.compile_s = 0.0            # all compilation seen so far
        self._compile_at_step = 0.0     # ... at the last step event
        self._compile_at_epoch = 0.0    # ... at the last epoch event
        self.first_epoch_s = None
        self.train_s = 0.0
        self.epochs = 0
        self.epoch_ends = []            # wall time since creation at the end of each epoch [s]

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        if event.startswith(self.COMPILE_EVENTS):
            self.compile_s += duration

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        return False

    def __call__(self, event: dict) -> None:
        now = time.monotonic()
        if event["kind"] == "step":
            self.t_last_step = now
            self._compile_at_step = self.compile_s
            return
        if self.t_epoch_end is None:
            self.first_epoch_s = self.t_last_step - self.t_created - self._compile_at_step
        else:
            compiled = self._compile_at_step - self._compile_at_epoch
            self.train_s += self.t_last_step - self.t_epoch_end - compiled
            self.epochs += 1
        self.t_epoch_end = now
        self._compile_at_epoch = self.compile_s
        self.epoch_ends.append(now - self.t_created)

    def summary(self, n_train: int) -> dict:
        """``structures_per_s`` (None if no epoch completed), the epochs and seconds it rests on,
        and the total compilation time seen."""
        out = {"compile_s": self.compile_s, "first_epoch_s": self.first_epoch_s}
        if self.epochs:
            return {"structures_per_s": n_train * self.epochs / self.train_s, "epochs_timed": self.epochs,
                    "train_step_s": self.train_s, "includes_setup": False, **out}
        if self.first_epoch_s:
            return {"structures_per_s": n_train / self.first_epoch_s, "epochs_timed": 1,
                    "train_step_s": self.first_epoch_s, "includes_setup": True, **out}
        return {"structures_per_s": None, "epochs_timed": 0, "train_step_s": 0.0, "includes_setup": False,
                **out}


def errors(m: dict | None) -> dict:
    """Energy/force RMSE and MAE of a `jnnp.train.metrics.ErrorAccumulator` summary, with units in
    the keys (meV/atom, meV/Å), plus the number of structures."""
    if not m:
        return {}
    return {"energy_rmse_meV_per_atom": m.get("energy_rmse"), "energy_mae_meV_per_atom": m.get("energy_mae"),
            "force_rmse_meV_per_A": m.get("force_rmse"), "force_mae_meV_per_A": m.get("force_mae"),
            "n_structures": m.get("n_energies")}


def system_names(keys) -> dict:
    """Short names of system keys (source paths): the part after their common folder, without a
    trailing ``set.NNN`` (DeePMD) folder; e.g. ``.../mica/interface/row/meta/1al/set.000`` →
    ``interface/row/meta/1al``."""
    paths = {}
    for k in keys:
        p = Path(k)
        paths[k] = p.parent if p.name.startswith("set.") else p
    if len(paths) < 2:
        return {k: p.name or str(k) for k, p in paths.items()}
    common = Path(os.path.commonpath([str(p) for p in paths.values()]))
    return {k: p.relative_to(common).as_posix() or p.name for k, p in paths.items()}


def _detailed(m: dict | None) -> dict:
    """`errors` of ``m`` plus per-element force errors and per-system `errors` (short names)."""
    if not m:
        return {}
    out = errors(m)
    if m.get("per_element"):
        out["per_element"] = {el: {"force_rmse_meV_per_A": v.get("force_rmse"),
                                   "force_mae_meV_per_A": v.get("force_mae")}
                              for el, v in m["per_element"].items()}
    if m.get("per_system"):
        names = system_names(m["per_system"])
        out["per_system"] = {names[k]: errors(v) for k, v in m["per_system"].items()}
    return out


def machine_info() -> dict:
    """Date, CPU, cores, load, Python/JAX versions and the jnnp commit of this run."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cores": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()), "python": sys.version.split()[0],
            "jax": jax.__version__, "jnnp_commit": commit}


def run_config(config, overrides=(), *, progress: bool = True) -> dict:
    """Train ``config`` (YAML path) with ``overrides`` and return the benchmark record.

    The record holds ``test`` and ``validation`` errors (`errors`, with ``per_element`` and
    ``per_system``), ``training`` (wall time, epochs run, best epoch, stop reason, time budget,
    throughput from `ThroughputMeter`), ``data`` (split sizes), ``settings`` (the whole validated
    config), ``config``, ``overrides`` and ``machine``; also ``run_dir``.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    from jnnp.config import load_config
    from jnnp.pipeline import train_from_config

    cfg = load_config(config, list(overrides))
    machine = machine_info()
    t0 = time.perf_counter()
    with ThroughputMeter() as meter:
        summary = train_from_config(cfg, progress=progress, callback=meter)
    wall = time.perf_counter() - t0
    fit = json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    training = {"wall_s": wall, "epochs_run": fit.get("epochs_run"), "best_epoch": fit.get("best_epoch"),
                "stop_reason": fit.get("stop_reason"), "max_time_s": cfg.train.max_time_s,
                "throughput": meter.summary(summary["n_train"])}
    return {"config": repo_relative(config), "overrides": list(overrides), "run_dir": str(cfg.run_dir),
            "data": {"n_train": summary["n_train"], "n_validation": summary["n_validation"],
                     "n_test": summary["n_test"]},
            "test": _detailed(summary.get("test")), "validation": _detailed(fit.get("validation")),
            "training": training, "history": fit.get("history", []), "epoch_end_s": meter.epoch_ends,
            "settings": cfg.model_dump(mode="json"), "machine": machine}


def repo_relative(path) -> str:
    """``path`` relative to the repository root when it lies inside it, else as given."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def read_results(name: str, results_dir=RESULTS) -> dict:
    path = Path(results_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(name: str, data: dict, results_dir=RESULTS) -> Path:
    """Write ``data`` to ``<results_dir>/<name>.json`` atomically (NaN → null)."""
    from jnnp.train.metrics import write_json

    path = Path(results_dir) / f"{name}.json"
    write_json(data, path)
    return path


def update_results(name: str, key: str, entry: dict, results_dir=RESULTS) -> dict:
    """Set ``key`` of the keyed results file ``<name>.json`` (e.g. rmd17.json by molecule),
    keeping the other keys; returns the whole mapping."""
    data = read_results(name, results_dir)
    data[key] = entry
    write_results(name, data, results_dir)
    return data


def _cell(v, width: int) -> str:
    if v is None:
        s = "-"
    elif isinstance(v, float):
        s = f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    else:
        s = str(v)
    return s.rjust(width)


def print_table(rows: list[dict], columns: list[tuple[str, str]], file=None) -> None:
    """Print ``rows`` (dicts) as a table; ``columns`` are ``(key, header)`` pairs, the first
    column left-aligned."""
    if not rows:
        return
    first, *rest = columns
    w0 = max(len(first[1]), *(len(str(r.get(first[0], ""))) for r in rows))
    widths = [max(len(h), 8) for _, h in rest]
    print(first[1].ljust(w0) + "".join(" " + h.rjust(w) for (_, h), w in zip(rest, widths)), file=file)
    for r in rows:
        print(str(r.get(first[0], "")).ljust(w0)
              + "".join(" " + _cell(r.get(k), w) for (k, _), w in zip(rest, widths)), file=file)
