"""Command-line handlers of ``jnnp sweep``, ``jnnp committee``, ``jnnp select`` and the committee
and extrapolation parts of ``jnnp predict`` / ``jnnp evaluate`` (registered in `jnnp.cli`)."""

from __future__ import annotations

import json
import sys

import numpy as np

__all__ = ["add_parsers", "cmd_committee", "cmd_select", "cmd_sweep", "predict_committee",
           "report_extrapolation"]


def _x64(precision: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", precision == "float64")


def cmd_sweep(args) -> int:
    from jnnp.ensemble.config import load_sweep_config
    from jnnp.ensemble.members import Member, member_grid

    cfg = load_sweep_config(args.config, args.set)
    if args.dry_run:
        t = cfg.train
        base = Member(seed=t.seed, learning_rate=t.learning_rate, force_weight=t.force_weight,
                      energy_weight=t.energy_weight)
        for k, m in enumerate(member_grid(base, cfg.sweep.parameters.values(), cfg.sweep.mode)):
            print(f"member {k}: " + ", ".join(f"{p}={getattr(m, p)}" for p in cfg.sweep.parameters.values()))
        return 0
    from jnnp.ensemble.sweep import run_sweep

    _x64(cfg.model.precision)
    run_sweep(cfg, progress=not args.quiet)
    print(f"run directory: {cfg.run_dir}")
    return 0


def cmd_committee(args) -> int:
    from jnnp.ensemble.config import load_committee_config
    from jnnp.ensemble.workflow import run_committee

    cfg = load_committee_config(args.config, args.set)
    _x64(cfg.model.precision)
    run_committee(cfg, progress=not args.quiet)
    print(f"run directory: {cfg.run_dir}")
    return 0


def cmd_select(args) -> int:
    from jnnp.data import read
    from jnnp.ensemble.committee import load_committee
    from jnnp.ensemble.select import query_by_committee, write_selection

    _x64(args.precision)
    committee = load_committee(args.committee)
    candidates = list(read(args.candidates, format=args.format, length_unit=args.length_unit,
                           energy_unit=args.energy_unit, index=args.index))
    sel = query_by_committee(committee, candidates, min(args.k, len(candidates)), by=args.by,
                             min_separation=args.min_separation)
    files = write_selection(candidates, sel, args.output, formats=tuple(args.formats),
                            length_unit=args.output_length_unit, energy_unit=args.output_energy_unit)
    for row in sel.rows(candidates):
        print(f"{row['rank']:4d}  {row['source']}  {sel.by} disagreement {row['score']:.6g}")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def predict_committee(args, structures) -> int:
    """``jnnp predict COMMITTEE_DIR STRUCTURE``: committee mean ± std per structure."""
    from jnnp.ensemble.committee import committee_predict, load_committee

    committee = load_committee(args.model)
    if args.precision == "float32":
        import jax.numpy as jnp

        committee = committee.astype(jnp.float32)
    stats = committee_predict(committee, structures)
    results = []
    for s, st in zip(structures, stats):
        print(f"# {s.provenance}: {s.n_atoms} atoms, committee of {committee.n_members}")
        print(f"energy [eV]: {st['energy_mean']:.10f} ± {st['energy_std']:.3e}   "
              f"({st['energy_mean'] / s.n_atoms:.10f} eV/atom)")
        print(f"force disagreement [eV/Å]: max {np.max(st['force_disagreement']):.6f}, "
              f"mean {np.mean(st['force_disagreement']):.6f}")
        if args.forces:
            print("forces [eV/Å] (mean ± std per component):  Z  Fx  Fy  Fz")
            for z, f, sd in zip(s.numbers, st["forces_mean"], st["forces_std"]):
                print(f"{z:3d} " + " ".join(f"{a:14.8f}±{b:.2e}" for a, b in zip(f, sd)))
        results.append({"source": s.provenance, "n_atoms": s.n_atoms, "energy_eV": float(st["energy_mean"]),
                        "energy_std_eV": float(st["energy_std"]), "forces_eV_per_A": st["forces_mean"].tolist(),
                        "forces_std_eV_per_A": st["forces_std"].tolist(),
                        "force_disagreement_eV_per_A": st["force_disagreement"].tolist(),
                        "energies_eV": st["energies_mean"].tolist(), "energies_std_eV": st["energies_std"].tolist()})
    report = report_extrapolation(committee.member(0), structures)
    for rec, n in zip(results, report.per_structure):
        rec["extrapolations"] = int(n)
    if args.output:
        from jnnp.atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps(results, indent=1))
    return 0


def report_extrapolation(potential, structures, file=None):
    """`extrapolation_report` of ``structures``, its warning lines printed to stderr."""
    from jnnp.model.extrapolation import extrapolation_report

    report = extrapolation_report(potential, structures)
    for line in report.lines():
        print(line, file=file or sys.stderr)
    return report


def add_parsers(sub) -> None:
    """Register ``sweep``, ``committee`` and ``select`` on an argparse sub-parser set."""
    p = sub.add_parser("sweep", help="train M models in one program over swept hyperparameters (table + plot)")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--dry-run", action="store_true", help="validate and list the members, train nothing")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("committee", help="train a committee, test it, run MD with its disagreement, select frames")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_committee)

    p = sub.add_parser("select", help="query by committee: the K structures with the largest disagreement")
    p.add_argument("committee", help="committee folder (committee.json + member folders)")
    p.add_argument("candidates", help="structure file (e.g. an MD trajectory)")
    p.add_argument("-k", type=int, default=10, help="number of structures to select")
    p.add_argument("--by", choices=("force", "force_mean", "energy"), default="force")
    p.add_argument("--min-separation", type=int, default=0, help="minimum frame distance between selections")
    p.add_argument("-o", "--output", default="selection", help="output folder")
    p.add_argument("--formats", nargs="+", choices=("extxyz", "n2p2"), default=["extxyz", "n2p2"])
    p.add_argument("--format", default=None, help="candidate file format")
    p.add_argument("--length-unit", default=None)
    p.add_argument("--energy-unit", default=None)
    p.add_argument("--index", default=None)
    p.add_argument("--output-length-unit", default="angstrom", help="units of the written input.data")
    p.add_argument("--output-energy-unit", default="eV")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64")
    p.set_defaults(func=cmd_select)
