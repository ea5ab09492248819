"""MD with each step's work shared out over several devices (CPU cores or GPUs).

Meant for several GPUs or many-core hosts: on the 2-core benchmark VM one XLA device already
keeps ≈ 1.6 cores busy and the split gained nothing reliable for the 1080-atom water box
(`benchmarks/RESULTS.md`). Started with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``
(set before JAX is first used), the host offers D CPU devices that execute concurrently (add
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` so that each device keeps
to one thread). `jnnp.geometry.neighbors.make_graph_fns`
with ``parts=D`` keeps one neighbour graph per device, each listing the pairs and triplets of
its share of the centre atoms, and the MD chunk (`jnnp.md.run.make_chunk_fn` with ``mesh``) runs
under ``shard_map``: positions, momenta and the integrator are replicated (cheap), each device
rebuilds and evaluates only its own part, and the parts' energies and forces are added up with a
``psum`` inside every force evaluation, so every device takes the same step.

The sum over parts is written with two custom VJPs (`split_energy_fn`): the energy is the
``psum`` of the parts' energies, whose cotangent passes to each part unchanged, and every
replicated input (positions, cell, box, strain) sums its cotangent over the parts — so
``jax.grad`` of the total energy gives the total forces, stress or barostat force on every
device. Gradients with respect to the potential's parameters (closed over) are not summed:
the split is for running MD, not for differentiating through it (`jnnp.md.gradients`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

__all__ = ["AXIS", "md_mesh", "split_energy_fn", "on_parts", "chunk_on_parts"]

AXIS = "parts"  # the mesh axis; `make_graph_fns(axis_name=...)` uses the same default


def md_mesh(devices: int) -> Mesh:
    """A one-axis mesh over the first ``devices`` devices of the default backend.

    Raises:
        ValueError: fewer devices available (naming how to get more CPU devices).
    """
    have = jax.devices()
    if devices < 1:
        raise ValueError(f"devices must be ≥ 1, got {devices}")
    if len(have) < devices:
        raise ValueError(
            f"MD over {devices} devices needs {devices} JAX devices, this process has {len(have)} "
            f"({have[0].platform}); for CPU cores start Python with XLA_FLAGS='--xla_force_host_platform_"
            f"device_count={devices} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' "
            "(one thread per device; set before JAX is first used)")
    return Mesh(np.asarray(have[:devices]), (AXIS,))


@jax.custom_vjp
def _replicated(x):
    """Identity on a replicated input whose cotangent is summed over the parts."""
    return x


def _replicated_fwd(x):
    return x, None


def _replicated_bwd(_, g):
    return (jax.tree.map(lambda t: jax.lax.psum(t, AXIS), g),)


_replicated.defvjp(_replicated_fwd, _replicated_bwd)


@jax.custom_vjp
def _summed(e):
    """Sum over the parts; each part's cotangent is the total's (not multiplied by the parts)."""
    return jax.lax.psum(e, AXIS)


def _summed_fwd(e):
    return jax.lax.psum(e, AXIS), None


def _summed_bwd(_, g):
    return (g,)


_summed.defvjp(_summed_fwd, _summed_bwd)


def split_energy_fn(energy_fn):
    """The total energy from a part's ``energy_fn(R, graph=, cell=, box=, perturbation=)`` [eV]
    (`jnnp.md.integrate.make_md_energy_fn`), to be called inside ``shard_map`` over `AXIS` with
    the part's graph. Differentiable w.r.t. R, cell, box and perturbation (the totals, on every
    device); see the module docstring."""

    def energy(R, graph, cell=None, box=None, perturbation=None, **kwargs):
        R, cell, box, perturbation = _replicated((R, cell, box, perturbation))
        return _summed(energy_fn(R, graph=graph, cell=cell, box=box, perturbation=perturbation, **kwargs))

    return energy


def _part(tree):
    return jax.tree.map(lambda x: x[0], tree)


def on_parts(fn, mesh: Mesh):
    """Jitted ``fn(*args, graph=stacked, **kwargs)`` run under ``shard_map``: ``graph`` split
    along its leading axis (one part per device), every other argument replicated; the output
    must be the same on every device (e.g. computed with `split_energy_fn`) and is returned once."""
    def local(args, kwargs, graph):
        return fn(*args, graph=_part(graph), **kwargs)

    smap = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(AXIS)), out_specs=P(), check_vma=False)
    return jax.jit(lambda *args, graph, **kwargs: smap(args, kwargs, graph))


def chunk_on_parts(fn, mesh: Mesh):
    """``fn(state, graph_state, n) -> (state, graph_state, out)`` (`jnnp.md.run`'s chunk body)
    under ``shard_map``: the graph state's leading axis split over the devices, the rest
    replicated."""
    def local(state, gstate, n):
        state, gstate, out = fn(state, _part(gstate), n)
        return state, jax.tree.map(lambda x: x[None], gstate), out

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P(AXIS), P()),
                         check_vma=False)
