"""Security of the web app: the route × role matrix, the login throttle, sessions, API tokens,
accounts, audit.

The access policy is declared once, in :data:`POLICY`; the matrix test walks ``app.url_map``,
so a new route fails the test until it is added to the table with its roles.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from radseg import users
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import (
    ApiToken,
    Dataset,
    Job,
    JobState,
    LoginFailure,
    ModelVersion,
    Role,
    User,
)
from radseg.web import create_app
from radseg.web.auth import TOKENS, public
from tests.support import SQLITE_ONLY
from tests.web_support import DEMO, PASSWORD, audit_events, log_in_as

A, R, C = Role.ADMIN, Role.RESEARCHER, Role.CLINICIAN
EVERYONE = frozenset({A, R, C})
OPERATORS = frozenset({A, R})
REVIEWERS = frozenset({A, C})
ADMINS = frozenset({A})
PUBLIC = "public"

#: for tests whose subject does not depend on the database (the rest run on both)

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
    "slices.uncertainty_png": EVERYONE,
    "slices.plane_png": EVERYONE,
    "slices.overlay_plane_png": EVERYONE,
    "slices.label_overlay_plane_png": EVERYONE,
    "slices.uncertainty_plane_png": EVERYONE,
    "slices.voxel": EVERYONE,
    "review.queue": EVERYONE,
    "review.decide": REVIEWERS,
    "review.correct": REVIEWERS,
    "jobs.list_jobs": EVERYONE,
    "jobs.job_page": EVERYONE,
    "jobs.job_charts_fragment": EVERYONE,
    "jobs.cancel": OPERATORS,
    "jobs.retry": OPERATORS,
    "studies.upload_page": OPERATORS,
    "studies.upload": OPERATORS,
    "datasets.datasets": OPERATORS,
    "datasets.build_dataset": OPERATORS,
    "training.train": OPERATORS,
    "training.predict": OPERATORS,
    "training.evaluate": OPERATORS,
    "admin.health": PUBLIC,
    "admin.plugins_json": EVERYONE,
    "admin.plugins": ADMINS,
    "admin.enable": ADMINS,
    "admin.disable": ADMINS,
    "user_admin.list_users": ADMINS,
    "user_admin.create_user": ADMINS,
    "user_admin.update_user": ADMINS,
    "user_admin.clear_login_failures": ADMINS,
    "audit_log.audit_page": ADMINS,
    "api.openapi_document": PUBLIC,
    "api.audit_events": ADMINS,
    "api.studies": EVERYONE,
    "api.study": EVERYONE,
    "api.series": EVERYONE,
    "api.datasets": EVERYONE,
    "api.dataset": EVERYONE,
    "api.jobs": EVERYONE,
    "api.submit_job": OPERATORS,
    "api.job": EVERYONE,
    "api.job_log": OPERATORS,
    "api.job_curves_json": EVERYONE,
    "api.cancel_job": OPERATORS,
    "api.retry_job": OPERATORS,
    "api.models": EVERYONE,
    "api.model_versions": EVERYONE,
    "api.model_version": EVERYONE,
    "api.model_version_quality": EVERYONE,
    "api.model_version_quality_svg": EVERYONE,
    "api.predictions": EVERYONE,
    "api.prediction": EVERYONE,
    "api.review_queue": EVERYONE,
    "api.reviews": EVERYONE,
    "api.add_review": REVIEWERS,
    "api.measurements": EVERYONE,
    "api.add_measurement": REVIEWERS,
    "api.delete_measurement": REVIEWERS,
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
    # readers and adjudication (issue 14, part 2): the blinding is per case, in the use cases
    "readings.reading_overlay": EVERYONE,
    "readings.case_overlay": EVERYONE,
    "readings.reading_overlay_plane": EVERYONE,
    "readings.case_overlay_plane": EVERYONE,
    "readings.my_readings": REVIEWERS,
    "readings.reading_page": EVERYONE,
    "readings.paint_reading": REVIEWERS,
    "readings.submit_reading": REVIEWERS,
    "readings.worklist": OPERATORS,
    "readings.assign": OPERATORS,
    "readings.case_page": EVERYONE,
    "readings.start_adjudication": REVIEWERS,
    "readings.paint_adjudication": REVIEWERS,
    "readings.sign_off": REVIEWERS,
    "readings.cancel": OPERATORS,
    "readings.readers_page": EVERYONE,
    "api.worklist": OPERATORS,
    "api.assign": OPERATORS,
    "api.case": EVERYONE,
    "api.cancel": OPERATORS,
    "api.agreement": EVERYONE,
    "api.start_adjudication": REVIEWERS,
    "api.paint_adjudication": REVIEWERS,
    "api.sign_off": REVIEWERS,
    "api.my_readings": REVIEWERS,
    "api.reading": EVERYONE,
    "api.open_reading": REVIEWERS,
    "api.paint_reading": REVIEWERS,
    "api.submit_reading": REVIEWERS,
    "api.readers": EVERYONE,
    "models.retrain": OPERATORS,
    "api.retrain": OPERATORS,
}


#: methods no route answers; each must be 405 wherever it is not declared
UNDECLARED_METHODS = ("PUT", "PATCH", "DELETE")


def policy_problems(app: Flask) -> list[str]:
    """Every way ``app``'s routes and :data:`POLICY` disagree (empty when they agree)."""
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    problems = [f"{e}: a route without a declared policy" for e in sorted(endpoints - set(POLICY))]
    problems += [f"{e}: in POLICY, but no route" for e in sorted(set(POLICY) - endpoints)]
    for endpoint in sorted(endpoints & set(POLICY)):
        view, declared = app.view_functions[endpoint], POLICY[endpoint]
        if declared == PUBLIC:
            if not (getattr(view, "public", False) or endpoint == "static"):
                problems.append(f"{endpoint}: POLICY says public, the view is not @public")
        elif getattr(view, "required_roles", None) != declared:
            problems.append(f"{endpoint}: the view's roles differ from POLICY")
    return problems


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


