"""Where the model doubts, through the prediction use case (:func:`radseg.workflows.prediction.
predict`) and the review queue, on SQLite and PostgreSQL: the uncertainty map a backend gives is
stored in the series' geometry and reads back as stored; the priority and its reason are kept;
the model version's training statistics are made once; a backend written before uncertainty
maps (a bare label array) still predicts; the queue puts the most doubtful first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from sqlalchemy import select

from radseg.contracts import (
    ClassInfo,
    Geometry,
    PredictOutput,
    PredictRequest,
    SeriesVolume,
    SliceRef,
)
from radseg.core import Platform
from radseg.db.models import (
    Dataset,
    DatasetVersion,
    Model,
    ModelVersion,
    Prediction,
    Series,
    Study,
)
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.channels import ChannelRecipe
from radseg.imaging.dataset_version import build_dataset_version
from radseg.imaging.review_priority import quantise_uncertainty, slice_profile
from radseg.imaging.volumes import read_volume, write_volume
from radseg.settings import Settings
from radseg.workflows.prediction import predict
from radseg.workflows.review import review_queue
from tests.support import add_series_with_prediction, migrated_platform

LESION = ClassInfo(id=1, name="lesion", color=(0, 255, 0))
SHAPE = (5, 12, 16)  # z, y, x
GEOMETRY = Geometry(
    (SHAPE[2], SHAPE[1], SHAPE[0]),
    (0.7, 0.8, 2.5),
    (-12.0, 30.5, 101.25),
    (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
)


def three_parts() -> np.ndarray:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2, 1:4, 1:4] = 1
    labels[2, 5:8, 6:9] = 1
    labels[2, 8:11, 12:15] = 1
    return labels


def gradient() -> np.ndarray:
    """A map that differs on every slice (so a flipped or shifted read-back would show), low
    enough (≤ 0.1) that the three parts stay the main reason."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return ((z * 37 + y * 5 + x) % 97 / 960.0).astype(np.float32)


class DoubtingBackend:
    name: ClassVar[str] = "doubting"
    architectures: ClassVar[tuple[str, ...]] = ("any",)

    def train(self, request: Any, progress: Any) -> Any:
        raise AssertionError("not trained here")

    def predict(self, request: PredictRequest, progress: Any) -> Any:
        assert request.images.shape[:3] == SHAPE
        if not request.uncertainty:
            return three_parts()
        return PredictOutput(three_parts(), gradient(), "test gradient")


class OldBackend(DoubtingBackend):
    """A backend written before uncertainty maps: a bare label array, whatever is asked."""

    name: ClassVar[str] = "old"

    def predict(self, request: PredictRequest, progress: Any) -> Any:
        return three_parts()


class Backends:
    @hookimpl
    def radseg_register_models(self) -> list[type]:
        return [DoubtingBackend, OldBackend]


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    made = migrated_platform(settings, autoload=False, plugins=[("backends", Backends())])
    yield made
    made.close()


def training_set(out: Path) -> None:
    """A built dataset version whose training split has the lesion in one part, twice."""
    items = []
    for n, patient in enumerate(("a", "b")):
        labels = np.zeros(SHAPE, dtype=np.uint8)
        labels[1:4, 2:5, 2:5] = 1  # 27 voxels, as the prediction has (in three parts)
        uid = f"2.25.9{n}"
        items.append(
            SeriesVolume(
                patient_key=patient,
                study_instance_uid=f"{uid}.0",
                series_instance_uid=uid,
                modality="CT",
                geometry=GEOMETRY,
                hu=np.zeros(SHAPE, dtype=np.float32),
                slices=[SliceRef(f"{uid}.{k}", k, (0.0, 0.0, 2.5 * k)) for k in range(SHAPE[0])],
                labels=labels,
            )
        )
    split = {"train": ["a", "b"], "val": [], "test": []}
    build_dataset_version(out, items, [LESION], ChannelRecipe(), split, name="ds", version=1)


