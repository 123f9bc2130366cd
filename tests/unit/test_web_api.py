"""The JSON API: its OpenAPI document matches the routes, and schemathesis finds no server error
and no answer that breaks the document, as every role (run against the WSGI app with API tokens),
on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from sqlalchemy import select

from radseg import users
from radseg.core import Platform
from radseg.db.models import Dataset, Job, Model, ModelVersion, Role
from radseg.roles import Actor
from radseg.workflows import measurements, readings
from tests.support import SQLITE_ONLY, require_module
from tests.web_support import get_json, log_in_as


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


#: examples per operation, role and generation mode: 21 operations x 4 roles x 2 modes x this
PROBE_EXAMPLES = 5


def test_schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_document(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    """The probe (issue 11 item 12): every operation of the document, as every role and as
    nobody, with data that fits the document and data that does not (wrong types, values out of
    range, missing fields). No answer may be a 5xx, an undocumented status, or a body that
    breaks the documented schema. Derandomized: the same requests on every run."""
    schemathesis = require_module("schemathesis")
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    with web_platform.sessions.begin() as session:
        for role in ("admin", "researcher", "clinician"):
            _, token = users.create_token(session, users.get_user(session, role), "probe")
            headers[role] = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 21
    failures: list[str] = []
    statuses: Counter[int] = Counter()

    # data that fits the document names rows that exist (else nearly every answer is a 404);
    # data that does not gets ids of any size and type
    existing = {
        "study_id": seeded["study"],
        "series_id": seeded["series"],
        "prediction_id": seeded["prediction"],
    }
    with web_platform.sessions() as session:
        for name, table in (
            ("job_id", Job),
            ("dataset_id", Dataset),
            ("version_id", ModelVersion),
            ("model_id", Model),
        ):
            existing[name] = session.scalars(select(table.id)).first()
    # a worklist case read by the clinician (issue 14, part 2)
    case = readings.assign(
        web_platform,
        Actor("researcher", Role.RESEARCHER),
        prediction_id=seeded["prediction"],
        readers=["clinician"],
    )
    existing.update(case_id=case.id, reading_id=case.readings[0].id)
    # a ruler kept with the review (issue 15)
    ruler = measurements.record_measurement(
        web_platform,
        Actor("clinician", Role.CLINICIAN),
        seeded["prediction"],
        kind="ruler",
        slice_index=0,
        points=[[0, 0], [3, 4]],
    )
    existing["measurement_id"] = ruler.id

    def probe(operation: Any, mode: Any, role_headers: dict[str, str]) -> Any:
        ids = {name: existing[name] for name in re.findall(r"{(\w+)}", operation.path)}
        strategy = operation.as_strategy(
            generation_mode=mode, path_parameters=ids if mode.is_positive and ids else None
        )

        @given(case=strategy)
        @settings(
            max_examples=PROBE_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],  # report, do not shrink: keeps it fast
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call_and_validate(headers=role_headers, checks=checks)
            statuses[response.status_code] += 1

        return check

    modes = list(schemathesis.GenerationMode)
    for operation, mode, role in itertools.product(operations, modes, headers):
        try:
            probe(operation, mode, headers[role])()
        except Exception as exc:  # collect all, so one run shows every broken operation
            where = f"{operation.method.upper()} {operation.path} as {role}, {mode.value} data"
            failures.append(f"{where}: {exc}")
    assert failures == [], "\n\n".join(failures)
    # the probe reached past authentication and validation, not only their refusals
    assert all(statuses[code] for code in (200, 400, 401, 403, 404)), statuses


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
    from tests.web_support import audit_events

    assert [e.detail for e in audit_events(web_platform, "study.view")] == [{"via": "api"}]
