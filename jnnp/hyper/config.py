"""Config of a descriptor study (``jnnp hyper CONFIG.yaml``): pydantic, frozen, unknown keys rejected.

Sections: ``data`` (as in `jnnp.config.schema.DataConfig`: file, units, train/validation/test
split), ``grid`` (the standard symmetry-function grid of size n per element, and the starting
point of the gradient methods), ``pool`` (the large candidate set for CUR/FPS), ``network``,
``train`` (the final training of every descriptor set, `jnnp.config.schema.TrainConfig`),
``parameters`` (which hyperparameters the gradient methods learn), one section per gradient
method (``ridge``, ``unrolled``, ``learnable``), ``hand`` (a hand-written set in n2p2 syntax),
``methods`` and ``seeds``. Lengths in Å, η in Å⁻².
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from jnnp.config.load import load_model
from jnnp.config.schema import DataConfig, TrainConfig

__all__ = [
    "METHODS",
    "GridConfig",
    "HandConfig",
    "HyperStudyConfig",
    "LearnableConfig",
    "NetworkConfig",
    "ParametersConfig",
    "PoolConfig",
    "RidgeConfig",
    "UnrolledConfig",
    "load_hyper_config",
]

Method = Literal["grid", "grid_centered", "hand", "cur", "fps", "ridge", "unrolled", "learnable"]
METHODS = get_args(Method)
Field_ = Literal["eta", "rs", "zeta", "rc"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridConfig(_Strict):
    """The standard grid (`jnnp.descriptors.grids.symmetry_function_grid`): its size per element
    is the size n every method must match."""

    cutoff: PositiveFloat = 4.0
    angular_cutoff: PositiveFloat | None = Field(None, description="cutoff of the angular functions (default: "
                                                 "cutoff); a shorter one means far fewer triplets")
    cutoff_type: str | int = "poly2"
    n_radial: PositiveInt = 6
    radial_mode: Literal["shifted", "centered"] = "shifted"
    r_min: float = Field(0.8, ge=0.0)
    angular: bool = True
    angular_eta: list[float] = Field(default_factory=lambda: [0.05])
    zeta: list[float] = Field(default_factory=lambda: [1.0, 4.0])
    lambdas: list[float] = Field(default_factory=lambda: [-1.0, 1.0])
    angular_type: Literal[3, 9] = 9


class PoolConfig(_Strict):
    """The candidate pool for CUR/FPS (cutoffs, cutoff type and angular type from ``grid``)."""

    n_radial: PositiveInt = 16
    radial_modes: list[Literal["shifted", "centered"]] = Field(default_factory=lambda: ["shifted", "centered"])
    r_min: float = Field(0.5, ge=0.0)
    angular_eta: list[float] = Field(default_factory=lambda: [0.005, 0.02, 0.05, 0.1, 0.3])
    zeta: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0])
    lambdas: list[float] = Field(default_factory=lambda: [-1.0, 1.0])
    frames: PositiveInt = Field(100, description="training structures whose atoms form the feature matrix")


class NetworkConfig(_Strict):
    hidden: list[PositiveInt] = Field(default_factory=lambda: [25, 25])
    activation: str = "t"
    scaling: Literal["none", "scale", "center", "scale_center", "sigma"] = "scale_center"
    precision: Literal["float64", "float32"] = "float64"


class ParametersConfig(_Strict):
    """Learnable hyperparameters of the gradient methods and their ranges."""

    fields: list[Field_] = Field(default_factory=lambda: ["eta", "rs"])
    rc_range: tuple[PositiveFloat, PositiveFloat] | None = Field(
        None, description="(lo, hi) of a learnable cutoff [Å]; default (0.5, 1.25) × grid.cutoff")
    zeta_min: float = Field(0.0, ge=0.0, description="lower bound of a learnable ζ (exclusive)")

    @model_validator(mode="after")
    def _check(self):
        if not self.fields:
            raise ValueError("fields must name at least one of eta, rs, zeta, rc")
        if self.rc_range is not None and not self.rc_range[0] < self.rc_range[1]:
            raise ValueError("rc_range needs lo < hi")
        return self


class RidgeConfig(_Strict):
    """Exact ridge-readout hypergradient (`jnnp.hyper.ridge`)."""

    alpha: PositiveFloat = 1e-4
    steps: int = Field(30, ge=0, description="outer Adam steps")
    learning_rate: PositiveFloat = 0.05
    frames_train: PositiveInt = 100
    frames_validation: PositiveInt = 50
    batch_size: PositiveInt = 10
    energy_weight: float = Field(1.0, ge=0.0)
    force_weight: float = Field(10.0, ge=0.0)


class UnrolledConfig(_Strict):
    """Truncated-unrolled hypergradient through the network (`jnnp.hyper.unroll`)."""

    inner_steps: PositiveInt = 10
    inner_optimizer: Literal["sgd", "adam"] = "adam"
    inner_learning_rate: PositiveFloat = 0.01
    outer_steps: int = Field(30, ge=0)
    outer_learning_rate: PositiveFloat = 0.05
    warm_start: bool = True
    frames_train: PositiveInt = 50
    frames_validation: PositiveInt = 25
    batch_size: PositiveInt = 10
    energy_weight: float = Field(1.0, ge=0.0)
    force_weight: float = Field(10.0, ge=0.0)


class LearnableConfig(_Strict):
    """Joint training of networks and functions (`jnnp.hyper.learnable`); the learnt functions
    are then retrained from scratch like every other set (and the joint model is reported too)."""

    epochs: PositiveInt = 50
    batch_size: PositiveInt = 8
    learning_rates: dict[Literal["networks", "eta", "rs", "zeta", "rc"], float] = Field(
        default_factory=lambda: {"networks": 1e-3, "eta": 1e-2, "rs": 1e-2})
    refresh_scaling: bool = True
    force_weight: float = Field(10.0, ge=0.0)

    @model_validator(mode="after")
    def _rates(self):
        if any(v < 0 for v in self.learning_rates.values()):
            raise ValueError("learning rates must be >= 0 (0 freezes a group)")
        return self


class HandConfig(_Strict):
    """A hand-chosen set, as n2p2 users write them: ``symfunction_short`` lines (n2p2 syntax; a
    whole ``input.nn`` works too) in ``path`` (relative to the working directory). Cutoff type
    from ``grid``."""

    path: str
    length_unit: Literal["angstrom", "bohr"] = "angstrom"
    match_grid_size: bool = Field(True, description="require the grid's number of functions per element "
                                  "(a fair comparison); false only for smoke tests with a shrunken grid")


class HyperStudyConfig(_Strict):
    """A whole study: data → pool/grid → each method's descriptor set → same training → errors."""

    name: str = "hyper"
    run_dir: str = "runs/hyper"
    data: DataConfig
    grid: GridConfig = GridConfig()
    pool: PoolConfig = PoolConfig()
    network: NetworkConfig = NetworkConfig()
    train: TrainConfig = TrainConfig()
    parameters: ParametersConfig = ParametersConfig()
    ridge: RidgeConfig = RidgeConfig()
    unrolled: UnrolledConfig = UnrolledConfig()
    learnable: LearnableConfig = LearnableConfig()
    hand: HandConfig | None = None
    methods: list[Method] = Field(
        default_factory=lambda: ["grid", "cur", "fps", "ridge", "learnable"])
    seeds: list[int] = Field(default_factory=lambda: [0], description="network seeds of the final trainings")

    @model_validator(mode="after")
    def _check(self):
        if not self.methods:
            raise ValueError("methods must name at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods must not repeat")
        if "hand" in self.methods and self.hand is None:
            raise ValueError("method 'hand' needs a 'hand' section naming the set's file (hand.path)")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if self.data.split.validation <= 0:
            raise ValueError("the study needs a validation split (data.split.validation > 0): the gradient "
                             "methods optimise the validation loss and the test set is reported")
        return self


def load_hyper_config(path, overrides=()) -> HyperStudyConfig:
    """Read a study YAML file (`jnnp.config.load.load_model`): `jnnp.errors.ConfigError` naming
    the file and key path on errors."""
    return load_model(HyperStudyConfig, path, overrides)
