"""Security of the web app: the route × role matrix, login limits, API tokens, accounts, audit.

The access policy is declared once, in :data:`POLICY`; the matrix test walks ``app.url_map``,
so a new route fails the test until it is added to the table with its roles.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from radseg import users
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import ApiToken, LoginFailure, Role, User
from radseg.web import create_app
from tests.unit.test_web import DEMO, PASSWORD, audit_events, log_in_as
from tests.unit.web_fixtures import *  # noqa: F403

A, R, C = Role.ADMIN, Role.RESEARCHER, Role.CLINICIAN
EVERYONE = frozenset({A, R, C})
OPERATORS = frozenset({A, R})
REVIEWERS = frozenset({A, C})
ADMINS = frozenset({A})
PUBLIC = "public"

#: for tests whose subject does not depend on the database (the rest run on both)
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: endpoint → who may use it; the one place the access policy is written down
POLICY: dict[str, frozenset[Role] | str] = {
    "static": PUBLIC,
    "auth.login": PUBLIC,
    "auth.logout": EVERYONE,
    "account.account": EVERYONE,
    "account.change_password": EVERYONE,
    "account.create_token": EVERYONE,
    "account.revoke_token": EVERYONE,
    "studies.index": EVERYONE,
    "studies.list_studies": EVERYONE,
    "studies.study": EVERYONE,
    "studies.viewer": EVERYONE,
    "slices.slice_png": EVERYONE,
    "slices.overlay_png": EVERYONE,
    "slices.label_overlay_png": EVERYONE,
    "review.queue": EVERYONE,
    "review.decide": REVIEWERS,
    "review.correct": REVIEWERS,
    "jobs.list_jobs": EVERYONE,
    "jobs.job_page": EVERYONE,
    "jobs.cancel": OPERATORS,
    "jobs.retry": OPERATORS,
    "research.upload_page": OPERATORS,
    "research.upload": OPERATORS,
    "research.datasets": OPERATORS,
    "research.build_dataset": OPERATORS,
    "research.train": OPERATORS,
    "research.predict": OPERATORS,
    "research.evaluate": OPERATORS,
    "admin.health": PUBLIC,
    "admin.plugins_json": EVERYONE,
    "admin.plugins": ADMINS,
    "admin.enable": ADMINS,
    "admin.disable": ADMINS,
    "user_admin.list_users": ADMINS,
    "user_admin.create_user": ADMINS,
    "user_admin.update_user": ADMINS,
    "audit_log.audit_page": ADMINS,
    "api.openapi_document": PUBLIC,
    "api.studies": EVERYONE,
    "api.study": EVERYONE,
    "api.series": EVERYONE,
    "api.datasets": EVERYONE,
    "api.dataset": EVERYONE,
    "api.jobs": EVERYONE,
    "api.submit_job": OPERATORS,
    "api.job": EVERYONE,
    "api.job_log": EVERYONE,
    "api.job_curves_json": EVERYONE,
    "api.cancel_job": OPERATORS,
    "api.retry_job": OPERATORS,
    "api.models": EVERYONE,
    "api.model_version": EVERYONE,
    "api.predictions": EVERYONE,
    "api.prediction": EVERYONE,
    "api.review_queue": EVERYONE,
    "api.reviews": EVERYONE,
    "api.add_review": REVIEWERS,
    "api.exports": EVERYONE,
    "api.create_export": EVERYONE,
    "predictions.prediction_page": EVERYONE,
    "predictions.queue_export": EVERYONE,
    "predictions.download": EVERYONE,
    "models.list_models": EVERYONE,
    "models.model_version": EVERYONE,
    "models.history_json": EVERYONE,
    "models.report_file": EVERYONE,
    "models.compare": EVERYONE,
}


def _url(app: Flask, rule: Any, ids: dict[str, int]) -> str:
    values: dict[str, Any] = {}
    for arg in rule.arguments:
        converter = rule._converters[arg].__class__.__name__
        if arg == "filename":
            values[arg] = "style.css"
        elif converter == "IntegerConverter":
            values[arg] = ids.get(arg.removesuffix("_id"), 0 if arg == "z" else 999)
        else:
            values[arg] = "demo"
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, rule))
    return out


def test_every_route_is_in_the_policy_table(app: Flask) -> None:
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    ours = endpoints
    assert ours - set(POLICY) == set(), "add these endpoints to POLICY with their roles"
    assert set(POLICY) - endpoints == set(), "POLICY names removed routes"
    for endpoint in ours:
        view = app.view_functions[endpoint]
        declared = POLICY[endpoint]
        if declared == PUBLIC:
            assert getattr(view, "public", False) or endpoint == "static", endpoint
        else:
            assert view.required_roles == declared, endpoint


@SQLITE_ONLY
def test_route_matrix_every_route_every_role_and_anonymous(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    """Anonymous: the login page (HTML) or 401 (JSON); a role not in the policy: 403; a role in
    it: never 401/403/5xx. Every registered route, every method, every role."""
    ids = {"user": seeded["clinician"], "token": 999, "label_set": 999, **seeded}
    checked = 0
    for endpoint, method, rule in _routes(app):
        declared = POLICY[endpoint]
        url = _url(app, rule, ids)
        for role in (None, *Role):
            client = app.test_client()
            if role is not None:
                log_in_as(client, web_platform, role.value)
            body = {} if method == "POST" and url.startswith("/api/") else None
            response = client.open(url, method=method, json=body)
            status = response.status_code
            where = f"{method} {url} as {role.value if role else 'anonymous'}: {status}"
            assert status < 500, where + response.get_data(as_text=True)[:300]
            if declared == PUBLIC:
                assert status not in (401, 403), where
            elif role is None:
                if url.startswith(("/api/", "/-/")):
                    assert status == 401, where
                else:
                    assert status == 302 and "/login" in response.headers["Location"], where
            elif role in declared:
                assert status not in (401, 403), where
            else:
                assert status == 403, where
            checked += 1
    assert checked > 200


# --- login limits ----------------------------------------------------------------------------


def _login(client: FlaskClient, username: str, password: str, remote: str = "10.0.0.1") -> Any:
    return client.post(
        "/login",
        data={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": remote},
    )


def test_five_failures_lock_the_account_in_every_worker(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False}
    first, second = create_app(web_platform, config), create_app(web_platform, config)
    for n in range(users.MAX_FAILURES_PER_USER):
        worker = first if n % 2 else second  # two "gunicorn workers" share the count
        assert _login(worker.test_client(), "clinician", "wrong password").status_code == 401
    locked = _login(first.test_client(), "clinician", PASSWORD)
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.data
    assert _login(second.test_client(), "clinician", PASSWORD).status_code == 429
    assert [e.actor for e in audit_events(web_platform, "login.locked")] == ["clinician"] * 2
    # another account from another address is not affected
    assert _login(first.test_client(), "admin", PASSWORD, "10.0.0.2").status_code == 302

    # the lock ends with the window
    with web_platform.sessions.begin() as session:
        for failure in session.scalars(select(LoginFailure)):
            failure.created_at = utcnow() - users.LOCKOUT_WINDOW - timedelta(seconds=1)
    assert _login(first.test_client(), "clinician", PASSWORD).status_code == 302


@SQLITE_ONLY
def test_one_address_trying_many_accounts_is_locked_out(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    with web_platform.sessions.begin() as session:
        for n in range(users.MAX_FAILURES_PER_ADDRESS):
            users.record_login_failure(session, f"guess{n}", "10.9.9.9")
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    assert _login(app.test_client(), "admin", PASSWORD, "10.9.9.9").status_code == 429
    assert _login(app.test_client(), "admin", PASSWORD, "10.9.9.8").status_code == 302


@SQLITE_ONLY
def test_a_successful_login_forgives_earlier_failures(client: FlaskClient) -> None:
    for _ in range(users.MAX_FAILURES_PER_USER - 1):
        _login(client, "researcher", "wrong password")
    assert _login(client, "researcher", PASSWORD).status_code == 302
    client.post("/logout")
    assert _login(client, "researcher", "wrong password").status_code == 401
    assert _login(client, "researcher", PASSWORD).status_code == 302


# --- API tokens ------------------------------------------------------------------------------


def test_api_tokens_are_shown_once_hashed_at_rest_and_revocable(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    app = create_app(web_platform, {"TESTING": True})  # CSRF on
    browser = app.test_client()
    log_in_as(browser, web_platform, "researcher")
    page = browser.get("/account").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert csrf
    created = browser.post("/account/tokens", data={"name": "laptop", "csrf_token": csrf.group(1)})
    assert created.status_code == 201
    match = re.search(r'<code id="new-token">([^<]+)</code>', created.get_data(as_text=True))
    assert match
    token = match.group(1)
    assert "new-token" not in browser.get("/account").get_data(as_text=True)  # shown once

    with web_platform.sessions() as session:
        (row,) = session.scalars(select(ApiToken)).all()
        assert row.token_hash != token and token not in row.token_hash
        assert row.token_hash == users.token_digest(token) and row.prefix == token[:10]

    script = app.test_client()  # no cookie: the token alone
    bearer = {"Authorization": f"Bearer {token}"}
    assert script.get("/api/jobs", headers=bearer).status_code == 200
    assert script.get("/api/jobs").status_code == 401
    assert script.get("/api/jobs", headers={"Authorization": "Bearer rsg_nope"}).status_code == 401
    # a token request needs no CSRF token (a cross-site page cannot send the header)
    job = script.post(
        "/api/jobs", headers=bearer, json={"kind": "build-dataset", "dataset": "nope"}
    )
    assert job.status_code == 404 and "no dataset 'nope'" in job.json["detail"]
    # the role still applies: a researcher's token cannot review
    review = script.post(
        f"/api/predictions/{seeded['prediction']}/reviews",
        headers=bearer,
        json={"status": "accepted"},
    )
    assert review.status_code == 403
    # a cookie-only POST without the CSRF token is refused
    assert browser.post("/api/jobs", json={"kind": "train"}).status_code == 400

    with web_platform.sessions() as session:
        assert session.scalars(select(ApiToken)).one().last_used_at is not None
        token_id = session.scalars(select(ApiToken.id)).one()
    revoked = browser.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf.group(1)})
    assert revoked.status_code == 303
    assert script.get("/api/jobs", headers=bearer).status_code == 401
    assert [e.action for e in audit_events(web_platform, "token.revoke")] == ["token.revoke"]


@SQLITE_ONLY
def test_a_bearer_request_ignores_the_session_cookie(
    client: FlaskClient, web_platform: Platform
) -> None:
    log_in_as(client, web_platform, "admin")
    assert client.get("/api/jobs").status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": "Bearer bad"}).status_code == 401


@SQLITE_ONLY
def test_tokens_of_deactivated_users_stop_working(
    client: FlaskClient, web_platform: Platform
) -> None:
    with web_platform.sessions.begin() as session:
        user = users.get_user(session, "clinician")
        _, token = users.create_token(session, user, "script")
    headers = {"Authorization": f"Bearer {token}"}
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False}
    # another web process, which caches the token's owner for a while
    other = create_app(web_platform, {**config, "RADSEG_TOKEN_CACHE_SECONDS": 0.5}).test_client()
    assert client.get("/api/studies", headers=headers).status_code == 200
    assert other.get("/api/studies", headers=headers).status_code == 200
    log_in_as(client, web_platform, "admin")
    with web_platform.sessions() as session:
        clinician_id = users.get_user(session, "clinician").id
    client.post(f"/admin/users/{clinician_id}", data={"role": "clinician"})  # not active
    assert client.get("/api/studies", headers=headers).status_code == 401  # this process: at once
    time.sleep(0.6)
    assert other.get("/api/studies", headers=headers).status_code == 401  # others: within the TTL


# --- accounts --------------------------------------------------------------------------------


@SQLITE_ONLY
def test_admins_create_users_reset_passwords_and_change_roles(
    client: FlaskClient, web_platform: Platform
) -> None:
    log_in_as(client, web_platform, "admin")
    created = client.post(
        "/admin/users", data={"username": "nurse", "role": "clinician", "password": "long enough 1"}
    )
    assert created.status_code == 303
    dup = client.post(
        "/admin/users", data={"username": "nurse", "role": "clinician", "password": "long enough 1"}
    )
    assert dup.status_code == 400 and b"already taken" in dup.data
    short = client.post(
        "/admin/users", data={"username": "x", "role": "admin", "password": "short"}
    )
    assert short.status_code == 400
    with web_platform.sessions() as session:
        nurse = users.get_user(session, "nurse")
        assert nurse.role == Role.CLINICIAN and nurse.password_hash.startswith("scrypt:")
        nurse_id = nurse.id

    reset = client.post(
        f"/admin/users/{nurse_id}",
        data={"role": "researcher", "active": "y", "password": "brand new pass"},
    )
    assert reset.status_code == 303
    with web_platform.sessions() as session:
        nurse = session.get(User, nurse_id)
        assert nurse is not None and nurse.role == Role.RESEARCHER
        assert users.authenticate(session, "nurse", "brand new pass") is not None
    (event,) = audit_events(web_platform, "user.update")
    assert event.detail == {"role": "researcher", "password": "reset"}

    with web_platform.sessions() as session:
        admin_id = users.get_user(session, "admin").id
    selfdemote = client.post(f"/admin/users/{admin_id}", data={"role": "clinician", "active": "y"})
    assert selfdemote.status_code == 400


@SQLITE_ONLY
def test_users_change_their_own_password(client: FlaskClient, web_platform: Platform) -> None:
    log_in_as(client, web_platform, "clinician")
    wrong = client.post(
        "/account/password",
        data={"current": "not it at all", "new": "another pass", "repeat": "another pass"},
    )
    assert wrong.status_code == 400 and b"not your current password" in wrong.data
    ok = client.post(
        "/account/password",
        data={"current": PASSWORD, "new": "another pass", "repeat": "another pass"},
    )
    assert ok.status_code == 302
    assert client.get("/studies").status_code == 200  # this session continues
    with web_platform.sessions() as session:
        assert users.authenticate(session, "clinician", "another pass") is not None


# --- the audit log page ----------------------------------------------------------------------


@SQLITE_ONLY
def test_admins_browse_and_filter_the_audit_log(
    client: FlaskClient, web_platform: Platform, seeded: dict[str, int]
) -> None:
    _login(client, "clinician", "wrong password")
    log_in_as(client, web_platform, "clinician")
    client.get(f"/studies/{seeded['study']}")
    log_in_as(client, web_platform, "admin")

    def actions(query: str) -> set[str]:
        page = client.get(f"/admin/audit?{query}").get_data(as_text=True)
        return set(re.findall(r"<td><code>([^<]+)</code></td>", page))

    assert actions("action=login") == {"login.failed"}
    assert actions(f"target=study:{seeded['study']}") == {"study.view"}
    assert actions("actor=clinician") == {"login.failed", "study.view"}
    assert actions("actor=nobody") == set()
    assert actions("since=2999-01-01") == set()
    assert "study.view" in actions("since=2000-01-01")
    assert client.get("/admin/audit?since=yesterday").status_code == 400


@SQLITE_ONLY
def test_the_plugins_page_shows_settings_with_secrets_masked(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    from pydantic import BaseModel, SecretStr

    from radseg.core import create_platform
    from radseg.web.plugin_settings import MASK, masked

    class Validated(BaseModel):
        url: str
        password: SecretStr
        retries: int = 3

    assert masked(Validated(url="http://pacs", password=SecretStr("x"))) == {
        "url": "http://pacs",
        "password": MASK,
        "retries": 3,
    }
    assert masked({"api_key": "abc", "nested": {"token": "t", "port": 4242}}) == {
        "api_key": MASK,
        "nested": {"token": MASK, "port": 4242},
    }

    settings = web_platform.settings.model_copy(
        update={"plugins": {"demo": {"url": "http://pacs.local", "password": "hunter2"}}}
    )
    platform = create_platform(settings, autoload=False, plugins=[DEMO])
    try:
        client = create_app(platform, {"TESTING": True}).test_client()
        log_in_as(client, platform, "admin")
        page = client.get("/admin/plugins").get_data(as_text=True)
        assert "http://pacs.local" in page and MASK in page and "hunter2" not in page
        (row,) = client.get("/-/plugins").json["plugins"]
        assert row["settings"] == {"url": "http://pacs.local", "password": MASK}
    finally:
        platform.close()
