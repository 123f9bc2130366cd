"""The export use cases (:mod:`radseg.workflows.export_jobs`), called directly, on SQLite and
PostgreSQL: a request is checked against the exporters and PACS before a job is queued, the job
is the actor's and audited; a download is audited and refused when nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from radseg.core import Platform
from radseg.db.models import Export, Job, LabelSet, Prediction, Role
from radseg.errors import InputError, NotFound
from radseg.roles import Actor
from radseg.workflows.export_jobs import open_export, request_export
from tests.web_support import audit_events

CLINICIAN = Actor("clinician", Role.CLINICIAN)


def _jobs(platform: Platform) -> list[Job]:
    with platform.sessions() as session:
        return list(session.scalars(select(Job).where(Job.kind == "export")))


def test_an_export_is_queued_as_the_actor_s_job_and_audited(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    prediction = seeded["prediction"]
    job = request_export(
        web_platform, CLINICIAN, prediction, fmt="demo-png", options={"level": 3}, via="api"
    )
    assert (job.kind, job.created_by) == ("export", "clinician")
    assert job.payload == {
        "prediction_id": prediction,
        "format": "demo-png",
        "options": {"level": "3"},
        "created_by": "clinician",
    }
    assert [j.id for j in _jobs(web_platform)] == [job.id]
    (event,) = audit_events(web_platform, "job.submit.export")
    assert (event.actor, event.target) == ("clinician", f"prediction:{prediction}")
    assert event.detail == {"job": job.id, "via": "api"}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"fmt": "jpeg"}, "unknown export format 'jpeg'; available formats: demo-png"),
        ({"to_pacs": "research"}, r"no PACS called 'research' \(configured: none is configured\)"),
        ({"options": {"seg_type": "fuzzy"}}, "seg_type must be one of: binary, labelmap"),
        ({"options": {"nested": {"a": 1}}}, "options must be an object of plain values"),
        ({"with_images": "yes"}, "with_images must be true or false"),
        ({"corrected": True}, "has no correction to export; correct it in the viewer first"),
    ],
)
def test_a_request_that_does_not_fit_is_refused_before_anything_is_queued(
    web_platform: Platform, seeded: dict[str, int], request_: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        request_export(
            web_platform, CLINICIAN, seeded["prediction"], **{"fmt": "demo-png", **request_}
        )
    assert _jobs(web_platform) == []
    assert audit_events(web_platform, "job.submit.export") == []


def test_the_reviewer_s_correction_can_be_asked_for_once_there_is_one(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    with web_platform.sessions.begin() as session:
        prediction = session.get(Prediction, seeded["prediction"])
        assert prediction is not None
        session.add(
            LabelSet(
                series_id=prediction.series_id,
                source="review",
                version=1,
                author="clinician",
                classes=[],
                path=prediction.mask_path,
                prediction_id=prediction.id,
            )
        )
    job = request_export(
        web_platform, CLINICIAN, seeded["prediction"], fmt="demo-png", corrected=True
    )
    assert job.payload["corrected"] is True
    with pytest.raises(NotFound, match="there is no prediction 999"):
        request_export(web_platform, CLINICIAN, 999, fmt="demo-png")


def test_a_download_is_audited_and_needs_stored_files(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    stored = web_platform.path("exports", "prediction-1", "mask.png")
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(b"png")
    with web_platform.sessions.begin() as session:
        rows = [
            Export(
                prediction_id=seeded["prediction"],
                format="demo-png",
                status=status,
                path=path,
                created_by="clinician",
            )
            for status, path in (
                ("verified", web_platform.relative(stored)),
                ("failed", ""),
                ("verified", "exports/prediction-1/gone.png"),
            )
        ]
        session.add_all(rows)
        session.flush()
        ok, failed, gone = (r.id for r in rows)
    row, path = open_export(web_platform, CLINICIAN, ok)
    assert row.id == ok and path == stored
    (event,) = audit_events(web_platform, "export.download")
    assert event.target == f"prediction:{seeded['prediction']}"
    assert event.detail == {"export_id": ok, "format": "demo-png"}
    for export_id, message in (
        (failed, "failed its checks; nothing was stored to download"),
        (gone, "files are no longer in the store; export it again"),
        (999, "there is no export 999"),
    ):
        with pytest.raises(NotFound, match=message):
            open_export(web_platform, CLINICIAN, export_id)
    assert len(audit_events(web_platform, "export.download")) == 1
