"""Request limits: no body is read before its sender is authenticated, bodies are bounded per
endpoint (uploads vs. everything else), upload bytes in flight are budgeted per user and in total.

The bodies come from :class:`CountingStream`, which serves zeros without holding them and counts
what the server reads, so "nothing was read" is asserted, not inferred from a status code.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from radseg.core import Platform
from radseg.db.models import Review
from radseg.web import create_app
from radseg.web.limits import UPLOADS, TooLarge, UploadBudget
from radseg.web.validation import MAX_COMMENT
from tests.support import SQLITE_ONLY
from tests.web_support import log_in_as

BOUNDARY = "radsegboundary"
MIB = 1 << 20


class CountingStream(io.RawIOBase):
    """``head`` followed by ``size - len(head)`` zero bytes, read lazily; ``read_bytes`` counts."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size, self.read_bytes = head, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.read_bytes)
        start = self.read_bytes
        chunk = (self.head[start : start + n]).ljust(n, b"\0")
        buffer[:n] = chunk
        self.read_bytes += n
        return n


def multipart_head(filename: str = "big.dcm") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()


def send(
    client: FlaskClient,
    url: str,
    stream: CountingStream,
    *,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    declared: bool = True,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST ``stream`` with its length declared, or chunked (no ``Content-Length``, the server
    terminates the stream, as gunicorn and Werkzeug's server do for chunked bodies)."""
    environ = EnvironBuilder(
        path=url, method="POST", content_type=content_type, headers=headers or {}
    ).get_environ()
    environ["wsgi.input"] = stream
    environ["CONTENT_TYPE"] = content_type  # the builder puts a boundary of its own
    if declared:
        environ["CONTENT_LENGTH"] = str(stream.size)
    else:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    return client.open(Request(environ))


def csrf_app(web_platform: Platform, **config: Any) -> Flask:
    return create_app(web_platform, {"TESTING": True, **config})  # CSRF on, as in production


# --- item 5: authenticate before any body is read ------------------------------------------


@SQLITE_ONLY
def test_an_anonymous_upload_is_refused_before_a_byte_of_it_is_read(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = csrf_app(web_platform)
    for url in ("/upload", "/api/jobs", f"/predictions/{seeded['prediction']}/reviews"):
        stream = CountingStream(multipart_head(), 50 * MIB)
        response = send(app.test_client(), url, stream)
        assert response.status_code in (302, 401), url
        assert stream.read_bytes == 0, f"{url}: read {stream.read_bytes} bytes of an anonymous body"
    assert "/login" in send(app.test_client(), "/upload", CountingStream(b"", 10)).location

    # a logged-in user without the role is refused just as early (403), CSRF token or not
    clinician = app.test_client()
    log_in_as(clinician, web_platform, "clinician")
    stream = CountingStream(multipart_head(), 50 * MIB)
    response = send(clinician, "/upload", stream, headers={"Accept": "application/json"})
    assert response.status_code == 403 and stream.read_bytes == 0
    assert response.json["detail"] == "this page is for: admin, researcher"


@SQLITE_ONLY
def test_an_upload_over_the_limit_is_refused_by_its_declared_length_unread(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = csrf_app(web_platform, MAX_CONTENT_LENGTH=4 * MIB)
    client = app.test_client()
    log_in_as(client, web_platform, "researcher")
    stream = CountingStream(multipart_head(), 5 * MIB)
    response = send(client, "/upload", stream, headers={"Accept": "application/json"})
    assert response.status_code == 413 and stream.read_bytes == 0
    assert response.json["detail"] == (
        "the request sends 5.0 MiB; this address takes at most 4.0 MiB"
    )
    assert app.extensions[UPLOADS].in_flight() == 0


@SQLITE_ONLY
def test_a_chunked_upload_is_stopped_once_it_passes_the_limit(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = create_app(
        web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False, "MAX_CONTENT_LENGTH": 2 * MIB}
    )
    client = app.test_client()
    log_in_as(client, web_platform, "researcher")
    stream = CountingStream(multipart_head(), 64 * MIB)
    response = send(
        client, "/upload", stream, declared=False, headers={"Accept": "application/json"}
    )
    assert response.status_code == 413
    assert response.json["detail"] == (
        "the request is too large: at most 2.0 MiB in all, 0.5 MiB in one form field"
        " and 1000 form parts"
    )
    # the counter stops the read at the limit, give or take the parser's buffer
    assert 2 * MIB <= stream.read_bytes <= 3 * MIB
    assert not any(web_platform.path("uploads").glob("*/*"))
    assert app.extensions[UPLOADS].in_flight() == 0


def test_the_upload_budget_counts_per_user_and_in_total() -> None:
    budget = UploadBudget(per_user=100, total=150)
    budget.reserve(1, 60)
    budget.reserve(2, 60)
    with pytest.raises(TooLarge, match=r"you have 0.0 MiB of uploads in progress"):
        budget.reserve(1, 41)  # user 1's own budget
    with pytest.raises(TooLarge, match=r"an upload of 0.0 MiB is more than the 0.0 MiB"):
        budget.reserve(4, 101)
    with pytest.raises(TooLarge, match=r"the server is receiving"):
        budget.reserve(3, 31)  # user 3 has room, the server has not
    budget.reserve(3, 30)
    budget.release(2, 60)
    budget.reserve(3, 60)
    assert (budget.in_flight(1), budget.in_flight(2), budget.in_flight(3)) == (60, 0, 90)
    assert budget.in_flight() == 150


@SQLITE_ONLY
def test_uploads_in_flight_are_budgeted_per_user_and_released_after_the_response(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = create_app(
        web_platform,
        {
            "TESTING": True,
            "WTF_CSRF_ENABLED": False,
            "RADSEG_UPLOAD_INFLIGHT_PER_USER": 3 * MIB,
            "RADSEG_UPLOAD_INFLIGHT_TOTAL": 5 * MIB,
        },
    )
    budget: UploadBudget = app.extensions[UPLOADS]
    client = app.test_client()
    log_in_as(client, web_platform, "researcher")
    json_accept = {"Accept": "application/json"}

    def upload(size: int, declared: bool = True) -> tuple[Any, CountingStream]:
        stream = CountingStream(multipart_head(), size)
        return send(client, "/upload", stream, declared=declared, headers=json_accept), stream

    # the same user's other upload, still arriving, holds 2 MiB of the 3 MiB
    budget.reserve(seeded["researcher"], 2 * MIB)
    response, stream = upload(2 * MIB)
    assert response.status_code == 413 and stream.read_bytes == 0
    assert "you have 2.0 MiB of uploads in progress; at most 3.0 MiB" in response.json["detail"]
    # another user's uploads fill the server's budget
    budget.release(seeded["researcher"], 2 * MIB)
    budget.reserve(seeded["admin"], 2 * MIB)
    budget.reserve(seeded["clinician"], 2 * MIB)
    response, stream = upload(2 * MIB)
    assert response.status_code == 413 and stream.read_bytes == 0
    assert "the server is receiving 4.0 MiB of uploads" in response.json["detail"]
    # a chunked upload reserves the whole per-request maximum (2 GiB here): over the budget
    budget.release(seeded["admin"], 2 * MIB)
    budget.release(seeded["clinician"], 2 * MIB)
    response, stream = upload(1 * MIB, declared=False)
    assert response.status_code == 413 and stream.read_bytes == 0

    # with room, it is read; whatever its outcome, its bytes are released with the response
    response, stream = upload(1 * MIB)
    assert response.status_code == 400 and stream.read_bytes == 1 * MIB  # not multipart-closed
    assert budget.in_flight() == 0


# --- item 6: every other body is small -----------------------------------------------------


@SQLITE_ONLY
def test_json_and_form_bodies_are_limited_before_they_are_parsed(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    log_in_as(client, web_platform, "clinician")
    url = f"/api/predictions/{seeded['prediction']}/reviews"
    assert app.config["RADSEG_JSON_BODY_LIMIT"] == web_platform.settings.json_body_limit == MIB

    # the 400 MiB comment of the report: refused by its declared length, nothing read
    head = b'{"status": "rejected", "comment": "'
    stream = CountingStream(head, 400 * MIB)
    response = send(client, url, stream, content_type="application/json")
    assert response.status_code == 413 and stream.read_bytes == 0
    assert response.json == {
        "error": "Request Entity Too Large",
        "detail": "the request sends 400.0 MiB; this address takes at most 1.0 MiB",
    }
    # chunked: read up to the limit, then refused
    stream = CountingStream(head, 400 * MIB)
    response = send(client, url, stream, content_type="application/json", declared=False)
    assert response.status_code == 413 and stream.read_bytes == MIB + 1
    assert response.json["detail"] == "the request sends more than 1.0 MiB, the most it may send"
    # chunked and under the limit: read whole, not cut at some buffer
    body = json.dumps({"status": "rejected", "comment": "chunked " * 600}).encode()
    stream = CountingStream(body, len(body))
    response = send(client, url, stream, content_type="application/json", declared=False)
    assert response.status_code == 400
    assert response.json["detail"] == "comment: String should have at most 4000 characters"
    # a form page too (the review form)
    stream = CountingStream(b"status=rejected&comment=", 2 * MIB)
    response = send(
        client,
        f"/predictions/{seeded['prediction']}/reviews",
        stream,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 413 and stream.read_bytes == 0

    # under the byte limit, the comment has its own length; a comment that is not text is refused
    long_comment = {"status": "rejected", "comment": "x" * (MAX_COMMENT + 1)}
    response = client.post(url, json=long_comment)
    assert response.status_code == 400
    assert response.json["detail"] == (
        f"comment: String should have at most {MAX_COMMENT} characters"
    )
    response = client.post(url, json={"status": "rejected", "comment": ["x"] * 10})
    assert response.status_code == 400
    assert response.json["detail"].startswith("comment: Input should be a valid string")
    ok = client.post(
        url,
        data=json.dumps({"status": "rejected", "comment": "x" * MAX_COMMENT}),
        content_type="application/json",
    )
    assert ok.status_code == 201
    with web_platform.sessions() as session:
        (review,) = session.query(Review).all()
        assert len(review.comment) == MAX_COMMENT


@SQLITE_ONLY
def test_an_upload_with_a_too_long_dataset_name_is_refused_not_truncated(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    log_in_as(client, web_platform, "researcher")
    response = client.post(
        "/upload",
        data={"files": (io.BytesIO(b"not dicom"), "a.dcm"), "dataset": "d" * 81},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert re.search(r"not a valid dataset name: use 1 to 80 ", response.json["detail"])
    assert not any(web_platform.path("uploads").glob("*/*"))
