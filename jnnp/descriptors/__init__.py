"""Atom-centred symmetry functions (every n2p2 short-range type), pure and differentiable."""

from jnnp.descriptors.compute import make_descriptor_fn
from jnnp.descriptors.cutoff import CUTOFF_TYPES, cutoff
from jnnp.descriptors.grids import symmetry_function_grid
from jnnp.descriptors.params import init_descriptor_params
from jnnp.descriptors.plan import make_plan
from jnnp.descriptors.scaling import SCALING_KINDS, apply_scaling, scaling_statistics
from jnnp.descriptors.spec import DescriptorSpec, SymFunc

__all__ = ["SymFunc", "DescriptorSpec", "make_plan", "make_descriptor_fn", "init_descriptor_params",
           "cutoff", "CUTOFF_TYPES", "apply_scaling", "scaling_statistics", "SCALING_KINDS",
           "symmetry_function_grid"]
