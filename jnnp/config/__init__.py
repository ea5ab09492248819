"""Typed, validated run configurations (YAML → pydantic)."""

from jnnp.config.load import apply_overrides, load_config
from jnnp.config.schema import (DataConfig, DescriptorConfig, MDConfig, ModelConfig, RunConfig, SplitConfig,
                                TrainConfig)

__all__ = ["load_config", "apply_overrides", "RunConfig", "DataConfig", "SplitConfig", "DescriptorConfig",
           "ModelConfig", "TrainConfig", "MDConfig"]
