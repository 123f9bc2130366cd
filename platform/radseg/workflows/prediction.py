"""Predict a label volume for a series with a trained model version."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.contracts import (
    ClassInfo,
    Geometry,
    PredictOutput,
    PredictRequest,
    ProgressFn,
    ReportFn,
    as_predict_output,
    no_progress,
    no_report,
)
from radseg.core import Platform
from radseg.db.models import DatasetVersion, Job, ModelVersion, Prediction, Series, Study
from radseg.errors import InputError, NotFound
from radseg.imaging.body import HU_MODALITIES, body_boxes
from radseg.imaging.channels import ChannelRecipe, hu_to_channels
from radseg.imaging.review_priority import quantise_uncertainty
from radseg.imaging.volumes import read_volume, write_volume
from radseg.metrics import class_metrics, dice_per_class, mean_defined, spacing_zyx, study_summary
from radseg.model_registry import REDUCED_PRECISION, code_version, config_hash
from radseg.roles import OPERATORS, Actor, require_role
from radseg.workflows import doubt
from radseg.workflows.datasets import classes_from_rows
from radseg.workflows.jobs import queue_jobs
from radseg.workflows.lookup import get_row


@dataclass(frozen=True)
class ModelRun:
    """A trained model version, ready to predict outside any transaction: its backend, config,
    classes, weights, and the channel recipe its input is made with."""

    backend: str
    config: dict[str, Any]
    classes: list[ClassInfo]
    recipe: ChannelRecipe
    weights: Path
    #: the dataset version it was trained on (a backend may calibrate on its training split)
    dataset_dir: Path | None = None

    @classmethod
    def of(cls, platform: Platform, version: ModelVersion, recipe: dict[str, Any]) -> ModelRun:
        dataset_path = version.dataset_version.path if version.dataset_version else ""
        return cls(
            backend=version.model.backend,
            config=dict(version.config),
            classes=classes_from_rows(version.config["classes"]),
            recipe=ChannelRecipe.from_dict(recipe),
            weights=platform.resolve(version.weights_path),
            dataset_dir=platform.resolve(dataset_path) if dataset_path else None,
        )

    def predict(
        self,
        platform: Platform,
        hu: np.ndarray,
        progress: ProgressFn,
        report: ReportFn = no_report,
        modality: str = "",
    ) -> np.ndarray:
        """The label volume for ``hu`` (z, y, x), from the model's backend plugin, which tells
        ``report`` how it predicted (the engine and its checks)."""
        return self.predict_output(
            platform, hu, progress, uncertainty=False, report=report, modality=modality
        ).labels

    def predict_output(
        self,
        platform: Platform,
        hu: np.ndarray,
        progress: ProgressFn,
        *,
        uncertainty: bool,
        report: ReportFn = no_report,
        modality: str = "",
    ) -> PredictOutput:
        """The labels for ``hu`` and, with ``uncertainty`` where the backend gives one, its
        per-voxel uncertainty (an old backend's bare label array is read as labels alone); the
        backend tells ``report`` how it predicted. For a CT (``modality``) the backend also
        gets where the body is (:func:`radseg.imaging.body.body_boxes`), and may skip the
        slices of air only."""
        backend = platform.plugins.model_backend(self.backend)
        request = PredictRequest(
            model_dir=self.weights.parent,
            weights=self.weights,
            config=self.config,
            classes=self.classes,
            images=hu_to_channels(hu.astype("float32", copy=False), self.recipe),
            device=platform.settings.device,
            dataset_dir=self.dataset_dir,
            report=report,
            uncertainty=uncertainty,
            body_boxes=body_boxes(hu) if modality in HU_MODALITIES else None,
        )
        return as_predict_output(backend.predict(request, progress))


@dataclass(frozen=True)
class _Inputs:
    """What a prediction needs from the database, read in one short transaction."""

    series_id: int
    model: ModelRun
    volume: Path
    labels: Path | None
    spacing: tuple[float, ...]
    provenance: dict[str, Any]
    modality: str = ""


def predict(
    platform: Platform,
    *,
    model_version_id: int,
    series_instance_uid: str,
    progress: ProgressFn = no_progress,
) -> Prediction:
    """Run the model on the whole series; the mask has the series' exact geometry.

    The channels are made with the recipe of the dataset version the model was trained on, so
    inference sees what training saw. When the series has labels, the metrics of
    :mod:`radseg.metrics` per class are recorded (Dice, IoU, HD95, ASSD, surface Dice, volume
    difference, with the series' spacing). ``provenance`` records the model version, dataset
    version, config hash, code version and the time the backend took, and how the backend
    predicted (``provenance["inference"]``: the engine, a reduced-precision engine's check
    against float32). Where the backend measured a reduced-precision engine (bf16, int8), what
    it measured is stored with the model version (``metrics["bf16"]``, ``metrics["int8"]``, each
    with this prediction's check of it as ``last_check``): the model card shows it.

    A CT series' slices of air only (nothing denser than −500 HU: :mod:`radseg.imaging.body`)
    are background; the backend is told which they are and need not run the model on them.
    Other modalities are predicted slice by slice whole.

    Where the backend gives a per-voxel uncertainty, it is kept as a uint8 map next to the mask
    (``predictions/ID.uncertainty.nii.gz``, same geometry) and the prediction gets its review
    priority, reason and quality signals (:mod:`radseg.workflows.doubt`); without one, the
    priority comes from the shape signals alone.
    """
    with platform.sessions() as session:
        inputs = _read_inputs(platform, session, model_version_id, series_instance_uid)
    hu, geometry = read_volume(inputs.volume)
    progress(0.05, "making input channels")
    started = time.perf_counter()
    facts: dict[str, Any] = {}
    output = inputs.model.predict_output(
        platform,
        hu,
        lambda f, m: progress(0.05 + 0.9 * f, m),
        uncertainty=True,
        report=facts.update,
        modality=inputs.modality,
    )
    labels = np.asarray(output.labels)
    engine_facts = _json_safe(facts)
    reduced = {
        name: engine_facts.pop(name)
        for name in REDUCED_PRECISION
        if isinstance(engine_facts.get(name), dict)
    }
    provenance = {
        **inputs.provenance,
        "seconds": round(time.perf_counter() - started, 3),
        "slices": int(labels.shape[0]),
        **({"inference": engine_facts} if engine_facts else {}),
    }
    if labels.shape != hu.shape:
        raise RuntimeError(f"backend returned labels of shape {labels.shape}, series is {hu.shape}")
    metrics = _measure(labels, inputs, progress) if inputs.labels is not None else {}
    stored_uncertainty = None
    if output.uncertainty is not None:
        if output.uncertainty.shape != hu.shape:
            raise RuntimeError(
                f"backend returned uncertainty of shape {output.uncertainty.shape}, "
                f"series is {hu.shape}"
            )
        stored_uncertainty = quantise_uncertainty(output.uncertainty)
    progress(0.97, "scoring the prediction for review")
    scored = doubt.score_prediction(
        labels,
        stored_uncertainty,
        output.method,
        inputs.model.classes,
        geometry,
        doubt.training_reference(platform, model_version_id),
    )
    with platform.sessions.begin() as session:
        prediction = Prediction(
            series_id=inputs.series_id,
            model_version_id=model_version_id,
            mask_path="",
            metrics=metrics,
            provenance=provenance,
            priority=scored.priority,
            priority_reason=scored.reason,
            quality=scored.quality,
        )
        session.add(prediction)
        session.flush()
        mask_file = platform.path("predictions", f"{prediction.id}.nii.gz")
        write_volume(mask_file, labels.astype("uint8"), geometry)
        prediction.mask_path = platform.relative(mask_file)
        if reduced:
            _store_reduced(session, model_version_id, reduced, engine_facts, prediction.id)
        if stored_uncertainty is not None:
            map_file = platform.path("predictions", f"{prediction.id}.uncertainty.nii.gz")
            doubt.write_uncertainty(map_file, stored_uncertainty, geometry)
            prediction.uncertainty_path = platform.relative(map_file)
    progress(1.0, f"prediction {prediction.id} written")
    return prediction


def _store_reduced(
    session: Session,
    model_version_id: int,
    reduced: dict[str, dict[str, Any]],
    engine_facts: dict[str, Any],
    prediction_id: int,
) -> None:
    """Keep the backend's measurements of each reduced-precision engine (``reduced``, by name)
    with the model version, with the prediction that reported them (``prediction_id``, which
    says which report is the newest); the check this prediction made of an engine (if any)
    becomes its ``last_check``, an earlier one is kept when this one made none."""
    version = session.get(ModelVersion, model_version_id, with_for_update=True)
    if version is None:  # deleted while predicting: the prediction's own row says it all
        return
    metrics = dict(version.metrics or {})
    for name, facts in reduced.items():
        stored = dict(metrics.get(name) or {})
        record = {**facts, "prediction_id": prediction_id}
        check = engine_facts.get(f"{name}_check")
        if isinstance(check, dict):
            record["last_check"] = {**check, "prediction_id": prediction_id}
        elif stored.get("last_check"):
            record["last_check"] = stored["last_check"]
        metrics[name] = record
    version.metrics = metrics


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """A backend's facts as plain JSON (whatever numpy scalars it put in)."""
    return dict(json.loads(json.dumps(value, default=_plain)))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _read_inputs(
    platform: Platform, session: Session, model_version_id: int, series_instance_uid: str
) -> _Inputs:
    model_version = session.get(ModelVersion, model_version_id)
    if model_version is None:
        ids = ", ".join(str(i) for i in session.scalars(select(ModelVersion.id))) or "none"
        raise InputError(f"model version {model_version_id} does not exist (have: {ids})")
    series = session.scalars(
        select(Series).where(Series.series_instance_uid == series_instance_uid)
    ).first()
    if series is None:
        raise InputError(f"series {series_instance_uid} is not ingested; see `radseg studies list`")
    dataset_version = session.get(DatasetVersion, model_version.dataset_version_id)
    assert dataset_version is not None
    latest_labels = max(series.label_sets, key=lambda ls: ls.version, default=None)
    return _Inputs(
        series_id=series.id,
        model=ModelRun.of(platform, model_version, dataset_version.recipe),
        volume=platform.resolve(series.volume_path),
        labels=platform.resolve(latest_labels.path) if latest_labels else None,
        spacing=spacing_zyx(Geometry.from_dict(series.geometry).spacing),
        modality=series.modality or "",
        provenance={
            "model_version_id": model_version.id,
            "dataset_version_id": dataset_version.id,
            "dataset_content_hash": dataset_version.content_hash,
            "config_hash": model_version.config_hash or config_hash(model_version.config),
            "code_version": code_version(),
            "backend": model_version.model.backend,
        },
    )


def _measure(labels: np.ndarray, inputs: _Inputs, progress: ProgressFn) -> dict[str, Any]:
    """The prediction against the series' latest labels, per class and in summary."""
    assert inputs.labels is not None
    truth, _ = read_volume(inputs.labels)
    classes = inputs.model.classes
    ids = [c.id for c in classes]
    dice = dice_per_class(labels, truth, ids)
    progress(0.96, "measuring the prediction against the labels")
    per_id = class_metrics(labels, truth, ids, inputs.spacing)
    return {
        "dice": {c.name: dice[c.id] for c in classes},
        "mean_dice": mean_defined(dice),
        **study_summary({c.name: per_id[c.id] for c in classes}),
    }


# --- use cases ----------------------------------------------------------------------------------


def request_predictions(
    platform: Platform,
    actor: Actor,
    *,
    model_version_id: int,
    series_ids: Sequence[int] = (),
    series_uids: Sequence[str] = (),
    study_ids: Sequence[int] = (),
    all_series: bool = False,
    via: str | None = None,
) -> list[Job]:
    """Queue one prediction job per series, for the series named by id, by SeriesInstanceUID
    and those of the studies given (each series once, in that order), or, with ``all_series``,
    for every ingested series (read in one query); audited.

    The jobs are queued in one go (:func:`~radseg.workflows.jobs.queue_jobs`) and are
    independent: any number of workers, on any number of machines, share them, and each runs
    exactly once (the claim is ``FOR UPDATE SKIP LOCKED``).

    :raises NotFound: no such model version, series or study.
    :raises InputError: no series at all to predict.
    """
    require_role(actor, OPERATORS, "predict")
    extra = {"via": via} if via else {}
    with platform.sessions.begin() as session:
        get_row(session, ModelVersion, model_version_id, "model version")
        if all_series:
            chosen = [
                (row.id, row.series_instance_uid)
                for row in session.execute(
                    select(Series.id, Series.series_instance_uid).order_by(Series.id)
                )
            ]
            if not chosen:
                raise InputError("there is no series to predict; ingest some first")
        else:
            chosen = [
                (s.id, s.series_instance_uid)
                for s in _chosen_series(session, series_ids, series_uids, study_ids)
            ]
        if not chosen:
            raise InputError("choose at least one study with a series, or a series")
        return queue_jobs(
            session,
            platform,
            actor,
            "predict",
            [
                {"model_version_id": model_version_id, "series_instance_uid": uid}
                for _, uid in chosen
            ],
            targets=[f"series:{series_id}" for series_id, _ in chosen],
            **extra,
        )


def _chosen_series(
    session: Session,
    series_ids: Sequence[int],
    series_uids: Sequence[str],
    study_ids: Sequence[int],
) -> list[Series]:
    chosen = [get_row(session, Series, i, "series") for i in series_ids]
    for uid in series_uids:
        found = session.scalars(select(Series).where(Series.series_instance_uid == uid)).first()
        if found is None:
            raise NotFound(f"there is no series {uid}; see `radseg studies list`")
        chosen.append(found)
    for study_id in study_ids:
        get_row(session, Study, study_id, "study")
    if study_ids:
        chosen += session.scalars(
            select(Series).where(Series.study_id.in_(list(study_ids))).order_by(Series.id)
        )
    unique: dict[int, Series] = {}
    for series in chosen:
        unique.setdefault(series.id, series)
    return list(unique.values())
