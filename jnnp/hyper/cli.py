"""The ``jnnp hyper CONFIG.yaml`` sub-command (registered by `jnnp.cli.build_parser`)."""

from __future__ import annotations

import json

__all__ = ["add_parser"]


def _cmd_hyper(args) -> int:
    import jax

    from jnnp.hyper.config import load_hyper_config
    from jnnp.hyper.study import run_study

    cfg = load_hyper_config(args.config, args.set)
    if args.validate:
        print(f"{args.config}: ok")
        return 0
    jax.config.update("jax_enable_x64", cfg.network.precision == "float64")
    summary = run_study(cfg, progress=not args.quiet)
    table = {name: m["aggregate"] for name, m in summary["methods"].items()}
    print(json.dumps({"reported": summary["reported"], "methods": table}, indent=1, default=float))
    print(f"run directory: {cfg.run_dir} (study.json, study.png, descriptors.png)")
    return 0


def add_parser(sub) -> None:
    """Add ``hyper`` to an argparse sub-parser set."""
    p = sub.add_parser("hyper", help="descriptor study: gradient-optimised vs grid vs CUR/FPS symmetry functions")
    p.add_argument("config", help="study YAML (see configs/hyper_ethanol.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--validate", action="store_true", help="only validate the config")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_hyper)
