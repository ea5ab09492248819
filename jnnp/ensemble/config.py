"""YAML configs of sweeps (``jnnp sweep``) and committees (``jnnp committee``).

Both reuse the run config's ``data``, ``model`` and ``train`` sections (`jnnp.config.schema`)
and add their own; models are frozen, unknown keys are rejected and every error names its key
path (``sweep.parameters.hidden: Extra inputs are not permitted``).

Sweep::

    name: sweep_force_weight
    run_dir: runs/sweep_force_weight
    data: {path: tests/data/rmd17_ethanol_100.npz}
    model: {...}                      # as in a run config
    train: {epochs: 50, ...}          # shared settings; their values are the sweep's base point
    sweep:
      mode: grid                      # grid: all combinations; zip: i-th values together
      parameters:                     # any of: seed, learning_rate, force_weight,
        force_weight: [1, 3, 10, 30]  #         energy_weight, train_fraction
        seed: [0, 1]

Committee::

    committee: {members: 4, seed: 0, train_fraction: 0.8}
    md: {...}                         # optional MD section (run config), driven by the mean
    select: {k: 10, by: force}        # optional query by committee on the MD trajectory
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from jnnp.config.load import load_model
from jnnp.config.schema import DataConfig, MDConfig, ModelConfig, RunConfig, TrainConfig

__all__ = ["CommitteeConfig", "CommitteeSection", "SelectConfig", "SweepConfig", "SweepParameters",
           "SweepSection", "load_committee_config", "load_sweep_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


def _vectorisable(train: TrainConfig) -> TrainConfig:
    if train.optimizer == "kalman":
        raise ValueError("optimizer 'kalman' cannot be vectorised over models; use 'adam' or 'adamw'")
    return train


class SweepParameters(_Strict):
    """Values of each swept hyperparameter (only values that keep array shapes are vmappable)."""

    seed: list[int] | None = Field(None, min_length=1, description="initial-weight seeds")
    learning_rate: list[PositiveFloat] | None = Field(None, min_length=1, description="peak learning rates")
    force_weight: list[NonNegativeFloat] | None = Field(None, min_length=1, description="force loss weights [Å²]")
    energy_weight: list[NonNegativeFloat] | None = Field(None, min_length=1, description="energy loss weights")
    train_fraction: list[Fraction] | None = Field(None, min_length=1,
                                                  description="fraction of the training split each member learns from")

    @model_validator(mode="after")
    def _some(self):
        if not self.values():
            raise ValueError(f"give at least one of {', '.join(type(self).model_fields)}")
        return self

    def values(self) -> dict:
        """Swept name → list of values, in declaration order."""
        return {k: list(v) for k in type(self).model_fields if (v := getattr(self, k)) is not None}


class SweepSection(_Strict):
    parameters: SweepParameters
    mode: Literal["grid", "zip"] = Field("grid", description="grid: Cartesian product; zip: i-th values together")

    @model_validator(mode="after")
    def _zip_lengths(self):
        vals = self.parameters.values()
        if self.mode == "zip" and len({len(v) for v in vals.values()}) > 1:
            raise ValueError("mode 'zip' needs equally long lists, got "
                             + ", ".join(f"parameters.{k}: {len(v)}" for k, v in vals.items()))
        return self

    def n_members(self) -> int:
        lens = [len(v) for v in self.parameters.values().values()]
        if self.mode == "zip":
            return lens[0]
        n = 1
        for x in lens:
            n *= x
        return n


class SweepConfig(_Strict):
    """A sweep: data → M vmapped trainings → table and plot of validation errors."""

    name: str = "sweep"
    run_dir: str = "runs/sweep"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepSection

    check_train = field_validator("train")(_vectorisable)

    def run_config(self) -> RunConfig:
        return RunConfig(name=self.name, run_dir=self.run_dir, data=self.data, model=self.model, train=self.train)


class CommitteeSection(_Strict):
    members: int = Field(4, ge=2, description="number of committee members")
    seed: int = Field(0, description="member k starts from PRNGKey(seed + k)")
    train_fraction: Fraction = Field(1.0, description="random subset of the training split per member")
    ddof: Literal[0, 1] = Field(0, description="std over members with 1/(M − ddof)")
    md_driver: Literal["mean", "member_0"] = Field("mean", description="which energy drives the MD")


class SelectConfig(_Strict):
    """Query by committee: the k structures with the largest disagreement, written for DFT."""

    k: PositiveInt = 10
    by: Literal["force", "force_mean", "energy"] = "force"
    candidates: str | None = Field(None, description="structure file to select from; default: the MD trajectory")
    length_unit: str | None = None
    energy_unit: str | None = None
    min_separation: int = Field(0, ge=0, description="minimum distance in frames between selected structures")
    formats: list[Literal["extxyz", "n2p2"]] = Field(default_factory=lambda: ["extxyz", "n2p2"], min_length=1)
    output_length_unit: str = Field("angstrom", description="units of the written input.data")
    output_energy_unit: str = "eV"


class CommitteeConfig(_Strict):
    """A committee: M vmapped trainings → saved committee → test errors → MD → selection."""

    name: str = "committee"
    run_dir: str = "runs/committee"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    committee: CommitteeSection = CommitteeSection()
    md: MDConfig | None = None
    select: SelectConfig | None = None

    check_train = field_validator("train")(_vectorisable)

    @model_validator(mode="after")
    def _candidates(self):
        if self.select is not None and self.select.candidates is None and self.md is None:
            raise ValueError("select.candidates is required without an md section (nothing else to select from)")
        return self

    def run_config(self) -> RunConfig:
        return RunConfig(name=self.name, run_dir=self.run_dir, data=self.data, model=self.model, train=self.train,
                         md=self.md)


_load = load_model


def load_sweep_config(path, overrides=()) -> SweepConfig:
    """Read and validate a sweep YAML (``overrides`` as in `jnnp.config.load_config`)."""
    return _load(SweepConfig, path, overrides)


def load_committee_config(path, overrides=()) -> CommitteeConfig:
    """Read and validate a committee YAML (``overrides`` as in `jnnp.config.load_config`)."""
    return _load(CommitteeConfig, path, overrides)
