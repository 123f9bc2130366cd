"""The JSON API: its OpenAPI document matches the routes, and schemathesis finds no answer that
breaks the document (run against the WSGI app with an API token)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings

from radseg import users
from radseg.core import Platform
from tests.unit.test_web import get_json, log_in_as
from tests.unit.web_fixtures import *  # noqa: F403

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


@SQLITE_ONLY
def test_every_api_route_is_documented_and_every_documented_path_exists(
    app: Flask, client: FlaskClient
) -> None:
    document = get_json(client, "/api/openapi.json")  # public: no login needed
    assert document["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, item in document["paths"].items() for method in item
    }
    routed = {
        (_openapi_path(rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routed - documented == set(), "document these routes in radseg/web/openapi.py"
    assert documented - routed == set(), "these documented operations have no route"


@SQLITE_ONLY
def test_schemathesis_finds_no_answer_that_breaks_the_document(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    import schemathesis

    with web_platform.sessions.begin() as session:
        # a clinician may read everything and review; the write routes for researchers are
        # covered by the role matrix and their own tests
        _, token = users.create_token(session, users.get_user(session, "clinician"), "fuzz")
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=4,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # report, do not shrink: keeps it fast
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers)

        try:
            check()
        except Exception as exc:  # collect all, so one run shows every broken operation
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert failures == [], "\n\n".join(failures)


def test_api_reads_and_audits_study_views(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "researcher")
    study = get_json(client, f"/api/studies/{seeded['study']}")
    assert [s["id"] for s in study["series"]] == [seeded["series"]]
    assert get_json(client, f"/api/series/{seeded['series']}")["modality"] == "CT"
    (version,) = get_json(client, "/api/models")["models"][0]["versions"]
    assert version["classes"][0]["name"] == "lesion"
    (prediction,) = get_json(client, f"/api/predictions?series_id={seeded['series']}")[
        "predictions"
    ]
    assert prediction["id"] == seeded["prediction"]
    assert get_json(client, "/api/predictions?series_id=999") == {"predictions": []}
    assert client.get("/api/studies/999").status_code == 404
    assert client.get("/api/jobs?limit=0").status_code == 400
    from tests.unit.test_web import audit_events

    assert [e.detail for e in audit_events(web_platform, "study.view")] == [{"via": "api"}]
