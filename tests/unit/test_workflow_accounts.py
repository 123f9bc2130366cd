"""The own-account use cases (:mod:`radseg.workflows.accounts`): password and API tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from radseg import audit, users
from radseg.core import Platform
from radseg.db.base import utcnow
from radseg.db.models import AuditEvent, Role
from radseg.errors import NotFound
from radseg.roles import CLI_ACTOR, Actor
from radseg.settings import Settings
from radseg.workflows import accounts
from tests.support import migrated_platform

ADA = Actor("ada", Role.RESEARCHER)
BOB = Actor("bob", Role.CLINICIAN)
ROOT = Actor("root", Role.ADMIN)
PASSWORD = "long enough"


@pytest.fixture
def store(settings: Settings) -> Iterator[Platform]:
    platform = migrated_platform(settings, autoload=False)
    with platform.sessions.begin() as session:
        for actor in (ADA, BOB, ROOT):
            users.create_user(session, actor.username, PASSWORD, actor.role)
    yield platform
    platform.close()


def _events(platform: Platform, action: str) -> list[AuditEvent]:
    with platform.sessions() as session:
        return audit.events(session, action=action)


def test_a_password_changes_only_with_the_current_one_and_ends_other_sessions(
    store: Platform,
) -> None:
    with store.sessions() as session:
        before = users.session_token(users.get_user(session, "ada"))
    with pytest.raises(users.WrongPasswordError, match="not your current password"):
        accounts.change_password(store, ADA, current="not it at all", new="another pass")
    with pytest.raises(users.PasswordPolicyError, match="at least 8"):
        accounts.change_password(store, ADA, current=PASSWORD, new="short")
    me = accounts.change_password(store, ADA, current=PASSWORD, new="another pass")
    assert users.session_token(me) != before  # the web logs this browser in with it
    with store.sessions() as session:
        assert users.authenticate(session, "ada", "another pass") is not None
    (event,) = _events(store, "user.password")
    assert (event.actor, event.target) == ("ada", f"user:{me.id}")


def test_tokens_are_created_for_oneself_and_revoked_by_their_owner_or_an_admin(
    store: Platform,
) -> None:
    row, token = accounts.create_token(store, ADA, name=" laptop ")
    assert row.name == "laptop" and row.token_hash == users.token_digest(token)
    (event,) = _events(store, "token.create")
    assert (event.actor, event.target, event.detail) == (
        "ada",
        f"token:{row.id}",
        {"name": "laptop"},
    )

    with pytest.raises(NotFound, match=f"you have no API token {row.id}"):
        accounts.revoke_token(store, BOB, row.id)  # someone else's is not even there
    with pytest.raises(NotFound, match="you have no API token 999"):
        accounts.revoke_token(store, ADA, 999)
    assert accounts.revoke_token(store, ADA, row.id).revoked_at is not None
    other, _ = accounts.create_token(store, ADA, name="script")
    assert accounts.revoke_token(store, ROOT, other.id).revoked_at is not None
    events = _events(store, "token.revoke")
    assert [(e.actor, e.detail) for e in events] == [
        ("root", {"owner": "ada"}),
        ("ada", {"owner": "ada"}),
    ]


def test_an_actor_without_an_active_account_has_no_account_to_change(store: Platform) -> None:
    with pytest.raises(NotFound, match="no active account 'cli'"):
        accounts.create_token(store, CLI_ACTOR, name="laptop")
    with store.sessions.begin() as session:
        users.set_active(session, users.get_user(session, "bob"), False)
    with pytest.raises(NotFound, match="no active account 'bob'"):
        accounts.change_password(store, BOB, current=PASSWORD, new="another pass")


def test_logins_are_audited_counted_and_throttled_per_account_and_address(
    store: Platform,
) -> None:
    now = utcnow()
    user = accounts.log_in(store, username="ada", password=PASSWORD, remote="10.0.0.1", now=now)
    assert user.username == "ada"
    for _ in range(users.THROTTLE.free_failures):
        with pytest.raises(users.LoginRefused, match="wrong username or password"):
            accounts.log_in(store, username="ada", password="nope", remote="10.0.0.1", now=now)
    with pytest.raises(users.LoginThrottled) as throttled:
        accounts.log_in(store, username="ada", password=PASSWORD, remote="10.0.0.1", now=now)
    assert throttled.value.wait == users.THROTTLE.base_delay
    # another address is not slowed down, and nobody is named for a name that has no account
    accounts.log_in(store, username="ada", password=PASSWORD, remote="10.0.0.2", now=now)
    with pytest.raises(users.LoginRefused):
        accounts.log_in(store, username="hunter2", password="x", remote="10.0.0.3", now=now)
    assert [e.actor for e in _events(store, "login.failed")][:2] == ["anonymous", "ada"]
    assert [e.actor for e in _events(store, "login.throttled")] == ["ada"]
    assert len(_events(store, "login")) == 2

    accounts.log_out(store, ADA)
    (event,) = _events(store, "logout")
    assert (event.actor, event.target) == ("ada", f"user:{user.id}")
