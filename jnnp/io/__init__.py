"""Model files: n2p2 format (read/write)."""

from jnnp.io.n2p2 import read_n2p2, write_n2p2

__all__ = ["read_n2p2", "write_n2p2"]
