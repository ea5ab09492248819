"""Differentiable studies of symmetry-function hyperparameters.

* `param`: η, r_s, ζ, r_c as unconstrained parameters (positive / bounded / ordered transforms);
* `learnable`: joint training of network weights and symmetry-function parameters;
* `unroll`: hypergradients through K unrolled training steps (rematerialised);
* `implicit`: implicit differentiation (exact for the ridge readout of `ridge`, approximate IFT);
* `select`: CUR and farthest-point selection of symmetry functions from a pool;
* `study` / `config`: the comparison driver behind ``jnnp hyper CONFIG.yaml``.
"""

from jnnp.hyper.config import HyperStudyConfig, load_hyper_config
from jnnp.hyper.implicit import cg_solve, dense_solve, ift_hypergradient, implicit_solution, neumann_solve
from jnnp.hyper.learnable import LearnableSettings, fit_learnable, make_learnable, static_potential
from jnnp.hyper.param import HYPER_FIELDS, FieldTransform, SFParameterization
from jnnp.hyper.ridge import RidgeSettings, linear_spec, make_ridge_problem, optimize_ridge
from jnnp.hyper.select import cur_select, feature_matrix, fps_select, select_functions
from jnnp.hyper.stacked import stack_batches
from jnnp.hyper.study import run_study
from jnnp.hyper.unroll import UnrollSettings, optimize_unrolled, unrolled_hypergradient

__all__ = ["HYPER_FIELDS", "FieldTransform", "HyperStudyConfig", "LearnableSettings", "RidgeSettings",
           "SFParameterization", "UnrollSettings", "cg_solve", "cur_select", "dense_solve", "feature_matrix",
           "fit_learnable", "fps_select", "ift_hypergradient", "implicit_solution", "linear_spec",
           "load_hyper_config", "make_learnable", "make_ridge_problem", "neumann_solve", "optimize_ridge",
           "optimize_unrolled", "run_study", "select_functions", "stack_batches", "static_potential",
           "unrolled_hypergradient"]
