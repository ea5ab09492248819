"""Geometry: cell conventions, all-image pair lists and triplets (host), edge vectors (jit)."""

from jnnp.geometry.cell import cell_heights, cell_to_box, min_image_valid, validate_cell
from jnnp.geometry.pairs import PairList, all_image_pairs, triplets
from jnnp.geometry.edges import edge_vectors, safe_norm

__all__ = ["cell_heights", "cell_to_box", "min_image_valid", "validate_cell", "PairList",
           "all_image_pairs", "triplets", "edge_vectors", "safe_norm"]
