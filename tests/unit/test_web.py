"""The web app through Flask's test client, on SQLite and on PostgreSQL (``database_url``).

Most tests log in by writing the Flask-Login session directly (scrypt takes ~0.15 s a check);
the tests of the login form itself use the real form.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select

from radseg import audit, users
from radseg.core import Platform, create_platform
from radseg.db.models import (
    PluginState,
    Role,
    Series,
    Study,
    User,
)
from radseg.errors import InputError
from radseg.imaging.palette import class_color
from radseg.settings import Settings
from radseg.web import create_app
from radseg.web.render import VolumeCache, legend, window_to_uint8
from tests.web_support import (
    DEMO,
    LESION_GREEN,
    PASSWORD,
    SHAPE,
    audit_events,
    get_json,
    log_in_as,
    png,
)

# --- authentication ------------------------------------------------------------------------


def test_pages_redirect_to_login_and_api_answers_401(client: FlaskClient) -> None:
    for url in ("/", "/studies", "/studies/1", "/series/1/view", "/jobs", "/admin/plugins"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response.headers["Location"].startswith("/login?next=")
    for url in ("/api/jobs", "/-/plugins", "/series/1/slice/0.png"):
        response = client.get(url)
        if url.startswith(("/api", "/-/")):
            assert response.status_code == 401
            assert response.json == {"error": "Unauthorized", "detail": "log in first"}
        else:
            assert response.status_code == 302


def test_login_refuses_a_wrong_password_and_audits_both(
    client: FlaskClient, web_platform: Platform
) -> None:
    response = client.post("/login", data={"username": "clinician", "password": "wrong pass"})
    assert response.status_code == 401
    assert b"Wrong username or password" in response.data
    assert client.get("/studies").status_code == 302
    assert [e.actor for e in audit_events(web_platform, "login.failed")] == ["clinician"]

    response = client.post(
        "/login?next=/jobs", data={"username": "clinician", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/jobs"
    assert client.get("/studies").status_code == 200
    (event,) = audit_events(web_platform, "login")
    assert event.actor == "clinician"

    client.post("/logout")
    assert client.get("/studies").status_code == 302


def test_login_never_redirects_off_site(client: FlaskClient) -> None:
    response = client.post(
        "/login?next=//evil.example/x", data={"username": "admin", "password": PASSWORD}
    )
    assert response.headers["Location"] == "/studies"


def test_changing_the_password_ends_existing_sessions(
    client: FlaskClient, web_platform: Platform
) -> None:
    log_in_as(client, web_platform, "researcher")
    assert client.get("/studies").status_code == 200
    with web_platform.sessions.begin() as session:
        users.set_password(session, users.get_user(session, "researcher"), "a new password")
    assert client.get("/studies").status_code == 302


def test_csrf_is_enforced(web_platform: Platform, seeded: dict[str, int]) -> None:
    app = create_app(web_platform, {"TESTING": True})
    client = app.test_client()
    response = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/studies").status_code == 302

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token, page
    form = {"username": "admin", "password": PASSWORD, "csrf_token": token.group(1)}
    assert client.post("/login", data=form).status_code == 302

    assert client.post("/admin/plugins/demo/disable").status_code == 400
    with web_platform.sessions() as session:
        assert session.get(PluginState, "demo") is None
    assert client.post("/logout").status_code == 400


def test_cookies_are_httponly_and_samesite_lax(app: Flask) -> None:
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    client = app.test_client()
    client.post("/login", data={"username": "admin", "password": PASSWORD})
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"


def test_every_view_declares_who_may_use_it(app: Flask) -> None:
    for endpoint, view in app.view_functions.items():
        if endpoint == "static":
            continue
        assert getattr(view, "required_roles", None) or getattr(view, "public", False), endpoint


# --- studies and the audit trail -----------------------------------------------------------


def test_study_pages_list_counts_and_audit_each_view(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    listing = client.get("/studies")
    assert listing.status_code == 200
    assert b"CT chest" in listing.data
    (row,) = get_json(client, "/api/studies")["studies"]
    with web_platform.sessions() as session:
        study = session.get(Study, seeded["study"])
    assert row == {
        "id": seeded["study"],
        "study_instance_uid": study.study_instance_uid,
        "patient_key": study.patient_key,
        "description": "CT chest",
        "study_date": None,
        "study_date_shifted": False,
        "modalities": ["CT"],
        "created_at": row["created_at"],
        "series_count": 1,
        "label_count": 0,
        "prediction_count": 1,
        "review": {"states": {"awaiting": 1}, "priority": None},
    }

    page = client.get(f"/studies/{seeded['study']}")
    assert page.status_code == 200
    assert b"fpn" in page.data
    (event,) = audit_events(web_platform, "study.view")
    assert (event.actor, event.target) == ("clinician", f"study:{seeded['study']}")

    viewer = client.get(f"/series/{seeded['series']}/view")
    assert viewer.status_code == 200
    html = viewer.get_data(as_text=True)
    assert f"/predictions/{seeded['prediction']}/overlay/{{z}}.png" in html
    assert 'data-color="#00ff00"' in html and "lesion" in html  # legend from the model version
    assert "class 2" in html  # a label the model version does not name
    (event,) = audit_events(web_platform, "series.view")
    assert event.target == f"series:{seeded['series']}"
    assert event.detail == {"study": seeded["study"], "prediction": seeded["prediction"]}

    bare = client.get(f"/series/{seeded['series']}/view?prediction=0")
    assert bare.status_code == 200 and b"overlay-img" not in bare.data
    assert client.get(f"/series/{seeded['series']}/view?prediction=999").status_code == 404
    assert client.get("/studies/999").status_code == 404


def test_jobs_page_and_api(client: FlaskClient, web_platform: Platform) -> None:
    log_in_as(client, web_platform, "researcher")
    page = client.get("/jobs")
    assert page.status_code == 200
    assert b'<progress max="1" value="0.25">' in page.data
    (job,) = get_json(client, "/api/jobs")["jobs"]
    assert (job["kind"], job["state"], job["progress"], job["message"]) == (
        "train",
        "running",
        0.25,
        "iter 50",
    )
    assert client.get("/api/jobs?state=queued").json["jobs"] == []
    assert client.get("/api/jobs?state=nonsense").status_code == 400


def test_responses_carry_a_content_security_policy(
    client: FlaskClient, web_platform: Platform
) -> None:
    log_in_as(client, web_platform, "clinician")
    response = client.get("/studies")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


# --- images --------------------------------------------------------------------------------


def test_slice_png_applies_the_window(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    url = f"/series/{seeded['series']}/slice/2.png"
    response = client.get(url + "?wl=40&ww=400")
    pixels = png(response)
    assert pixels.shape == (SHAPE[1], SHAPE[2])  # rows = y, columns = x
    assert pixels.dtype == np.uint8
    assert (pixels[:, :8] == 0).all()  # -1000 HU is below 40 - 200
    assert (pixels[:, 8:16] == 128).all()  # the level sits mid-grey
    assert (pixels[:, 16:] == 255).all()  # 1000 HU is above 40 + 200
    assert "private" in response.headers["Cache-Control"]
    assert "max-age=600" in response.headers["Cache-Control"]

    lung = png(client.get(url + "?wl=-600&ww=1500"))
    assert lung[0, 0] == round((-1000 + 1350) / 1500 * 255)

    assert client.get(url + "?wl=40&ww=0").status_code == 400
    assert client.get(url + "?wl=abc").status_code == 400
    assert client.get(f"/series/{seeded['series']}/slice/4.png").status_code == 404
    assert client.get("/series/999/slice/0.png").status_code == 404


def test_scrolling_reads_the_database_once_not_once_per_slice(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(web_platform.engine, "before_cursor_execute", count)
    try:
        for z in range(4):
            assert client.get(f"/series/{seeded['series']}/slice/{z}.png").status_code == 200
            overlay = f"/predictions/{seeded['prediction']}/overlay/{z}.png"
            assert client.get(overlay).status_code == 200
        # the session's user, the series and the prediction: once each, not once per image
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 3
    finally:
        event.remove(web_platform.engine, "before_cursor_execute", count)
    # pages still read the user every time: a password change ends a session at once
    assert client.get("/studies").status_code == 200


def test_overlay_png_colours_classes_on_transparent_background(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    rgba = png(client.get(f"/predictions/{seeded['prediction']}/overlay/2.png"))
    assert rgba.shape == (SHAPE[1], SHAPE[2], 4)
    lesion = np.zeros(SHAPE[1:], dtype=bool)
    lesion[4:8, 10:14] = True
    other = np.zeros(SHAPE[1:], dtype=bool)
    other[10:12, 2:4] = True
    assert (rgba[lesion] == [*LESION_GREEN, 255]).all()
    assert (rgba[other][:, 3] == 255).all()
    # a class the model version does not describe: the palette's colour for its id
    assert (rgba[other][:, :3] == class_color(2)).all()
    assert (rgba[~(lesion | other)][:, 3] == 0).all()

    only_other = png(client.get(f"/predictions/{seeded['prediction']}/overlay/2.png?hide=1"))
    assert (only_other[lesion][:, 3] == 0).all()
    assert (only_other[other][:, 3] == 255).all()
    bad = client.get(f"/predictions/{seeded['prediction']}/overlay/2.png?hide=x")
    assert bad.status_code == 400

    empty = png(client.get(f"/predictions/{seeded['prediction']}/overlay/0.png"))
    assert (empty[:, :, 3] == 0).all()
    assert client.get("/predictions/999/overlay/0.png").status_code == 404


def test_volumes_are_read_once_per_process_until_the_file_changes(
    app: Flask, client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    cache: VolumeCache = app.extensions["radseg.volumes"]
    for z in range(SHAPE[0]):
        png(client.get(f"/series/{seeded['series']}/slice/{z}.png"))
    assert cache.reads == 1
    with web_platform.sessions() as session:
        path = web_platform.resolve(session.get(Series, seeded["series"]).volume_path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    png(client.get(f"/series/{seeded['series']}/slice/0.png"))
    assert cache.reads == 2


def test_window_and_legend_helpers() -> None:
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0])
    assert window_to_uint8(hu, 40, 400).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError):
        window_to_uint8(hu, 40, 0)
    entries = legend([{"id": 1, "name": "liver", "color": [1, 2, 3]}, {"id": 3}], present=[2])
    assert [(e.id, e.name) for e in entries] == [(1, "liver"), (2, "class 2"), (3, "class 3")]
    assert entries[0].hex == "#010203"


# --- plugins -------------------------------------------------------------------------------


def test_only_admins_toggle_plugins_and_every_process_sees_it(
    client: FlaskClient, web_platform: Platform, settings: Settings
) -> None:
    log_in_as(client, web_platform, "clinician")
    assert client.get("/admin/plugins").status_code == 403
    assert client.post("/admin/plugins/demo/disable").status_code == 403
    (row,) = get_json(client, "/-/plugins")["plugins"]
    assert (row["name"], row["status"], row["hooks"]) == (
        "demo",
        "enabled",
        ["radseg_register_exporters"],
    )

    other_process = create_platform(settings, autoload=False, plugins=[DEMO])
    try:
        log_in_as(client, web_platform, "admin")
        assert b"demo" in client.get("/admin/plugins").data
        response = client.post("/admin/plugins/demo/disable")
        assert response.status_code == 302
        with web_platform.sessions() as session:
            state = session.get(PluginState, "demo")
            assert state is not None and not state.enabled and state.changed_by == "admin"
        (event,) = audit_events(web_platform, "plugin.disable")
        assert (event.actor, event.target) == ("admin", "plugin:demo")
        (row,) = get_json(client, "/-/plugins")["plugins"]
        assert row["status"] == "disabled" and row["reason"] == "disabled by admin"
        assert "demo-png" not in web_platform.plugins.exporters

        assert other_process.refresh_plugins() is True
        assert other_process.plugins.list()[0].status == "disabled"

        client.post("/admin/plugins/demo/enable")
        assert get_json(client, "/-/plugins")["plugins"][0]["status"] == "enabled"
        assert client.post("/admin/plugins/nope/disable").status_code == 404
    finally:
        other_process.close()


# --- domain functions ----------------------------------------------------------------------


def test_users_and_audit_domain_functions(web_platform: Platform) -> None:
    with web_platform.sessions() as session:
        user = users.create_user(session, "alice", "long enough", Role.CLINICIAN)
        assert user.id is not None and user.password_hash.startswith("scrypt:")
        with pytest.raises(users.UsernameTakenError, match="'alice' is already taken"):
            users.create_user(session, "alice", "long enough", "researcher")
        with pytest.raises(users.PasswordPolicyError, match="at least 8"):
            users.create_user(session, "bob", "short", "researcher")
        with pytest.raises(InputError, match="valid roles are: admin, researcher, clinician"):
            users.create_user(session, "bob", "long enough", "doctor")
        assert users.authenticate(session, "alice", "long enough") is user
        assert users.authenticate(session, "alice", "wrong password") is None
        assert users.authenticate(session, "nobody", "long enough") is None
        user.active = False
        assert users.authenticate(session, "alice", "long enough") is None

        event = audit.record(
            session, user, "export", "prediction:7", format="nifti", path=Path("x")
        )
        session.flush()
        assert (event.actor, event.detail) == ("alice", {"format": "nifti", "path": "x"})
        session.commit()
    with web_platform.sessions() as session:
        assert (session.scalar(select(func.count()).select_from(User)) or 0) >= 1
        assert [e.action for e in audit.events(session, actor="alice")] == ["export"]


def test_health_answers_anonymously_when_the_database_does(client: FlaskClient) -> None:
    response = client.get("/-/health")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_images_answer_304_to_a_known_etag_and_are_rendered_once(
    app: Flask, client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    log_in_as(client, web_platform, "clinician")
    url = f"/predictions/{seeded['prediction']}/overlay/2.png"
    first = client.get(url)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag
    cached = app.extensions["radseg.images"]
    size = cached._size
    again = client.get(url)
    assert again.data == first.data and cached._size == size  # served from the image cache
    app.extensions["radseg.volumes"].clear()
    reads = app.extensions["radseg.volumes"].reads
    unchanged = client.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert app.extensions["radseg.volumes"].reads == reads  # nothing was read for the 304
    hidden = client.get(url + "?hide=1")
    assert hidden.headers["ETag"] != etag and hidden.data != first.data