def _routes(app: Flask) -> list[tuple[str, str, Any]]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, rule))
    return out


def _matrix_ids(platform: Platform, seeded: dict[str, int]) -> dict[str, int]:
    """Real rows for every id in a URL, so each view runs past its lookup: a job and a token of
    the researcher (whose job log and token they may read), and the seeded series' rows."""
    with platform.sessions.begin() as session:
        job = Job(kind="train", state=JobState.RUNNING, created_by="researcher")
        session.add(job)
        _, _token = users.create_token(session, users.get_user(session, "researcher"), "matrix")
        session.flush()
        ids = {
            "job": job.id,
            "token": session.scalars(select(ApiToken.id)).one(),
            "version": session.scalars(select(ModelVersion.id)).first() or 999,
            "model_version": session.scalars(select(ModelVersion.id)).first() or 999,
            "model": session.scalars(select(ModelVersion.model_id)).first() or 999,
            "dataset": session.scalars(select(Dataset.id)).first() or 999,
            "user": seeded["clinician"],
        }
    return {**ids, **{k: v for k, v in seeded.items() if k in ("study", "series", "prediction")}}


def test_every_route_is_in_the_policy_table(app: Flask) -> None:
    assert policy_problems(app) == []


@SQLITE_ONLY
def test_a_new_route_without_a_declared_policy_fails_the_check(app: Flask) -> None:
    app.add_url_rule("/forgotten", "forgotten", lambda: "open to all")
    app.view_functions["admin.plugins"] = public(app.view_functions["admin.plugins"].__wrapped__)
    assert policy_problems(app) == [
        "forgotten: a route without a declared policy",
        "admin.plugins: the view's roles differ from POLICY",
    ]


