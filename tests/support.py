"""Helpers for tests (import as ``from tests.support import require``)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, inspect, make_url, select
from sqlalchemy.orm import Session

from radseg.contracts import Geometry
from radseg.core import Platform, create_platform
from radseg.db.migrate import upgrade
from radseg.db.models import (
    Dataset,
    DatasetVersion,
    LabelSet,
    Model,
    ModelVersion,
    Prediction,
    Series,
    Study,
)
from radseg.imaging.volumes import read_volume, write_volume
from radseg.settings import Settings, load_settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

#: run a test on SQLite only (``database_url`` is parametrized over SQLite and PostgreSQL): for
#: behaviour that cannot differ between the two, where the second run would only cost time
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def require(condition: bool, reason: str) -> None:
    """Skip locally when ``condition`` is false; fail under CI, where everything must exist."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for CI but missing: {reason}")
    pytest.skip(reason)


def require_module(name: str) -> Any:
    """Import ``name``: a skip with the pip line locally when it is missing, a failure under CI."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require(False, f"{name} is not installed ({exc}); run `make install`")
        raise  # require() has skipped or failed the test; this line is never reached


def nominal_model_version(
    model: str,
    dataset: str,
    classes: list[dict[str, Any]],
    weights_path: str = "models/1/model_final.pth",
    **config: Any,
) -> ModelVersion:
    """A (detectron2) model version of ``model`` trained on version 1 of ``dataset``, both
    nominal: what a build and a training would have left, without their files. ``config`` adds
    to the version's ``{"classes": classes}``."""
    return ModelVersion(
        model=Model(name=model, backend="detectron2"),
        dataset_version=DatasetVersion(
            dataset=Dataset(name=dataset),
            version=1,
            content_hash="0" * 64,
            classes=classes,
            recipe={},
            split={},
            path=f"datasets/{dataset}/v1",
        ),
        config={"classes": classes, **config},
        weights_path=weights_path,
    )


def add_series_with_prediction(
    session: Session,
    platform: Platform,
    *,
    hu: np.ndarray,
    mask: np.ndarray,
    geometry: Geometry,
    classes: list[dict[str, Any]],
    description: str = "CT chest",
) -> Prediction:
    """Write ``hu`` and ``mask`` under the platform's home and add the rows a viewer needs.

    Study → series → prediction of a model version of a (nominal) dataset version: what an
    ingest, a build, a training and a prediction would have left, without running them.
    """
    key = uuid.uuid4().hex[:8]
    volume = platform.path("volumes", f"{key}.nii.gz")
    mask_file = platform.path("predictions", f"{key}.nii.gz")
    write_volume(volume, hu, geometry)
    write_volume(mask_file, mask, geometry)
    series = Series(
        study=Study(study_instance_uid=f"2.25.{key}", patient_key=key, description=description),
        series_instance_uid=f"2.25.{key}.1",
        modality="CT",
        geometry=geometry.to_dict(),
        volume_path=platform.relative(volume),
    )
    model_version = nominal_model_version(
        f"fpn-{key}", f"ds-{key}", classes, weights_path=f"models/{key}/model_final.pth"
    )
    prediction = Prediction(
        series=series, model_version=model_version, mask_path=platform.relative(mask_file)
    )
    session.add(prediction)
    session.flush()
    return prediction


def ingested_prediction(platform: Platform, tmp_path: Path) -> int:
    """Ingest a small synthetic CT with its labels; register the labels as a prediction.

    The series has real (de-identified) DICOM originals in the store, so every exporter can
    reference them, and the "prediction" equals the ground truth voxel for voxel.
    """
    from radseg.imaging.synthetic import write_synthetic_ct
    from radseg.workflows.ingest import ingest

    study = write_synthetic_ct(tmp_path / "ct", seed=3, shape=(8, 48, 48))
    ingest(platform, study.dicom_dir, labels=study.label_path, author="test")
    with platform.sessions.begin() as session:
        series = session.scalars(select(Series)).one()
        label_set = session.scalars(select(LabelSet).where(LabelSet.series_id == series.id)).one()
        labels, geometry = read_volume(platform.resolve(label_set.path))
        mask = platform.path("predictions", "p1.nii.gz")
        write_volume(mask, labels, geometry)
        version = nominal_model_version("fpn", "ds", label_set.classes, architecture="semantic_fpn")
        prediction = Prediction(
            series=series, model_version=version, mask_path=platform.relative(mask)
        )
        session.add(prediction)
        session.flush()
        return prediction.id


