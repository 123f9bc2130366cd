"""Predict a label volume for a series with a trained model version."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.contracts import Geometry, PredictRequest, ProgressFn, no_progress
from radseg.core import Platform
from radseg.db.models import DatasetVersion, Job, ModelVersion, Prediction, Series, Study
from radseg.errors import InputError, NotFound
from radseg.imaging.channels import ChannelRecipe, hu_to_channels
from radseg.imaging.volumes import read_volume, write_volume
from radseg.metrics import class_metrics, dice_per_class, mean_defined, spacing_zyx, study_summary
from radseg.model_registry import code_version, config_hash
from radseg.roles import OPERATORS, Actor
from radseg.workflows.datasets import classes_from_rows
from radseg.workflows.jobs import queue_job, require_role
from radseg.workflows.lookup import get_row


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
    version, config hash, code version and the time the backend took.
    """
    with platform.sessions() as session:
        model_version = session.get(ModelVersion, model_version_id)
        if model_version is None:
            ids = ", ".join(str(i) for i in session.scalars(select(ModelVersion.id))) or "none"
            raise InputError(f"model version {model_version_id} does not exist (have: {ids})")
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == series_instance_uid)
        ).first()
        if series is None:
            raise InputError(
                f"series {series_instance_uid} is not ingested; see `radseg studies list`"
            )
        dataset_version = session.get(DatasetVersion, model_version.dataset_version_id)
        assert dataset_version is not None
        provenance = {
            "model_version_id": model_version.id,
            "dataset_version_id": dataset_version.id,
            "dataset_content_hash": dataset_version.content_hash,
            "config_hash": model_version.config_hash or config_hash(model_version.config),
            "code_version": code_version(),
            "backend": model_version.model.backend,
        }
        spacing = spacing_zyx(Geometry.from_dict(series.geometry).spacing)
        recipe = ChannelRecipe.from_dict(dataset_version.recipe)
        classes = classes_from_rows(model_version.config["classes"])
        config = dict(model_version.config)
        backend_name = model_version.model.backend
        weights = platform.resolve(model_version.weights_path)
        volume_path = platform.resolve(series.volume_path)
        latest_labels = max(series.label_sets, key=lambda ls: ls.version, default=None)
        labels_path = platform.resolve(latest_labels.path) if latest_labels else None
        series_id = series.id
    backend = platform.plugins.model_backend(backend_name)
    hu, geometry = read_volume(volume_path)
    progress(0.05, "making input channels")
    images = hu_to_channels(hu.astype("float32", copy=False), recipe)
    started = time.perf_counter()
    labels = backend.predict(
        PredictRequest(
            model_dir=weights.parent,
            weights=weights,
            config=config,
            classes=classes,
            images=images,
            device=platform.settings.device,
        ),
        lambda f, m: progress(0.05 + 0.9 * f, m),
    )
    provenance["seconds"] = round(time.perf_counter() - started, 3)
    provenance["slices"] = int(labels.shape[0])
    if labels.shape != hu.shape:
        raise RuntimeError(f"backend returned labels of shape {labels.shape}, series is {hu.shape}")
    metrics: dict[str, object] = {}
    if labels_path is not None:
        truth, _ = read_volume(labels_path)
        dice = dice_per_class(labels, truth, [c.id for c in classes])
        progress(0.96, "measuring the prediction against the labels")
        per_id = class_metrics(labels, truth, [c.id for c in classes], spacing)
        metrics = {
            "dice": {c.name: dice[c.id] for c in classes},
            "mean_dice": mean_defined(dice),
            **study_summary({c.name: per_id[c.id] for c in classes}),
        }
    with platform.sessions.begin() as session:
        prediction = Prediction(
            series_id=series_id,
            model_version_id=model_version_id,
            mask_path="",
            metrics=metrics,
            provenance=provenance,
        )
        session.add(prediction)
        session.flush()
        mask_file = platform.path("predictions", f"{prediction.id}.nii.gz")
        write_volume(mask_file, labels.astype("uint8"), geometry)
        prediction.mask_path = platform.relative(mask_file)
    progress(1.0, f"prediction {prediction.id} written")
    return prediction


# --- use cases ----------------------------------------------------------------------------------


def request_predictions(
    platform: Platform,
    actor: Actor,
    *,
    model_version_id: int,
    series_ids: Sequence[int] = (),
    series_uids: Sequence[str] = (),
    study_ids: Sequence[int] = (),
    via: str | None = None,
) -> list[Job]:
    """Queue one prediction job per series, for the series named by id, by SeriesInstanceUID
    and those of the studies given (each series once, in that order); audited.

    :raises NotFound: no such model version, series or study.
    :raises InputError: no series at all to predict.
    """
    require_role(actor, OPERATORS, "predict")
    extra = {"via": via} if via else {}
    with platform.sessions.begin() as session:
        get_row(session, ModelVersion, model_version_id, "model version")
        chosen = _chosen_series(session, series_ids, series_uids, study_ids)
        if not chosen:
            raise InputError("choose at least one study with a series, or a series")
        return [
            queue_job(
                session,
                platform,
                actor,
                "predict",
                {
                    "model_version_id": model_version_id,
                    "series_instance_uid": series.series_instance_uid,
                },
                target=f"series:{series.id}",
                **extra,
            )
            for series in chosen
        ]


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
