"""A site's worth of rows for the list pages, inserted in bulk (one executemany per table):
studies, their series, labels, predictions, reviews, jobs and audit events, laid out by rule so
a test can say which rows each page, search and filter must show.

Shared by tests/unit/test_list_pages.py and the benchmark tests/bench/web_pages.py.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from radseg.core import Platform
from radseg.db.models import (
    AuditEvent,
    Job,
    JobState,
    LabelSet,
    Model,
    ModelVersion,
    Prediction,
    Review,
    ReviewStatus,
    Role,
    Series,
    Study,
    User,
)
from tests.support import nominal_model_version

DESCRIPTIONS = ("CT chest", "MR brain", "CT abdomen", "PET-CT whole body")
MODALITIES = {"CT chest": "CT", "MR brain": "MR", "CT abdomen": "CT", "PET-CT whole body": "PT"}
#: the one study with this description
RARE = "Sarcoma follow-up"
RARE_STUDY = 4242
JOB_KINDS = ("ingest", "train", "predict", "evaluate", "export")
JOB_STATES = tuple(JobState)
JOB_OWNERS = ("researcher", "admin", "clinician", "alice")
AUDIT_ACTIONS = ("study.view", "login", "review.decision", "series.view")
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def pseudonym(n: int) -> str:
    return hashlib.sha256(f"patient-{n}".encode()).hexdigest()[:32]


def description(n: int) -> str:
    return RARE if n == RARE_STUDY else DESCRIPTIONS[n % len(DESCRIPTIONS)]


def study_date(n: int) -> date | None:
    """Every tenth study has no date (its source had none)."""
    return None if n % 10 == 0 else date(2015, 1, 1) + timedelta(days=(n * 37) % 3000)


def labelled(n: int) -> bool:
    return n % 5 == 0


def predicted(n: int) -> bool:
    return n % 3 == 0


def priority(n: int) -> float | None:
    """Half the predictions are scored (see radseg.imaging.review_priority)."""
    return ((n * 7919) % 1000) / 1000 if n % 2 == 0 else None


def accepted(n: int) -> bool:
    """Predictions of every ninth study have an accepted study-level decision."""
    return n % 9 == 0


def job_kind(n: int) -> str:
    return JOB_KINDS[n % len(JOB_KINDS)]


def job_state(n: int) -> JobState:
    return JOB_STATES[(n // 5) % len(JOB_STATES)]


def job_owner(n: int) -> str:
    return JOB_OWNERS[(n // 7) % len(JOB_OWNERS)]


def audit_actor(n: int) -> str:
    return JOB_OWNERS[(n // 3) % len(JOB_OWNERS)]


def audit_action(n: int) -> str:
    return AUDIT_ACTIONS[n % len(AUDIT_ACTIONS)]


def _bulk(session: Session, statement: Any, rows: list[dict[str, Any]]) -> None:
    """One executemany; none for no rows (an INSERT with an empty list adds one default row)."""
    if rows:
        session.execute(statement, rows)


@dataclass(frozen=True)
class Filled:
    """How many rows were inserted; the n-th row of each table has id ``n`` (1 is the first)."""

    studies: int
    jobs: int
    events: int


def fill(
    platform: Platform,
    *,
    studies: int = 10_000,
    jobs: int = 50_000,
    events: int = 20_000,
    versions: int = 1,
    password_hash: str = "x",
) -> Filled:
    """Insert the rows into an empty, migrated database; users admin, researcher, clinician.

    The predictions are of model version 1 (model ``fpn-big``); ``versions - 1`` more versions
    follow, of models ``unet-<n // 10>``."""
    with platform.sessions.begin() as session:
        for name in ("admin", "researcher", "clinician"):
            session.add(User(username=name, password_hash=password_hash, role=Role(name)))
        version = nominal_model_version("fpn-big", "big", [{"id": 1, "name": "lesion"}])
        session.add(version)
        session.flush()
        more_models = [
            Model(name=f"unet-{m}", backend="detectron2") for m in range((versions - 1) // 10 + 1)
        ]
        session.add_all(more_models)
        session.flush()
        _bulk(
            session,
            insert(ModelVersion),
            [
                {
                    "model_id": more_models[n // 10].id,
                    "dataset_version_id": version.dataset_version_id,
                    "config": {},
                    "weights_path": f"models/{n + 2}/model_final.pth",
                    "created_by": "researcher",
                }
                for n in range(versions - 1)
            ],
        )
        admin = session.scalars(select(User.id).where(User.username == "admin")).one()
        numbers = range(1, studies + 1)
        _bulk(
            session,
            insert(Study),
            [
                {
                    "study_instance_uid": f"2.25.{n}",
                    "patient_key": pseudonym(n),
                    "description": description(n),
                    "study_date": study_date(n),
                }
                for n in numbers
            ],
        )
        _bulk(
            session,
            insert(Series),
            [
                {
                    "study_id": n,
                    "series_instance_uid": f"2.25.{n}.1",
                    "modality": MODALITIES.get(description(n), "CT"),
                    "description": description(n),
                    "geometry": {},
                    "volume_path": f"volumes/{n}.nii.gz",
                }
                for n in numbers
            ],
        )
        _bulk(
            session,
            insert(LabelSet),
            [
                {"series_id": n, "source": "nifti", "classes": [], "path": f"labels/{n}.nii.gz"}
                for n in numbers
                if labelled(n)
            ],
        )
        with_predictions = [n for n in numbers if predicted(n)]
        _bulk(
            session,
            insert(Prediction),
            [
                {
                    "series_id": n,
                    "model_version_id": version.id,
                    "mask_path": f"predictions/{n}.nii.gz",
                    "priority": priority(n),
                    "created_at": BASE_TIME + timedelta(minutes=n),
                }
                for n in with_predictions
            ],
        )
        prediction_of = dict(session.execute(select(Prediction.series_id, Prediction.id)).all())
        _bulk(
            session,
            insert(Review),
            [
                {
                    "prediction_id": prediction_of[n],
                    "reviewer_id": admin,
                    "status": ReviewStatus.ACCEPTED,
                }
                for n in with_predictions
                if accepted(n)
            ],
        )
        _bulk(
            session,
            insert(Job),
            [
                {
                    "kind": job_kind(n),
                    "state": job_state(n),
                    "payload": {},
                    "created_by": job_owner(n),
                    "progress": 1.0 if job_state(n) == JobState.SUCCEEDED else 0.0,
                }
                for n in range(1, jobs + 1)
            ],
        )
        _bulk(
            session,
            insert(AuditEvent),
            [
                {
                    "actor": audit_actor(n),
                    "action": audit_action(n),
                    "target": f"study:{n % studies + 1}",
                    "detail": {},
                    "created_at": BASE_TIME + timedelta(seconds=n),
                }
                for n in range(1, events + 1)
            ],
        )
    return Filled(studies, jobs, events)


def rows(html: str, attribute: str) -> list[int]:
    """The ids in ``data-<attribute>="<id>"`` of a page's table rows, in order."""
    return [int(m) for m in re.findall(rf'<tr data-{attribute}="(\d+)"', html)]


def expected(predicate: Any, count: int) -> list[int]:
    """The numbers 1..count that satisfy ``predicate``."""
    return [n for n in range(1, count + 1) if predicate(n)]
