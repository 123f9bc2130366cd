"""Export a prediction with an exporter plugin."""

from __future__ import annotations

from pathlib import Path

from radseg.audit import record
from radseg.core import Platform
from radseg.db.models import Prediction
from radseg.errors import InputError
from radseg.imaging.volumes import read_volume
from radseg.workflows.datasets import classes_from_rows


def export(
    platform: Platform, *, prediction_id: int, fmt: str, out: Path, actor: str = "cli"
) -> Path:
    """Write prediction ``prediction_id`` as ``fmt`` to ``out`` (a file, or a folder)."""
    exporter = platform.plugins.exporter(fmt)
    with platform.sessions() as session:
        prediction = session.get(Prediction, prediction_id)
        if prediction is None:
            raise InputError(
                f"prediction {prediction_id} does not exist; see `radseg predictions list`"
            )
        classes = classes_from_rows(prediction.model_version.config["classes"])
        mask_path = platform.resolve(prediction.mask_path)
    out = Path(out)
    if out.is_dir():
        out = out / f"prediction-{prediction_id}{exporter.suffix}"
    labels, geometry = read_volume(mask_path)
    written = exporter.export(labels, geometry, classes, out)
    with platform.sessions.begin() as session:
        record(session, actor, "export", f"prediction:{prediction_id}", format=fmt)
    return written
