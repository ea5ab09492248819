"""Training-step micro-benchmark: compile time and time per batch of the energy + force loss gradient.

Builds the potential of a training config, the padded batches of its first ``--frames``
structures, and times ``jit(value_and_grad(loss))`` with loss = Σ E² + Σ |F|² (energies [eV],
forces by `jax.grad`, then the parameter gradient through them — the work of a training step
without the optimiser update). ``--separate-blocks`` evaluates every symmetry-function block on
its own instead of merging blocks with equal functions into one kernel (the A/B of
`jnnp.descriptors.compute.make_descriptor_fn(merge_blocks=…)`). Prints a table; run by hand,
pinned for stable numbers, e.g.

    taskset -c 0 env XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python benchmarks/train_step.py configs/li8mo2ni7ti7o32.yaml --frames 64 [--separate-blocks]

Units: ms per batch, structures/s, s of compilation (the first call of each batch shape).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import ROOT, machine_info, print_table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="training config (YAML), e.g. configs/li8mo2ni7ti7o32.yaml")
    ap.add_argument("--frames", type=int, default=64, help="first N structures of the data set")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the batches")
    ap.add_argument("--separate-blocks", action="store_true", help="no merging of equal blocks")
    ap.add_argument("--float32", action="store_true", help="float32 instead of the config's precision")
    args = ap.parse_args()
    jax.config.update("jax_enable_x64", True)
    import jnnp.model.potential as potential_module
    from jnnp.config import load_config
    from jnnp.descriptors.compute import make_descriptor_fn
    from jnnp.model.potential import init_potential
    from jnnp.pipeline import build_potential_spec, load_data
    from jnnp.train.batch import Batcher, make_batch_properties_fn

    os.chdir(ROOT)  # configs name their data relative to the repository root
    cfg = load_config(args.config, [f"data.index=':{args.frames}'",
                                    "data.split={validation: 0.0, test: 0.0, seed: 0}", "data.test_path=null"])
    structures = load_data(cfg)[0]
    elements = sorted({int(z) for s in structures for z in s.numbers})
    spec = build_potential_spec(cfg, elements, structures)
    dtype = jnp.float32 if args.float32 else (jnp.float64 if cfg.model.precision == "float64" else jnp.float32)
    params = init_potential(spec, jax.random.PRNGKey(0), dtype=dtype).params
    # The flag is read where the energy function is built; patched here for this process only.
    potential_module.make_descriptor_fn = functools.partial(make_descriptor_fn,
                                                            merge_blocks=not args.separate_blocks)
    bs = args.batch_size or cfg.train.batch_size
    batcher = Batcher(spec, structures, bs)
    batches = [batcher.batch(m) for m in np.array_split(np.arange(len(structures)), max(1, len(structures) // bs))]
    props = make_batch_properties_fn(spec)

    def loss(p, b):
        out = props(p, b)
        return jnp.sum(out["energy"] ** 2) + jnp.sum(out["forces"] ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    compile_s, seen = 0.0, set()
    for b in batches:  # one call per distinct shape: compilation
        if b.shape_key not in seen:
            seen.add(b.shape_key)
            t = time.perf_counter()
            jax.block_until_ready(step(params, b))
            compile_s += time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for b in batches:
            jax.block_until_ready(step(params, b))
        times.append((time.perf_counter() - t) / len(batches))
    best = min(times)
    m = machine_info()
    print(f"# {args.config}: {len(structures)} structures, batch {bs}, {len(batches)} batches, "
          f"{len(seen)} shapes, {'separate' if args.separate_blocks else 'merged'} blocks, "
          f"{np.dtype(dtype).name}; jax {jax.__version__}, jnnp {m.get('jnnp_commit', '?')}")
    print_table([{"blocks": "separate" if args.separate_blocks else "merged", "compile": f"{compile_s:.1f}",
                  "ms": f"{1000 * best:.1f}", "median": f"{1000 * float(np.median(times)):.1f}",
                  "rate": f"{bs / best:.1f}"}],
                [("blocks", "blocks"), ("compile", "compile s (all shapes)"), ("ms", "best ms/batch"),
                 ("median", "median ms/batch"), ("rate", "structures/s")])


if __name__ == "__main__":
    main()
