"""The user-management use cases (:mod:`radseg.workflows.users`), called as the web's users page
and the ``radseg users`` commands call them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from radseg import audit, users
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import ApiToken, AuditEvent, Role, User
from radseg.errors import InputError, NotFound, PermissionDenied
from radseg.roles import CLI_ACTOR, Actor
from radseg.settings import Settings
from radseg.workflows import users as user_cases
from tests.support import SQLITE_ONLY, migrated_platform

ADMIN = Actor("root", Role.ADMIN)
RESEARCHER = Actor("rita", Role.RESEARCHER)
PASSWORD = "long enough"


@pytest.fixture
def store(settings: Settings) -> Iterator[Platform]:
    platform = migrated_platform(settings, autoload=False)
    with platform.sessions.begin() as session:
        users.create_user(session, ADMIN.username, PASSWORD, Role.ADMIN)
    yield platform
    platform.close()


def _events(platform: Platform, action: str) -> list[AuditEvent]:
    with platform.sessions() as session:
        return audit.events(session, action=action)


def _user(platform: Platform, username: str) -> User:
    with platform.sessions() as session:
        return users.get_user(session, username)


def test_admins_create_users_and_the_event_names_the_new_account(store: Platform) -> None:
    made = user_cases.create_user(
        store, ADMIN, username="nurse", password=PASSWORD, role="clinician"
    )
    assert (made.username, made.role) == ("nurse", Role.CLINICIAN)
    (event,) = _events(store, "user.create")
    assert (event.actor, event.target, event.detail) == (
        "root",
        f"user:{made.id}",
        {"role": "clinician"},
    )
    with pytest.raises(users.UsernameTakenError, match="'nurse' is already taken"):
        user_cases.create_user(store, ADMIN, username="nurse", password=PASSWORD, role="admin")
    with pytest.raises(PermissionDenied, match="only an admin can create users"):
        user_cases.create_user(
            store, RESEARCHER, username="mallory", password=PASSWORD, role="admin"
        )
    assert len(_events(store, "user.create")) == 1


@SQLITE_ONLY
def test_the_first_admin_is_created_once_and_keeps_its_password(store: Platform) -> None:
    assert user_cases.ensure_first_admin(store, username="boss", password=PASSWORD) is True
    assert user_cases.ensure_first_admin(store, username="boss", password="another one") is False
    with store.sessions() as session:
        assert users.authenticate(session, "boss", PASSWORD) is not None
    (event,) = _events(store, "user.create")
    assert (event.actor, event.detail) == (CLI_ACTOR.username, {"role": "admin"})


def test_an_update_reports_and_audits_exactly_what_changed(store: Platform) -> None:
    with store.sessions.begin() as session:
        nurse = users.create_user(session, "nurse", PASSWORD, Role.CLINICIAN)
        users.create_token(session, nurse, "script")
        key = user_cases.login_key(store, "nurse")
        users.record_login_failure(session, key, "10.0.0.1", now=utcnow())
    assert user_cases.update_user(store, ADMIN, nurse.id, role="clinician", active=True) == {}
    assert _events(store, "user.update") == []

    changes = user_cases.update_user(store, ADMIN, nurse.id, role=Role.RESEARCHER, active=False)
    assert changes == {"role": "researcher", "active": False, "tokens_revoked": 1}
    changes = user_cases.update_user(store, ADMIN, nurse.id, active=True, password="brand new pw")
    assert changes == {"active": True, "password": "reset"}
    with store.sessions() as session:
        assert users.authenticate(session, "nurse", "brand new pw") is not None
        assert users.login_wait(session, key, "10.0.0.1", now=utcnow()) is None
        assert session.scalars(select(ApiToken.revoked_at)).one() is not None  # stays revoked
        assert users.login_failures(session, [key], now=utcnow()) == {}
    assert [e.detail for e in _events(store, "user.update")][::-1] == [
        {"role": "researcher", "active": False, "tokens_revoked": 1},
        {"active": True, "password": "reset"},
    ]


@SQLITE_ONLY
def test_an_update_that_is_refused_changes_nothing(store: Platform) -> None:
    me = _user(store, ADMIN.username)
    with pytest.raises(PermissionDenied, match="cannot demote or deactivate yourself"):
        user_cases.update_user(store, ADMIN, me.id, role="clinician")
    with pytest.raises(PermissionDenied, match="cannot demote or deactivate yourself"):
        user_cases.update_user(store, ADMIN, me.id, active=False)
    with pytest.raises(users.PasswordPolicyError, match="at least 8"):
        user_cases.update_user(store, ADMIN, me.id, role="researcher", password="short")
    with pytest.raises(InputError, match="valid roles are"):
        user_cases.update_user(store, ADMIN, me.id, role="doctor")
    with pytest.raises(NotFound, match="there is no user 999"):
        user_cases.update_user(store, ADMIN, 999, active=False)
    with pytest.raises(PermissionDenied, match="only an admin can manage users"):
        user_cases.update_user(store, RESEARCHER, me.id, active=False)
    again = _user(store, ADMIN.username)
    assert (again.role, again.active, again.password_hash) == (
        Role.ADMIN,
        True,
        me.password_hash,
    )
    # an admin may still change their own password
    assert user_cases.update_user(store, ADMIN, me.id, password="brand new pw") == {
        "password": "reset"
    }


@SQLITE_ONLY
def test_clearing_failed_logins_forgets_every_address(store: Platform) -> None:
    key = user_cases.login_key(store, ADMIN.username)
    now = utcnow()
    with store.sessions.begin() as session:
        for remote in ("10.0.0.1", "10.0.0.2", "10.0.0.2"):
            users.record_login_failure(session, key, remote, now=now - timedelta(seconds=1))
    assert user_cases.clear_login_failures(store, CLI_ACTOR, username=ADMIN.username) == 3
    assert user_cases.clear_login_failures(store, CLI_ACTOR, username=ADMIN.username) == 0
    (latest, first) = _events(store, "user.login_failures.clear")
    assert (first.actor, first.detail, latest.detail) == ("cli", {"cleared": 3}, {"cleared": 0})
    with pytest.raises(InputError, match="no user named 'x'"):
        user_cases.clear_login_failures(store, ADMIN, username="x")
    with pytest.raises(PermissionDenied):
        user_cases.clear_login_failures(store, RESEARCHER, username=ADMIN.username)
