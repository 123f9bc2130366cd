"""The detectron2 plugin's settings: the ``[plugins.detectron2]`` table of the settings file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator


class Detectron2Settings(BaseModel):
    """Defaults for every training and prediction this plugin runs.

    A training request's own options (``radseg train --set``) override them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    predict_batch_size: int = Field(default=8, ge=1, le=1024, description="slices per pass")
    predict_engine: Literal["auto", "onnx", "bf16", "int8", "torch"] = Field(
        default="auto",
        description=(
            "semantic models: auto = on a CPU bf16 where the CPU has native bfloat16 (AMX or "
            "AVX512-BF16) and its labels agree with float32's (reduced_precision_min_dice), "
            "else int8 onnxruntime where it agrees, else float32 onnxruntime; torch on a GPU. "
            "bf16 or int8 by name: always that engine"
        ),
    )
    reduced_precision_min_dice: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("reduced_precision_min_dice", "int8_min_dice"),
        description="lowest per-class Dice between a bf16 or int8 engine's labels and float32's "
        "for auto to use that engine (old name: int8_min_dice)",
    )
    reduced_precision_check_every: int = Field(
        default=25,
        ge=0,
        le=10_000,
        validation_alias=AliasChoices("reduced_precision_check_every", "int8_check_every"),
        description="on bf16 and int8 predictions, also predict every n-th slice in float32 and "
        "compare (0: no check; old name: int8_check_every)",
    )
    predict_flip_tta: bool = Field(
        default=False, description="average the prediction of each slice and its mirror"
    )
    num_workers: int | None = Field(default=None, ge=0, description="data-loader processes")
    pretrained_weights: Path | None = Field(
        default=None, description="local file with initial weights; nothing is downloaded"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_name_each(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for new, old in _RENAMED.items():
                if new in data and old in data:
                    raise ValueError(f"{old} is the old name of {new}; set only {new}")
        return data

    @field_validator("pretrained_weights")
    @classmethod
    def _must_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file (weights are never downloaded)")
        return value


#: settings renamed when bf16 joined int8 (new name → old name, still read)
_RENAMED = {
    "reduced_precision_min_dice": "int8_min_dice",
    "reduced_precision_check_every": "int8_check_every",
}
