"""Bad input is a 400 with a one-line reason, never a 500 (issue 11 item 9), on SQLite and on
PostgreSQL: huge integers in query strings, bodies and forms; ``NaN``/``Infinity``; deeply nested
JSON; a list or an object where a string is expected; NUL characters (PostgreSQL refuses them).
The app runs with ``TESTING`` on, so an unhandled exception fails the test with its traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask import Flask
from pydantic import ValidationError

from radseg import users
from radseg.core import Platform
from radseg.errors import InputError
from radseg.web import create_app, openapi, schemas
from radseg.web.validation import MAX_JSON_DEPTH, describe, json_depth, loads
from tests.support import SQLITE_ONLY

HUGE = "9" * 20  # beyond SQLite's 64 bits and PostgreSQL's INTEGER
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 50_000 + "1" + "}" * 50_000


def _bearer(platform: Platform, username: str) -> dict[str, str]:
    with platform.sessions.begin() as session:
        _, token = users.create_token(session, users.get_user(session, username), "test")
    return {"Authorization": f"Bearer {token}"}


def _json_cases(prediction: int) -> list[tuple[str, str]]:
    reviews, exports = (
        f"/api/predictions/{prediction}/reviews",
        f"/api/predictions/{prediction}/exports",
    )
    corrections = f"/predictions/{prediction}/corrections"
    stroke = '{"z": 0, "class_id": 1, "radius": 1, "points": [[1, 1]]}'
    return [
        ("/api/jobs", '{"kind": ["x"]}'),
        ("/api/jobs", '{"kind": {}}'),
        ("/api/jobs", f'{{"kind": "predict", "model_version_id": {HUGE}, "series_id": 1}}'),
        ("/api/jobs", f'{{"kind": "predict", "model_version_id": 1, "series_id": {HUGE}}}'),
        ("/api/jobs", f'{{"kind": "evaluate", "model_version_id": {HUGE}}}'),
        ("/api/jobs", '{"kind": "evaluate", "model_version_id": Infinity}'),
        ("/api/jobs", '{"kind": "evaluate", "model_version_id": 1e400}'),
        ("/api/jobs", '{"kind": "evaluate", "model_version_id": ' + "1" * 5000 + "}"),
        ("/api/jobs", '{"kind": "train", "dataset": "d\\u0000", "backend": "x"}'),
        ("/api/jobs", '{"kind": "train", "dataset": "d", "backend": ["x"]}'),
        ("/api/jobs", '{"kind": "train", "dataset": "d", "backend": "x", "machines": 0}'),
        ("/api/jobs", '{"kind": "train", "dataset": "d", "backend": "x", "machines": 65}'),
        ("/api/jobs", '{"kind": "train", "dataset": "d", "backend": "x", "gpus_per_machine": "2"}'),
        ("/api/jobs", DEEP_ARRAY),
        ("/api/jobs", DEEP_OBJECT),
        ("/api/jobs", '{"kind": "evaluate", "model_version_id": 1, "split": "test"'),
        (reviews, '{"status": "accepted", "class_id": Infinity}'),
        (reviews, f'{{"status": "accepted", "class_id": {HUGE}}}'),
        (reviews, '{"status": "accepted", "slice_index": NaN}'),
        (reviews, '{"status": "accepted", "comment": {}}'),
        (reviews, '{"status": "accepted", "comment": "no\\u0000"}'),
        (reviews, '{"status": ["accepted"]}'),
        (reviews, DEEP_ARRAY),
        (exports, '{"format": ["x"]}'),
        (exports, '{"format": "demo-png", "options": {"seg_type": Infinity}}'),
        (exports, '{"format": "demo-png", "with_images": "yes"}'),
        (exports, DEEP_OBJECT),
        (corrections, f'{{"base_label_set": {HUGE}, "strokes": [{stroke}]}}'),
        (
            corrections,
            '{"strokes": [{"z": Infinity, "class_id": 1, "radius": 1, "points": [[1,1]]}]}',
        ),
        (corrections, '{"strokes": [{"z": 0, "class_id": 1, "radius": 1, "points": [[NaN,1]]}]}'),
        (corrections, DEEP_ARRAY),
    ]


def _get_cases(series: int) -> list[str]:
    return [
        f"/studies?page={HUGE}",
        f"/review?page={HUGE}",
        f"/admin/audit?page={HUGE}",
        "/admin/audit?actor=a%00b",
        f"/jobs?per_page={HUGE}",
        "/jobs?kind=nope",
        "/studies?per_page=201",
        "/studies?sort=uid",
        "/studies?show=everything",
        "/studies?modality=ct%27--",
        "/models?sort=dice",
        "/models?status=retired",
        "/review?per_page=0",
        "/admin/audit?sort=random",
        "/api/studies?sort=uid",
        "/api/jobs?kind=nope",
        f"/models/compare?a={HUGE}&b=1",
        f"/series/{series}/view?prediction={HUGE}",
        f"/api/studies?offset={HUGE}",
        f"/api/studies?limit={HUGE}",
        f"/api/predictions?series_id={HUGE}",
        "/api/predictions?series_id=1&series_id=2",
        f"/api/jobs/1/log?offset={HUGE}",
        "/api/jobs?state=nope",
        "/api/review-queue?study=%00",
        "/api/review-queue?model=" + "m" * 5000,
        "/login?next=%00",
    ]


def _form_cases() -> list[tuple[str, dict[str, str]]]:
    return [
        ("/datasets/build", {"name": "x", "study": HUGE}),
        ("/datasets/build", {"name": "x", "seed": HUGE, "study": "1"}),
        ("/predict", {"model_version": HUGE, "study": "1"}),
        ("/predict", {"model_version": "1", "study": HUGE}),
        ("/evaluate", {"model_version": HUGE}),
        ("/evaluate", {"model_version": "1", "dataset_version": HUGE}),
        # PostgreSQL cannot store a NUL: every form field and query parameter refuses one
        ("/datasets/build", {"name": "a\x00", "study": "1"}),
        ("/admin/users", {"username": "a\x00", "password": "x" * 20, "role": "admin"}),
        ("/account/tokens", {"name": "a\x00"}),
        ("/login", {"username": "a\x00", "password": "x"}),
    ]


def _one_line_400(response: Any, what: str) -> str:
    assert response.status_code == 400, f"{what}: {response.status_code} {response.data[:300]!r}"
    if response.is_json:
        detail = response.get_json()["detail"]
        assert detail and "\n" not in detail and len(detail) <= 400, detail
        return str(detail)
    return ""


def test_bad_json_bodies_query_strings_and_forms_answer_400(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    client = app.test_client()
    admin = _bearer(web_platform, "admin")
    json_headers = {**admin, "Content-Type": "application/json"}
    for url, body in _json_cases(seeded["prediction"]):
        response = client.post(url, data=body, headers=json_headers)
        _one_line_400(response, f"POST {url} {body[:60]}")
    for url in _get_cases(seeded["series"]):
        _one_line_400(client.get(url, headers=admin), f"GET {url[:80]}")
    json_accept = {**admin, "Accept": "application/json"}
    for url, form in _form_cases():
        sent = {} if url == "/login" else json_accept  # a logged-in user is sent on from /login
        _one_line_400(client.post(url, data=form, headers=sent), f"POST {url} {form}")


def test_the_reasons_name_the_field_and_what_is_valid(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    client = app.test_client()
    headers = {**_bearer(web_platform, "admin"), "Content-Type": "application/json"}

    def detail(url: str, body: str) -> str:
        return _one_line_400(client.post(url, data=body, headers=headers), body[:60])

    assert detail("/api/jobs", '{"kind": ["x"]}') == (
        "kind: must be one of 'build-dataset', 'train', 'predict', 'evaluate'"
    )
    assert detail("/api/jobs", f'{{"kind": "evaluate", "model_version_id": {HUGE}}}') == (
        "evaluate.model_version_id: Input should be less than or equal to 2147483647"
    )
    assert "NaN is not a JSON number" in detail("/api/jobs", '{"kind": NaN}')
    assert detail("/api/jobs", DEEP_ARRAY) == f"the JSON nests deeper than {MAX_JSON_DEPTH} levels"
    reviews = f"/api/predictions/{seeded['prediction']}/reviews"
    assert detail(reviews, '{"status": "accepted", "comment": {}}') == (
        "comment: Input should be a valid string"
    )
    assert (
        detail(reviews, '{"status": "accepted", "typo": 1}')
        == "typo: Extra inputs are not permitted"
    )
    response = client.get("/api/studies?limit=abc", headers=headers)
    assert _one_line_400(response, "limit=abc").startswith("limit: Input should be a valid integer")


def test_good_requests_still_pass_the_validation(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    client = app.test_client()
    clinician = _bearer(web_platform, "clinician")
    reviews = f"/api/predictions/{seeded['prediction']}/reviews"
    body = {"status": "needs_edit", "class_id": 1, "comment": "edge\nmissed", "slice_index": 2}
    response = client.post(reviews, json={**body, "point_x": 3, "point_y": 4.5}, headers=clinician)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["comment"] == "edge\nmissed"
    assert (response.get_json()["point_x"], response.get_json()["point_y"]) == (3.0, 4.5)
    # the review form of the viewer sends text fields, empty ones included
    form = {"status": "accepted", "class_id": "", "comment": "ok", "slice_index": "1"}
    assert (
        client.post(reviews.removeprefix("/api"), data=form, headers=clinician).status_code == 303
    )
    queue = client.get("/api/review-queue?state=all&model=&study=&limit=5", headers=clinician)
    assert queue.status_code == 200 and len(queue.get_json()["predictions"]) == 1
    assert client.get("/review?state=all&model=&page=1", headers=clinician).status_code == 200


def test_json_is_parsed_safely() -> None:
    assert loads(b'{"a": [1, 2.5, "x[{", null, true]}') == {"a": [1, 2.5, "x[{", None, True]}
    assert json_depth(b'{"a": "[[[[[[[[", "b": [[1]]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    for bad in (
        b"NaN",
        b"[-Infinity]",
        b"1e999",
        b"1" * 5000,
        b"\xff",
        b"{",
        b"[" * 40 + b"]" * 40,
    ):
        with pytest.raises(InputError):
            loads(bad)
    # refused by the scan: had the parser been reached, its recursion would raise RecursionError
    with pytest.raises(InputError, match="nests deeper"):
        loads(b"[" * 5_000_000)


def test_a_validation_error_is_one_line_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        schemas.ExportRequest.model_validate(
            {"format": "png", "options": {"a\nb": 1}, "x": 1, "y": 2, "z": 3}, strict=True
        )
    assert describe(caught.value) == (
        "options.a b.[key]: must not contain control characters; "
        "x: Extra inputs are not permitted; y: Extra inputs are not permitted; and 1 more"
    )


def test_request_bodies_and_queries_in_the_document_come_from_the_models() -> None:
    document = openapi.document()
    components = document["components"]["schemas"]
    for name, model in schemas.REQUEST_BODIES.items():
        generated = model.model_json_schema(ref_template=openapi.REF_TEMPLATE)
        assert set(generated["properties"] if "properties" in generated else generated["oneOf"][0])
        assert components[name].keys() == openapi._without_titles(generated).keys() - {"$defs"}
    predict = components["PredictJob"]["properties"]["model_version_id"]
    assert predict["maximum"] == 2**31 - 1
    (series_id,) = [
        p
        for p in document["paths"]["/api/predictions"]["get"]["parameters"]
        if p["name"] == "series_id"
    ]
    assert series_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    json.dumps(document)  # serialisable as it is served


@SQLITE_ONLY
def test_an_unhandled_error_is_logged_in_bounded_size(
    web_platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(web_platform, {"TESTING": False, "PROPAGATE_EXCEPTIONS": False})

    def recurse(n: int) -> int:
        return recurse(n + 1) + 1

    @app.get("/api/boom")
    def boom() -> Any:
        try:
            recurse(0)
        except RecursionError as exc:
            raise ValueError("x" * 5_000_000) from exc
        return ""

    boom.public = True  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    assert response.get_json()["error"] == "Internal Server Error"
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = caplog.text
    assert "ValueError: xxx" in text and "RecursionError" in text
    assert "earlier frames" in text
    assert len(text) < 20_000, len(text)
    assert record.exc_info is None