@SQLITE_ONLY
def test_route_matrix_every_route_every_role_and_anonymous(
    app: Flask, web_platform: Platform, seeded: dict[str, int]
) -> None:
    """Anonymous: the login page (HTML) or 401 (JSON); a role not in the policy: 403; a role in
    it: never 401/403. Every route of the URL map, each of its methods, every role; never a 5xx;
    and 405 for the methods a URL does not declare."""
    ids = _matrix_ids(web_platform, seeded)
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
                    assert status == 401 and response.is_json, where
                else:
                    assert status == 302 and "/login" in response.headers["Location"], where
            elif role in declared:
                assert status not in (401, 403), where
            else:
                assert status == 403, where
            checked += 1
    # every route, every method, anonymous and each role
    assert checked == 4 * len(_routes(app))

    declared_methods: dict[str, set[str]] = {}
    for _, method, rule in _routes(app):
        declared_methods.setdefault(_url(app, rule, ids), set()).add(method)
    admin = app.test_client()
    log_in_as(admin, web_platform, "admin")
    for url, methods in declared_methods.items():
        for method in set(UNDECLARED_METHODS) - methods:
            for client in (app.test_client(), admin):
                status = client.open(url, method=method).status_code
                assert status == 405, f"{method} {url}: {status}"


# --- the login throttle ----------------------------------------------------------------------


class Clock:
    """The login throttle's clock (``RADSEG_CLOCK``), moved on by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _login(client: FlaskClient, username: str, password: str, remote: str = "10.0.0.1") -> Any:
    return client.post(
        "/login",
        data={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": remote},
    )


def _fast_wrong_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip scrypt for attempts that fail anyway (the throttle is the subject, not hashing)."""
    monkeypatch.setattr(users, "authenticate", lambda session, name, password: None)


def test_failed_logins_slow_down_one_account_from_one_address_in_every_worker(
    web_platform: Platform, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False, "RADSEG_CLOCK": clock}
    first, second = create_app(web_platform, config), create_app(web_platform, config)
    free = users.THROTTLE.free_failures
    with monkeypatch.context() as fast:
        _fast_wrong_passwords(fast)
        for n in range(free):
            worker = first if n % 2 else second  # two "gunicorn workers" share the count
            assert _login(worker.test_client(), "admin", "wrong password").status_code == 401

    # the account from an address that has not failed, and another account from this address
    assert _login(first.test_client(), "admin", PASSWORD, "10.0.0.2").status_code == 302
    assert _login(first.test_client(), "researcher", PASSWORD).status_code == 302
    # that pair waits, with the right password too, and is told how long
    slowed = _login(first.test_client(), "admin", PASSWORD)
    assert slowed.status_code == 429 and slowed.headers["Retry-After"] == "30"
    assert b"Try again in 30 seconds" in slowed.data
    assert _login(second.test_client(), "admin", PASSWORD).status_code == 429

    # the wait doubles with each failure after it
    clock.advance(30)
    assert _login(first.test_client(), "admin", "wrong password").status_code == 401
    assert _login(first.test_client(), "admin", PASSWORD).headers["Retry-After"] == "60"
    clock.advance(59)
    assert _login(second.test_client(), "admin", PASSWORD).headers["Retry-After"] == "1"
    clock.advance(1)
    assert _login(second.test_client(), "admin", PASSWORD).status_code == 302
    # the right password forgives that pair: the next mistake is free again
    assert _login(first.test_client(), "admin", "wrong password").status_code == 401
    assert _login(first.test_client(), "admin", PASSWORD).status_code == 302
    assert [e.actor for e in audit_events(web_platform, "login.throttled")] == ["admin"] * 4


def test_the_delay_doubles_up_to_its_cap_and_old_failures_are_forgotten() -> None:
    policy = users.ThrottlePolicy()
    delays = [policy.delay(n) for n in range(policy.free_failures + 7)]
    assert delays[: policy.free_failures] == [None] * policy.free_failures
    assert [d.total_seconds() for d in delays[policy.free_failures :] if d] == [
        30,
        60,
        120,
        240,
        480,
        900,
        900,
    ]
    assert policy.delay(10**6) == policy.max_delay
    assert policy.delay(1, alarm=True) == policy.base_delay


