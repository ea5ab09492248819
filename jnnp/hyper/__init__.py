"""Differentiable studies of symmetry-function hyperparameters.

* `param`: η, r_s, ζ, r_c as unconstrained parameters (positive / bounded / ordered transforms);
* `learnable`: joint training of network weights and symmetry-function parameters;
* `unroll`: hypergradients through K unrolled training steps (rematerialised);
* `implicit`: implicit differentiation (exact for the ridge readout, approximate IFT);
* `select`: CUR and farthest-point selection of symmetry functions from a pool;
* `study`: the comparison driver behind ``jnnp hyper CONFIG.yaml``.
"""

from jnnp.hyper.param import HYPER_FIELDS, FieldTransform, SFParameterization

__all__ = ["HYPER_FIELDS", "FieldTransform", "SFParameterization"]
