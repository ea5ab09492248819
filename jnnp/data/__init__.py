"""Structure data: `Structure`/`Dataset`, readers (`read` and per-format) and writers."""

from jnnp.data.structure import Dataset, Structure
from jnnp.data.formats.ase_formats import read_ase
from jnnp.data.formats.deepmd import read_deepmd
from jnnp.data.formats.n2p2 import read_n2p2
from jnnp.data.formats.npz import read_npz
from jnnp.data.formats.xsf import read_xsf
from jnnp.data.read import detect_format, read
from jnnp.data.write import write_extxyz, write_n2p2

__all__ = ["Structure", "Dataset", "read", "detect_format", "read_n2p2", "read_deepmd", "read_npz",
           "read_xsf", "read_ase", "write_extxyz", "write_n2p2"]