@SQLITE_ONLY
def test_failures_older_than_a_day_do_not_count(
    web_platform: Platform, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    config = {"TESTING": True, "WTF_CSRF_ENABLED": False, "RADSEG_CLOCK": clock}
    app = create_app(web_platform, config)
    with monkeypatch.context() as fast:
        _fast_wrong_passwords(fast)
        for _ in range(users.THROTTLE.free_failures + 8):  # a delay at the 15-minute cap
            clock.advance(users.THROTTLE.max_delay.total_seconds())
            _login(app.test_client(), "clinician", "wrong password")
    assert _login(app.test_client(), "clinician", PASSWORD).status_code == 429
    clock.advance(users.THROTTLE.forget_after.total_seconds())
    assert _login(app.test_client(), "clinician", PASSWORD).status_code == 302
    assert _login(app.test_client(), "clinician", "wrong", "10.3.3.3").status_code == 401
    with web_platform.sessions() as session:  # that failure dropped the ones nobody counts
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 1


@SQLITE_ONLY
def test_many_failures_from_one_address_lock_nobody_else_out(
    web_platform: Platform, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hospital's NAT address: one person guessing many names there slows only those names."""
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    with monkeypatch.context() as fast:
        _fast_wrong_passwords(fast)
        for n in range(30):
            assert _login(app.test_client(), f"guess{n}", "wrong", "10.9.9.9").status_code == 401
        for _ in range(users.THROTTLE.free_failures):
            _login(app.test_client(), "admin", "wrong", "10.9.9.9")
    assert _login(app.test_client(), "researcher", PASSWORD, "10.9.9.9").status_code == 302
    assert _login(app.test_client(), "clinician", PASSWORD, "10.9.9.9").status_code == 302
    assert _login(app.test_client(), "admin", PASSWORD, "10.9.9.9").status_code == 429


@SQLITE_ONLY
def test_guessing_from_many_addresses_slows_every_address_that_failed(
    web_platform: Platform, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    key = users.account_key("admin", web_platform.settings.secret("secret_key"))
    with web_platform.sessions.begin() as session:  # a botnet: one guess each
        for n in range(users.THROTTLE.alarm_failures):
            users.record_login_failure(session, key, f"192.0.2.{n}", now=utcnow())
    with monkeypatch.context() as fast:
        _fast_wrong_passwords(fast)
        assert _login(app.test_client(), "admin", "wrong", "10.1.1.1").status_code == 401
    assert _login(app.test_client(), "admin", PASSWORD, "10.1.1.1").status_code == 429
    assert _login(app.test_client(), "admin", PASSWORD, "192.0.2.7").status_code == 429
    # the admin at their own desk is never slowed down
    assert _login(app.test_client(), "admin", PASSWORD, "10.2.2.2").status_code == 302


@SQLITE_ONLY
def test_an_admin_clears_an_accounts_failed_logins_on_the_users_page_and_the_cli(
    web_platform: Platform, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from radseg.cli import main

    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    with monkeypatch.context() as fast:
        _fast_wrong_passwords(fast)
        for remote in ("10.0.0.1", "10.0.0.2"):
            for _ in range(users.THROTTLE.free_failures):
                _login(app.test_client(), "clinician", "wrong", remote)
    assert _login(app.test_client(), "clinician", PASSWORD).status_code == 429
    admin = app.test_client()
    log_in_as(admin, web_platform, "admin")
    page = admin.get("/admin/users").get_data(as_text=True)
    row = re.search(r'<tr data-user="clinician">.*?</tr>', page, re.S)
    assert row and "10 from 2 addresses" in row.group()
    cleared = admin.post(f"/admin/users/{seeded['clinician']}/login-failures/clear")
    assert cleared.status_code == 303
    assert _login(app.test_client(), "clinician", PASSWORD).status_code == 302
    (event,) = audit_events(web_platform, "user.login_failures.clear")
    assert (event.actor, event.target, event.detail) == (
        "admin",
        f"user:{seeded['clinician']}",
        {"cleared": 10},
    )

    with monkeypatch.context() as fast:
        _fast_wrong_passwords(fast)
        for _ in range(users.THROTTLE.free_failures):
            _login(app.test_client(), "researcher", "wrong")
    monkeypatch.setenv("RADSEG_DATABASE_URL", web_platform.settings.database_url_resolved)
    result = CliRunner().invoke(
        main, ["--home", str(web_platform.home), "users", "unlock", "researcher"]
    )
    assert result.exit_code == 0, result.output
    assert "cleared 5 failed logins of 'researcher'" in result.output
    assert _login(app.test_client(), "researcher", PASSWORD).status_code == 302
    unknown = CliRunner().invoke(main, ["--home", str(web_platform.home), "users", "unlock", "x"])
    assert unknown.exit_code == 1 and "no user named 'x'" in unknown.output


def test_a_failed_login_keeps_no_typed_name_of_an_account_that_does_not_exist(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    """People type their password into the name field; it must not end up in the database."""
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    typed = "Tr0ub4dor&3-in-the-name-field"
    assert _login(app.test_client(), typed, "whatever").status_code == 401
    assert _login(app.test_client(), "clinician", "wrong password").status_code == 401
    events = audit_events(web_platform, "login.failed")
    assert sorted(e.actor for e in events) == ["anonymous", "clinician"]
    with web_platform.engine.connect() as connection:
        for table in ("audit_event", "login_failure"):
            rows = connection.execute(text(f"SELECT * FROM {table}")).all()
            assert rows and not any(typed in str(row) for row in rows), table


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
    # the page that shows it lists it too: the view reads after the use case has committed
    assert "No tokens." not in created.get_data(as_text=True)
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
    # another web process, which caches the token's owner for a while (its clock moved by hand)
    now = [1000.0]
    other_app = create_app(web_platform, {**config, "RADSEG_TOKEN_CACHE_SECONDS": 30})
    other_app.extensions[TOKENS].clock = lambda: now[0]
    other = other_app.test_client()
    assert client.get("/api/studies", headers=headers).status_code == 200
    assert other.get("/api/studies", headers=headers).status_code == 200
    log_in_as(client, web_platform, "admin")
    with web_platform.sessions() as session:
        clinician_id = users.get_user(session, "clinician").id
    client.post(f"/admin/users/{clinician_id}", data={"role": "clinician"})  # not active
    assert client.get("/api/studies", headers=headers).status_code == 401  # this process: at once
    assert other.get("/api/studies", headers=headers).status_code == 200  # others: cached...
    now[0] += 31
    assert other.get("/api/studies", headers=headers).status_code == 401  # ...within the TTL


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
    # a use-case rule (radseg.workflows.users): another admin may, this one may not
    assert (
        selfdemote.status_code == 403 and b"cannot demote or deactivate yourself" in selfdemote.data
    )


def test_deactivation_ends_sessions_and_tokens_for_good(
    web_platform: Platform, seeded: dict[str, int]
) -> None:
    """Reactivating an account must not bring back the browser sessions and API tokens it had."""
    app = create_app(web_platform, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    browser, admin = app.test_client(), app.test_client()
    log_in_as(browser, web_platform, "clinician")
    log_in_as(admin, web_platform, "admin")
    with web_platform.sessions.begin() as session:
        _, token = users.create_token(session, users.get_user(session, "clinician"), "script")
    bearer = {"Authorization": f"Bearer {token}"}
    assert browser.get("/studies").status_code == 200
    assert app.test_client().get("/api/studies", headers=bearer).status_code == 200

    clinician = f"/admin/users/{seeded['clinician']}"
    assert admin.post(clinician, data={"role": "clinician"}).status_code == 303  # not active
    assert browser.get("/studies").status_code == 302
    assert admin.post(clinician, data={"role": "clinician", "active": "y"}).status_code == 303
    assert browser.get("/studies").status_code == 302  # the old session stays ended
    assert browser.get("/api/jobs").status_code == 401
    assert app.test_client().get("/api/studies", headers=bearer).status_code == 401
    (deactivated, _) = audit_events(web_platform, "user.update")[::-1]
    assert deactivated.detail == {"active": False, "tokens_revoked": 1}
    with web_platform.sessions() as session:
        assert session.scalars(select(ApiToken.revoked_at)).one() is not None

    # a new login works; an admin's password reset ends that session too
    log_in_as(browser, web_platform, "clinician")
    assert browser.get("/studies").status_code == 200
    reset = {"role": "clinician", "active": "y", "password": "a brand new one"}
    assert admin.post(clinician, data=reset).status_code == 303
    assert browser.get("/studies").status_code == 302


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
    from radseg.plugins.settings import MASK, masked

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