def model_version(platform: Platform, backend: str) -> tuple[int, str]:
    """A model version of ``backend`` trained (nominally) on a real dataset version, and a
    series to predict; their ids."""
    training_set(platform.path("datasets", "ds", "v1"))
    volume = platform.path("volumes", "s.nii.gz")
    write_volume(volume, np.full(SHAPE, 40.0, dtype=np.float32), GEOMETRY)
    classes = [{"id": 1, "name": "lesion", "color": [0, 255, 0]}]
    with platform.sessions.begin() as session:
        version = ModelVersion(
            model=Model(name=f"m-{backend}", backend=backend),
            dataset_version=DatasetVersion(
                dataset=Dataset(name="ds"),
                version=1,
                content_hash="0" * 64,
                classes=classes,
                recipe=ChannelRecipe().to_dict(),
                split={},
                path="datasets/ds/v1",
            ),
            config={"classes": classes},
            weights_path="models/1/model_final.pth",
        )
        series = Series(
            study=Study(study_instance_uid="2.25.1", patient_key="p", description="CT"),
            series_instance_uid="2.25.1.1",
            modality="CT",
            geometry=GEOMETRY.to_dict(),
            volume_path=platform.relative(volume),
        )
        session.add_all([version, series])
        session.flush()
        return version.id, series.series_instance_uid


def test_the_uncertainty_map_is_stored_in_the_series_geometry_and_scored(
    platform: Platform,
) -> None:
    version_id, uid = model_version(platform, "doubting")
    prediction = predict(platform, model_version_id=version_id, series_instance_uid=uid)
    assert prediction.uncertainty_path.endswith(".uncertainty.nii.gz")
    stored, geometry = read_volume(platform.resolve(prediction.uncertainty_path))
    assert stored.dtype == np.uint8
    assert np.array_equal(stored, quantise_uncertainty(gradient()))
    assert geometry.size == GEOMETRY.size
    assert np.allclose(geometry.spacing, GEOMETRY.spacing)
    assert np.allclose(geometry.origin, GEOMETRY.origin)
    assert np.allclose(geometry.direction, GEOMETRY.direction)
    # the training split has the lesion in one part: three parts is the main reason
    assert prediction.priority_reason == "lesion in 3 parts; training has 1"
    quality = prediction.quality or {}
    assert quality["uncertainty"] == "test gradient"
    assert quality["classes"]["lesion"]["components"] == 3
    assert quality["classes"]["lesion"]["scores"]["components"] == pytest.approx(0.4)
    assert quality["slices"] == slice_profile(stored / 255.0)
    assert prediction.priority is not None and prediction.priority >= 0.4
    with platform.sessions() as session:
        version = session.get(ModelVersion, version_id)
        assert version is not None and version.reference_stats is not None
        assert version.reference_stats["series"] == 2
        assert version.reference_stats["classes"]["lesion"]["components"]["max"] == 1


def test_a_backend_that_returns_bare_labels_still_predicts_and_is_ranked_by_shape(
    platform: Platform,
) -> None:
    version_id, uid = model_version(platform, "old")
    prediction = predict(platform, model_version_id=version_id, series_instance_uid=uid)
    mask, _ = read_volume(platform.resolve(prediction.mask_path))
    assert np.array_equal(mask, three_parts())
    assert prediction.uncertainty_path == ""
    assert prediction.priority == pytest.approx(0.4)
    assert prediction.priority_reason == "lesion in 3 parts; training has 1"
    assert (prediction.quality or {})["uncertainty"] is None


def test_the_queue_puts_the_most_doubtful_first_and_keeps_the_other_orders(
    platform: Platform,
) -> None:
    hu = np.zeros((2, 4, 4), dtype=np.float32)
    geometry = Geometry((4, 4, 2), (1.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    made = []
    with platform.sessions.begin() as session:
        for priority in (0.2, None, 0.9, 0.0):
            row = add_series_with_prediction(
                session,
                platform,
                hu=hu,
                mask=np.zeros(hu.shape, dtype=np.uint8),
                geometry=geometry,
                classes=[{"id": 1, "name": "lesion", "color": "#00ff00"}],
            )
            row.priority = priority
            made.append(row.id)
    low, unscored, high, zero = made

    def queue(sort: str) -> list[int]:
        with platform.sessions() as session:
            return [p.id for p in review_queue(session, sort=sort)]

    assert queue("priority") == [high, low, zero, unscored]  # unscored last on both databases
    assert queue("oldest") == made
    assert queue("newest") == made[::-1]
    with pytest.raises(InputError, match="unknown sort 'random'; use one of: priority, oldest"):
        queue("random")
    with platform.sessions() as session:
        nulls = select(Prediction.id).where(Prediction.priority.is_(None))
        assert session.scalars(nulls).all() == [unscored]
