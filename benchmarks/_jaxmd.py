"""jax-md's own Behler–Parrinello model for the comparison rows of the water benchmarks."""

from __future__ import annotations


def behler_parrinello_nl(disp, box, species, R, cutoff: float, *, key, format=None, dr_threshold: float = 0.0):
    """``(neighbor_fn, energy_fn(R, neighbor))`` as jax-md 0.2.29's
    ``energy.behler_parrinello_neighbor_list`` builds them (its default symmetry functions with
    ``cutoff`` [Å], one shared 30-30 tanh MLP), except for the MLP's input size: jax-md evaluates
    the all-pairs symmetry functions on len(species) dummy atoms to find it (N³ × 22 floats, ~110 GB
    for 1080 atoms); here it comes from ``eval_shape`` of the neighbour-list functions at ``R``."""
    import jax
    from flax import nnx
    from jax_md import energy, partition
    from jax_md._nn import behler_parrinello as bp

    fmt = partition.Dense if format is None else format
    nfn = partition.neighbor_list(disp, box, cutoff, dr_threshold, format=fmt, fractional_coordinates=False)
    sym_fn = bp.symmetry_functions_neighbor_list(disp, species, cutoff_distance=cutoff)
    sym_dim = jax.eval_shape(sym_fn, R, nfn.allocate(R)).shape[-1]
    model = energy.BehlerParrinelloEnergy(sym_fn, sym_dim, (30, 30), rngs=nnx.Rngs(key))
    return nfn, lambda R, neighbor: model(R, neighbor)
