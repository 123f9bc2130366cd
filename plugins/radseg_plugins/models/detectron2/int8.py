"""The int8 engine's parts: static quantization and its calibration slices.

An int8 model is the float32 ONNX model (:meth:`.volume.VolumePredictor._export`) quantized by
onnxruntime's static quantizer: QDQ format, activations uint8 and weights int8 per output
channel, ranges from the min/max of the activations on calibration slices from the model's
own training split (the dataset version it was trained on). It is built once per float32 model
and onnxruntime version and cached next to it (``model-KEY.int8-HASH.onnx``), with a record
(``model-KEY.int8-HASH.json``, a :class:`.reduced.EngineRecord`) of how it was calibrated and
how far its labels agree with float32's, measured as for every reduced-precision engine
(:mod:`.reduced`: once per weights file on the val split, then on every int8 prediction).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from radseg.errors import InputError
from radseg.storage import atomic_path

from .reduced import evenly, split_images

logger = logging.getLogger(__name__)

#: calibration slices taken from the training split (evenly spread)
CALIBRATION_SLICES = 32
#: what the quantizer is asked for; part of the cache key, so a change rebuilds the model
RECIPE = "qdq-u8s8-per-channel-minmax-v1"


def calibration_slices(dataset_dir: Path) -> list[Path]:
    """The calibration images: the training split's, evenly spread (the agreement is then
    measured on other slices: :meth:`.volume.VolumePredictor._measure` leaves these out).

    :raises InputError: the dataset version has no training images.
    """
    train = split_images(dataset_dir, "train")
    if not train:
        raise InputError(
            f"the dataset version at {dataset_dir} has no training images to calibrate the int8 "
            "model on; predict with engine 'onnx'"
        )
    return evenly(train, CALIBRATION_SLICES)


def quantize(f32_model: Path, out: Path, batches: Iterable[np.ndarray]) -> None:
    """Write the int8 (QDQ, per-channel) model of ``f32_model`` to ``out``, calibrated on
    ``batches`` (normalised, padded float32 ``(n, 3, Y, X)``: the graph's input)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"images": batch}

    quiet = _QuantizerNoise()
    logging.getLogger().addFilter(quiet)
    try:
        _quantize(f32_model, out, Reader(), quantize_static, quant_pre_process)
    finally:
        logging.getLogger().removeFilter(quiet)
    if quiet.dropped:
        logger.debug("left out %d 'Axis ... out-of-range' notes of the quantizer", quiet.dropped)


class _QuantizerNoise(logging.Filter):
    """Drops the quantizer's root-logger note for each GroupNorm constant it leaves per-tensor
    ("Axis 1 is out-of-range for weight ..."): one line per norm layer in every job log."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Axis ") and "out-of-range" in str(record.msg):
            self.dropped += 1
            return False
        return True


def _quantize(
    f32_model: Path, out: Path, reader: Any, quantize_static: Any, quant_pre_process: Any
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    with tempfile.TemporaryDirectory(prefix="radseg-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        # Folds constants and infers shapes, so that the quantizer sees every convolution.
        quant_pre_process(str(f32_model), str(prepared), skip_symbolic_shape=True)
        with atomic_path(out) as tmp:
            quantize_static(
                str(prepared),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
