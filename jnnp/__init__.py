"""jnnp: JAX high-dimensional neural network potentials (Behler–Parrinello), n2p2-compatible.

Units everywhere: eV, Å, amu. jnnp never changes JAX's global configuration; enable float64 with
``jax.config.update("jax_enable_x64", True)`` when you need it (reference comparisons, FD checks).
"""

from jnnp import ase, config, data, descriptors, geometry, io, md, model, train
from jnnp.data import Dataset, Structure, read
from jnnp.io import read_n2p2, write_n2p2
from jnnp.config import load_config
from jnnp.model import (Potential, PotentialSpec, compute, energy, energy_and_forces, init_potential,
                        make_energy_fn)

__version__ = "0.1.0"
__all__ = ["ase", "config", "data", "descriptors", "geometry", "io", "md", "model", "train", "load_config",
           "Dataset", "Structure", "read",
           "read_n2p2", "write_n2p2", "Potential", "PotentialSpec", "init_potential", "make_energy_fn",
           "compute", "energy", "energy_and_forces"]
