"""Fixtures shared by the unit tests: a platform factory, and the web app with three users, a
study, a series and a prediction (on SQLite and PostgreSQL through ``database_url``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from radseg.contracts import Geometry
from radseg.core import Platform, create_platform
from radseg.db.models import Job, JobState, Role, User
from radseg.settings import Settings, load_settings
from radseg.web import create_app
from tests.support import add_series_with_prediction, migrated_platform
from tests.web_support import DEMO, PASSWORD, SHAPE


@pytest.fixture
def make_platform(tmp_path: Path) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def make(*plugins: tuple[str, Any], autoload: bool = False, **settings: Any) -> Platform:
        platform = create_platform(
            load_settings({"home": tmp_path, **settings}, environ={}),
            autoload=autoload,
            plugins=plugins,
        )
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.close()


@pytest.fixture(scope="module")
def password_hash() -> str:
    return generate_password_hash(PASSWORD, method="scrypt")


@pytest.fixture
def web_platform(settings: Settings) -> Iterator[Platform]:
    platform = migrated_platform(settings, autoload=False, plugins=[DEMO])
    yield platform
    platform.close()


@pytest.fixture
def seeded(web_platform: Platform, password_hash: str) -> dict[str, int]:
    """Three users, one study with one series (HU volume) and one prediction (mask)."""
    hu = np.zeros(SHAPE, dtype=np.float32)
    hu[:, :, :8] = -1000
    hu[:, :, 8:16] = 40
    hu[:, :, 16:] = 1000
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2, 4:8, 10:14] = 1
    mask[2, 10:12, 2:4] = 2  # a class the model version does not describe
    geometry = Geometry(
        (SHAPE[2], SHAPE[1], SHAPE[0]), (0.8, 0.8, 2.5), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    with web_platform.sessions.begin() as session:
        people = {
            role: User(username=role.value, password_hash=password_hash, role=role) for role in Role
        }
        session.add_all(people.values())
        prediction = add_series_with_prediction(
            session,
            web_platform,
            hu=hu,
            mask=mask,
            geometry=geometry,
            classes=[{"id": 1, "name": "lesion", "color": "#00ff00"}],
        )
        series, study = prediction.series, prediction.series.study
        session.add(Job(kind="train", state=JobState.RUNNING, progress=0.25, message="iter 50"))
        session.flush()
        ids = {role.value: people[role].id for role in Role}
        ids.update(study=study.id, series=series.id, prediction=prediction.id)
    return ids


@pytest.fixture
def app(web_platform: Platform, seeded: dict[str, int]) -> Flask:
    return create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
