"""Typed run configurations (pydantic v2; frozen, unknown keys rejected).

Units in key names where they are not jnnp's internal ones: ``timestep_fs``, ``temperature_k``;
lengths are Å and energies eV unless a key says otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

__all__ = ["DataConfig", "SplitConfig", "DescriptorConfig", "ModelConfig", "TrainConfig", "MDConfig",
           "RunConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SplitConfig(_Strict):
    """How to split the data: random fractions with a seed, explicit index files, or both (a
    fixed test set, say, with a random validation part; `jnnp.train.splits.make_split`)."""

    validation: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    per_system: bool = Field(False, description="split each source file (system) separately; with a "
                            "fixed index set, the random parts are drawn within each system")
    train_indices: str | None = Field(None, description="file with one 0-based index per line; "
                                      "given, the split is exactly the index files")
    validation_indices: str | None = Field(None, description="index file; without it a random "
                                           "`validation` fraction of the structures not in a given set")
    test_indices: str | None = Field(None, description="index file; without it a random `test` "
                                     "fraction of the structures not in a given set")

    @model_validator(mode="after")
    def _fractions(self):
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test fractions must be < 1")
        return self


class DataConfig(_Strict):
    """Where the labelled structures come from (any format `jnnp.read` knows)."""

    path: str | list[str] = Field(description="a file or directory, or a list of them (e.g. one per system)")
    format: str | None = None
    length_unit: str | None = None
    energy_unit: str | None = None
    index: str | None = Field(None, description="frames to read (from each path), e.g. ':200'")
    test_path: str | None = Field(None, description="separate test set file (then split.test is ignored)")
    split: SplitConfig = SplitConfig()


class DescriptorConfig(_Strict):
    """Symmetry functions: an automatic grid, or an n2p2 input.nn to copy them from."""

    kind: Literal["grid", "n2p2"] = "grid"
    cutoff: PositiveFloat = 5.0
    angular_cutoff: PositiveFloat | None = Field(None, description="cutoff of the angular functions "
                                                 "(default: cutoff); a shorter one means far fewer triplets")
    cutoff_type: str | int = "poly2"
    n_radial: PositiveInt = 8
    radial_mode: Literal["shifted", "centered"] | list[Literal["shifted", "centered"]] = Field(
        "shifted", description="radial grid rule, or a list: the union of their grids (a pool to select from)")
    r_min: float = Field(0.5, ge=0.0)
    angular_eta: list[float] = Field(default_factory=lambda: [0.01, 0.05])
    zeta: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    lambdas: list[float] = Field(default_factory=lambda: [-1.0, 1.0])
    angular_type: Literal[3, 9] = 9
    input_nn: str | None = None
    length_unit: str | None = None
    select: Literal["cur", "fps"] | None = Field(
        None, description="keep select_n functions per element of the grid, chosen by CUR or farthest-point "
        "sampling on the atoms of the training structures (jnnp.hyper.select)")
    select_n: PositiveInt | None = Field(None, description="functions per element to keep (with select)")
    select_frames: PositiveInt | None = Field(
        None, description="with select: use this many training structures, evenly spaced (default all)")

    @model_validator(mode="after")
    def _n2p2_needs_file(self):
        if self.kind == "n2p2" and not self.input_nn:
            raise ValueError("kind 'n2p2' needs input_nn (path to an n2p2 input.nn)")
        if self.select is not None and (self.kind != "grid" or self.select_n is None):
            raise ValueError("select needs kind 'grid' (the pool) and select_n (functions per element to keep)")
        return self


class ModelConfig(_Strict):
    descriptor: DescriptorConfig = DescriptorConfig()
    hidden: list[PositiveInt] = Field(default_factory=lambda: [25, 25])
    activation: str = "t"
    scaling: Literal["none", "scale", "center", "scale_center", "sigma"] = "scale_center"
    precision: Literal["float64", "float32"] = "float64"


class TrainConfig(_Strict):
    """Training settings: the single source of their names and defaults (`jnnp.train.loop.
    TrainSettings`, the library's form, takes its defaults from here)."""

    epochs: PositiveInt = 100
    batch_size: PositiveInt = 8
    optimizer: Literal["adam", "adamw", "kalman", "lbfgs"] = "adam"
    learning_rate: PositiveFloat = 1e-3
    schedule: Literal["constant", "cosine", "plateau"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0.0)
    energy_weight: float = Field(1.0, ge=0.0)
    force_weight: float = Field(10.0, ge=0.0)
    stress_weight: float = Field(0.0, ge=0.0)
    clip_norm: float | None = Field(10.0, gt=0.0)
    ema_decay: float | None = Field(None, ge=0.0, lt=1.0, description="validate and keep an exponential "
                                    "moving average of the weights with this decay, e.g. 0.99 (adam/adamw)")
    patience: PositiveInt = 50
    keep: Literal["best", "last"] = Field("best", description="the model kept and tested: 'best' (lowest "
                                          "validation loss) or 'last' (the final epoch's, as aenet's fits)")
    seed: int = 0
    max_time_s: float | None = Field(None, gt=0.0, description="stop training after this wall time")
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0, description="reduce-on-plateau learning-rate factor")
    plateau_patience: PositiveInt = Field(10, description="reduce-on-plateau patience [epochs]")
    kalman_lambda: float = Field(0.98, gt=0.0, le=1.0, description="Kalman forgetting factor λ_0")
    kalman_nu: float = Field(0.9987, gt=0.0, le=1.0, description="Kalman λ relaxation ν")
    kalman_epsilon: PositiveFloat = Field(0.01, description="Kalman covariance initialised to I/ε")
    kalman_forces_per_update: int = Field(8, ge=0, description="force components per Kalman update")
    lbfgs_memory: PositiveInt = Field(10, description="L-BFGS history length (optimizer lbfgs, full batch)")
    normalize: bool = Field(True, description="fit reference energies, energy unit and SF scaling")
    refit_shifts: bool = Field(True, description="after training, refit the reference energies to the "
                               "trained model's per-atom energy errors on the training set")
    energy_scale: Literal["auto", "energy_std", "force_rms"] | PositiveFloat = Field(
        "auto", description="energy unit of the network output: a rule or a number [eV]")
    eval_batch_size: PositiveInt | None = Field(None, description="validation batch size (default batch_size, at most 64)")
    growth: float = Field(1.25, gt=1.0, description="capacity ratio between padded batch shapes")
    cache_graphs: bool = Field(True, description="keep neighbour lists in run_dir/cache")
    cache_features: bool = Field(True, description="energy-only training: compute the symmetry functions "
                                 "once instead of in every step (jnnp.train.features)")
    plots: bool = Field(True, description="write PNG plots at the end")


