"""The detectron2 plugin's settings: the ``[plugins.detectron2]`` table of the settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Detectron2Settings(BaseModel):
    """Defaults for every training and prediction this plugin runs.

    A training request's own options (``radseg train --set``) override them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    predict_batch_size: int = Field(default=8, ge=1, le=1024, description="slices per pass")
    predict_engine: Literal["auto", "onnx", "int8", "torch"] = Field(
        default="auto",
        description=(
            "semantic models: auto = int8 onnxruntime on a CPU where it agrees with float32 "
            "(int8_min_dice), else float32 onnxruntime; torch on a GPU"
        ),
    )
    int8_min_dice: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="lowest per-class Dice between int8 and float32 labels for auto to use int8",
    )
    int8_check_every: int = Field(
        default=25,
        ge=0,
        le=10_000,
        description="on int8 predictions, also predict every n-th slice in float32 and compare "
        "(0: no check)",
    )
    predict_flip_tta: bool = Field(
        default=False, description="average the prediction of each slice and its mirror"
    )
    num_workers: int | None = Field(default=None, ge=0, description="data-loader processes")
    pretrained_weights: Path | None = Field(
        default=None, description="local file with initial weights; nothing is downloaded"
    )

    @field_validator("pretrained_weights")
    @classmethod
    def _must_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file (weights are never downloaded)")
        return value