def migrated_platform(settings: Settings, **kwargs: Any) -> Platform:
    """A platform on a database brought to the newest schema first (a probe without plugins
    runs the migrations, so no plugin reads a table before it exists), its home created.

    A fresh database gets the schema Alembic made once in this test process
    (:data:`MIGRATED`), which is what running the migrations again would make, in a fraction of
    the time; a database that already has tables is upgraded by Alembic itself.

    ``kwargs`` go to :func:`radseg.core.create_platform` (``autoload``, ``plugins``).
    """
    MIGRATED.apply(settings)
    platform = create_platform(settings, **kwargs)
    platform.ensure_home()
    return platform


class MigratedSchema:
    """The newest schema, made by Alembic once per test process and per database kind, then
    given to each fresh test database: SQLite gets a copy of the migrated file; PostgreSQL gets
    the statements Alembic executed, replayed in the test's own schema (its ``search_path``)."""

    def __init__(self) -> None:
        self._sqlite: Path | None = None
        self._postgres: list[tuple[str, Any]] | None = None

    def apply(self, settings: Settings) -> None:
        url = make_url(settings.database_url_resolved)
        if url.get_backend_name() == "sqlite" and url.database:
            self._sqlite_copy(settings, Path(url.database))
            return
        probe = create_platform(settings, autoload=False)
        try:
            if (
                url.get_backend_name() == "postgresql"
                and not inspect(probe.engine).get_table_names()
            ):
                self._postgres_replay(settings, probe)
            else:
                upgrade(probe.engine)
        finally:
            probe.close()

    def _sqlite_copy(self, settings: Settings, target: Path) -> None:
        if target.exists():  # a database a test made earlier: Alembic brings it up to date
            probe = create_platform(settings, autoload=False)
            upgrade(probe.engine)
            probe.close()
            return
        if self._sqlite is None:
            template = Path(tempfile.mkdtemp(prefix="radseg-schema-")) / "radseg.db"
            atexit.register(shutil.rmtree, template.parent, ignore_errors=True)
            maker = create_platform(
                load_settings(
                    {"home": template.parent / "home", "database_url": f"sqlite:///{template}"},
                    environ={},
                ),
                autoload=False,
            )
            upgrade(maker.engine)
            with maker.engine.connect() as conn:  # everything in the file, nothing in its WAL
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            maker.close()
            self._sqlite = template
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._sqlite, target)

    def _postgres_replay(self, settings: Settings, probe: Platform) -> None:
        if self._postgres is None:
            recorded: list[tuple[str, Any]] = []

            def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
                if not statement.lstrip().upper().startswith("SELECT"):
                    recorded.append((statement, parameters))

            event.listen(probe.engine, "before_cursor_execute", record)
            try:
                upgrade(probe.engine)
            finally:
                event.remove(probe.engine, "before_cursor_execute", record)
            self._postgres = recorded
            return
        with probe.engine.begin() as conn:
            for statement, parameters in self._postgres:
                conn.exec_driver_sql(statement, parameters)


#: one per test process (pytest runs tests in one process)
MIGRATED = MigratedSchema()


def database_text(platform: Platform) -> str:
    """Every row of every table of the platform's database (reflected, so tables the models do
    not know are read too), as text: what a search for patient data or a secret must cover."""
    import sqlalchemy as sa

    metadata = sa.MetaData()
    metadata.reflect(platform.engine)
    rows: list[str] = []
    with platform.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows.extend(f"{table.name}: {tuple(row)!r}" for row in conn.execute(sa.select(table)))
    return "\n".join(rows)