class MDConfig(_Strict):
    structure: str | None = Field(None, description="start structure; default: first test structure")
    structure_index: int = 0
    length_unit: str | None = None
    energy_unit: str | None = None
    model: str | None = Field(None, description="model directory (jnnp or n2p2); default: the trained one")
    model_length_unit: str | None = None
    model_energy_unit: str | None = None
    ensemble: Literal["nve", "nvt_nose_hoover", "nvt_langevin", "npt_nose_hoover"] = "nve"
    timestep_fs: PositiveFloat = 0.5
    steps: PositiveInt = 1000
    temperature_k: PositiveFloat = 300.0
    tau_fs: PositiveFloat | None = Field(None, description="Nosé–Hoover thermostat time constant "
                                         "(default 100 time steps)")
    friction_per_fs: PositiveFloat = 0.01
    pressure_bar: float = Field(1.0, description="npt_nose_hoover: target pressure")
    barostat_tau_fs: PositiveFloat | None = Field(None, description="npt_nose_hoover: barostat time "
                                                  "constant (default 1000 time steps)")
    thermo_every: PositiveInt = 10
    trajectory_every: PositiveInt = 100
    samples_per_chunk: PositiveInt = 10
    skin: float = Field(1.0, ge=0.0)
    neighbors: Literal["auto", "host", "jax-md"] = "auto"
    neighbor_capacity_multiplier: PositiveFloat = Field(1.25, description="jax-md neighbour buffers: "
                                                        "count × this at allocation (below 1 forces reallocations)")
    precision: Literal["float64", "float32"] = "float64"
    devices: PositiveInt = Field(1, description="share each step's neighbour search, energy and forces out "
                                 "over this many JAX devices (jax-md neighbours only; CPU cores: start with "
                                 "XLA_FLAGS=--xla_force_host_platform_device_count=N)")
    seed: int = 0
    trajectory_format: Literal["extxyz", "traj"] = "extxyz"
    rdf_pairs: list[tuple[int, int]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _multiples(self):
        if self.trajectory_every % self.thermo_every:
            raise ValueError("trajectory_every must be a multiple of thermo_every")
        return self


class RunConfig(_Strict):
    """A whole run: data → model → training → (optional) MD."""

    name: str = "run"
    run_dir: str = "runs/run"
    data: DataConfig | None = None
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    md: MDConfig | None = None
