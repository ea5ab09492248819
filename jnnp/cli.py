"""The ``jnnp`` command line: each sub-command parses arguments and calls one library function.

User errors (bad files, bad configs) print one readable line and exit with code 1.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _enable_x64(args) -> None:
    import jax

    jax.config.update("jax_enable_x64", args.precision == "float64")


def _load_model(path: str, length_unit=None, energy_unit=None):
    """A jnnp model directory (checkpoint) or an n2p2 model directory (input.nn)."""
    from pathlib import Path

    p = Path(path)
    if (p / "input.nn").exists():
        from jnnp.io import read_n2p2

        return read_n2p2(p, length_unit=length_unit, energy_unit=energy_unit)
    from jnnp.train.checkpoint import load_potential

    return load_potential(p)


def _cmd_predict(args) -> int:
    import numpy as np

    from jnnp.data import read
    from jnnp.model import compute

    from jnnp.ensemble.commands import predict_committee, report_extrapolation
    from jnnp.ensemble.committee import is_committee_dir

    _enable_x64(args)
    ds = read(args.structure, format=args.format, length_unit=args.length_unit,
              energy_unit=args.energy_unit, index=args.index)
    if is_committee_dir(args.model):  # mean ± standard deviation over the members
        return predict_committee(args, list(ds))
    pot = _load_model(args.model, args.model_length_unit, args.model_energy_unit)
    if args.precision == "float32":
        import jax.numpy as jnp

        pot = pot.astype(jnp.float32)
    results = []
    for s in ds:
        out = compute(pot, s)
        results.append({"source": s.provenance, "n_atoms": s.n_atoms, "energy_eV": float(out["energy"]),
                        "forces_eV_per_A": out["forces"].tolist(),
                        **({"stress_eV_per_A3": out["stress"].tolist()} if "stress" in out else {})})
        print(f"# {s.provenance}: {s.n_atoms} atoms")
        print(f"energy [eV]: {float(out['energy']):.10f}   ({float(out['energy']) / s.n_atoms:.10f} eV/atom)")
        if s.energy is not None:
            print(f"reference energy [eV]: {s.energy:.10f}   difference "
                  f"{1e3 * (float(out['energy']) - s.energy) / s.n_atoms:.4f} meV/atom")
        if args.forces:
            print("forces [eV/Å]:  Z  Fx  Fy  Fz")
            for z, f in zip(s.numbers, out["forces"]):
                print(f"{z:3d} {f[0]:16.10f} {f[1]:16.10f} {f[2]:16.10f}")
        else:
            fmax = np.abs(out["forces"]).max()
            print(f"max |force component| [eV/Å]: {fmax:.6f} (use --forces to print all)")
        if "stress" in out:
            print("stress [eV/Å³]:", np.array2string(out["stress"], precision=8))
    for rec, n in zip(results, report_extrapolation(pot, list(ds)).per_structure):
        rec["extrapolations"] = int(n)
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


def _cmd_convert(args) -> int:
    from jnnp.io import write_n2p2

    _enable_x64(args)
    pot = _load_model(args.model, args.model_length_unit, args.model_energy_unit)
    if args.to == "n2p2":
        write_n2p2(pot, args.output, length_unit=args.length_unit, energy_unit=args.energy_unit)
    else:
        from jnnp.train.checkpoint import save_model

        save_model(args.output, pot)
    print(f"wrote {args.to} model to {args.output}")
    return 0


def _cmd_train(args) -> int:
    from jnnp.config import load_config
    from jnnp.pipeline import train_from_config

    cfg = load_config(args.config, args.set)
    _enable_x64(argparse.Namespace(precision=cfg.model.precision))
    train_from_config(cfg, resume=args.resume, progress=not args.quiet)
    print(f"run directory: {cfg.run_dir}")
    return 0


def _cmd_evaluate(args) -> int:
    from jnnp.data import read
    from jnnp.train.loop import evaluate

    _enable_x64(args)
    pot = _load_model(args.model, args.model_length_unit, args.model_energy_unit)
    ds = read(args.data, format=args.format, length_unit=args.length_unit, energy_unit=args.energy_unit,
              index=args.index)
    m = evaluate(pot, list(ds), run_dir=args.output, name="evaluate")
    from jnnp.ensemble.commands import report_extrapolation

    m["extrapolation"] = report_extrapolation(pot, list(ds)).to_dict()
    print(json.dumps(m, indent=1, default=float))
    return 0


def _cmd_validate(args) -> int:
    from jnnp.config import load_config

    for path in args.configs:
        load_config(path, args.set)
        print(f"{path}: ok")
    return 0


def _cmd_schema(args) -> int:
    from jnnp.config import schema

    model = {"run": schema.RunConfig, "train": schema.TrainConfig, "md": schema.MDConfig,
             "data": schema.DataConfig, "model": schema.ModelConfig}[args.which]
    print(json.dumps(model.model_json_schema(), indent=1))
    return 0


def _cmd_md(args) -> int:
    from jnnp.config import load_config
    from jnnp.data import read
    from jnnp.md.simulate import run_md
    from jnnp.model.extrapolation import extrapolation_observables_or_none

    cfg = load_config(args.config, args.set)
    if cfg.md is None:
        print(f"{args.config}: no 'md' section", file=sys.stderr)
        return 1
    md = cfg.md
    _enable_x64(argparse.Namespace(precision=md.precision))
    model = md.model or str(__import__("pathlib").Path(cfg.run_dir) / "model")
    pot = _load_model(model, md.model_length_unit, md.model_energy_unit)
    if md.structure is None:
        print(f"{args.config}: md.structure is required for 'jnnp md'", file=sys.stderr)
        return 1
    s = read(md.structure, length_unit=md.length_unit, energy_unit=md.energy_unit)[md.structure_index]
    out_dir = args.run_dir or str(__import__("pathlib").Path(cfg.run_dir) / "md")
    summary = run_md(pot, s, md, out_dir, resume=args.resume, progress=not args.quiet,
                     observables=extrapolation_observables_or_none(pot))
    print(json.dumps(summary, indent=1, default=float))
    return 0


def _add_model_args(p):
    p.add_argument("model", help="jnnp model directory, or n2p2 directory with input.nn/scaling.data/weights")
    p.add_argument("--model-length-unit", default=None, help="n2p2 models: length unit (bohr, angstrom)")
    p.add_argument("--model-energy-unit", default=None, help="n2p2 models: energy unit (hartree, eV)")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jnnp", description="JAX high-dimensional neural network potentials")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="energy [eV], forces [eV/Å], stress [eV/Å³] of structures")
    _add_model_args(p)
    p.add_argument("structure", help="structure file (n2p2 input.data, extxyz, xsf, npz, DeePMD dir, ...)")
    p.add_argument("--format", default=None)
    p.add_argument("--length-unit", default=None, help="structure file length unit (n2p2 files)")
    p.add_argument("--energy-unit", default=None, help="structure file energy unit (n2p2 files)")
    p.add_argument("--index", default=None, help="frames to use, e.g. 0 or ':10'")
    p.add_argument("--forces", action="store_true", help="print every force vector")
    p.add_argument("-o", "--output", default=None, help="write results as JSON")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("convert", help="convert a model between jnnp and n2p2 formats")
    _add_model_args(p)
    p.add_argument("output")
    p.add_argument("--to", choices=("n2p2", "jnnp"), default="n2p2")
    p.add_argument("--length-unit", default=None, help="units of the written n2p2 model")
    p.add_argument("--energy-unit", default=None)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("train", help="train a potential from a YAML config")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="errors of a model on labelled data (RMSE/MAE, parity plots)")
    _add_model_args(p)
    p.add_argument("data")
    p.add_argument("--format", default=None)
    p.add_argument("--length-unit", default=None)
    p.add_argument("--energy-unit", default=None)
    p.add_argument("--index", default=None)
    p.add_argument("-o", "--output", default=None, help="folder for evaluate_metrics.json and parity plot")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("md", help="molecular dynamics from a config's 'md' section")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's restart.npz")
    p.add_argument("--run-dir", default=None, help="output directory (default: <run_dir>/md)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_md)

    p = sub.add_parser("validate", help="validate configs (exit 1 with key-path errors)")
    p.add_argument("configs", nargs="+")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("schema", help="JSON schema of a config section")
    p.add_argument("which", choices=("run", "train", "md", "data", "model"))
    p.set_defaults(func=_cmd_schema)

    from jnnp.ensemble.commands import add_parsers

    add_parsers(sub)  # sweep, committee, select

    from jnnp.hyper.cli import add_parser as add_hyper_parser

    add_hyper_parser(sub)  # hyper

    from jnnp.md.diffmd import add_parser as add_diffmd_parser

    add_diffmd_parser(sub)  # diffmd
    return parser


def main(argv=None) -> int:
    from jnnp.errors import JnnpError

    from jnnp.allocator import tune_allocator

    args = build_parser().parse_args(argv)
    tune_allocator()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"jnnp {args.command}: interrupted", file=sys.stderr)
        return 130
    except (JnnpError, FileNotFoundError) as err:
        print(f"jnnp {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
