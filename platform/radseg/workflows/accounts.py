"""Use cases of one's own account: log in and out, change the password, create and revoke
API tokens.

Everyone with an account may do these to their own account; an admin may also revoke anyone's
token. A new token is returned once, to be shown once: only its digest is stored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import ApiToken, User
from radseg.errors import NotFound
from radseg.roles import ADMINS, Actor
from radseg.workflows.users import login_key


def _account(session: Session, actor: Actor) -> User:
    user = users.find_user(session, actor.username)
    if user is None or not user.active:
        raise NotFound(
            f"there is no active account {actor.username!r}; log in with your own account "
            "or ask an admin to create one"
        )
    return user


def change_password(platform: Platform, actor: Actor, *, current: str, new: str) -> User:
    """Replace ``actor``'s password after checking the ``current`` one; audited.

    Every browser session of the account ends (the returned user carries the new session
    epoch, for the web to log this browser in again). Raises
    :class:`~radseg.users.WrongPasswordError` or :class:`~radseg.users.PasswordPolicyError`.
    """
    with platform.sessions.begin() as session:
        me = _account(session, actor)
        if users.authenticate(session, me.username, current) is None:
            raise users.WrongPasswordError("that is not your current password")
        users.set_password(session, me, new)
        audit.record(session, me, "user.password", f"user:{me.id}")
    return me


def create_token(platform: Platform, actor: Actor, *, name: str) -> tuple[ApiToken, str]:
    """A new API token of ``actor``'s called ``name``: the row and the token, which exists
    nowhere else (show it once); audited."""
    with platform.sessions.begin() as session:
        me = _account(session, actor)
        row, token = users.create_token(session, me, name)
        audit.record(session, me, "token.create", f"token:{row.id}", name=row.name)
    return row, token


def revoke_token(platform: Platform, actor: Actor, token_id: int) -> ApiToken:
    """Revoke API token ``token_id``: ``actor``'s own, or anyone's for an admin; audited.

    Another person's token is :class:`~radseg.errors.NotFound` to a non-admin, as a missing
    one is: its existence is not told.
    """
    with platform.sessions.begin() as session:
        row = session.get(ApiToken, token_id)
        if row is None or (row.user.username != actor.username and not actor.may(ADMINS)):
            raise NotFound(f"you have no API token {token_id}")
        users.revoke_token(session, row)
        audit.record(
            session, actor.username, "token.revoke", f"token:{row.id}", owner=row.user.username
        )
    return row


def log_in(platform: Platform, *, username: str, password: str, remote: str, now: datetime) -> User:
    """The active user ``username`` if ``password`` is theirs; audited, and counted by the
    login throttle (:class:`~radseg.users.ThrottlePolicy`) per account and address ``remote``.

    Raises :class:`~radseg.users.LoginThrottled` (with the wait; the password is not checked)
    or :class:`~radseg.users.LoginRefused`. Either is raised after the failure and its audit
    event are committed: a refused login is remembered.
    """
    key = login_key(platform, username)
    with platform.sessions.begin() as session:
        # the audit log names an account only if it exists: people type passwords into the
        # name field, and the log must not keep them
        known = users.find_user(session, username) if username.strip() else None
        actor = known.username if known is not None else None
        wait = users.login_wait(session, key, remote, now=now)
        if wait is not None:
            audit.record(session, actor, "login.throttled", remote=remote)
            refused: users.LoginRefused = users.LoginThrottled(wait)
        elif (user := users.authenticate(session, username, password)) is None:
            users.record_login_failure(session, key, remote, now=now)
            audit.record(session, actor, "login.failed", remote=remote)
            refused = users.LoginRefused("wrong username or password")
        else:
            users.clear_login_failures(session, key, remote)
            audit.record(session, user, "login", f"user:{user.id}", remote=remote)
            return user
    raise refused


def log_out(platform: Platform, actor: Actor) -> None:
    """Audit that ``actor`` logged out (the web ends the browser session itself)."""
    with platform.sessions.begin() as session:
        me = users.find_user(session, actor.username)
        target = f"user:{me.id}" if me is not None else ""
        audit.record(session, actor.username, "logout", target)


def token_owner(platform: Platform, token: str) -> User | None:
    """The active owner of an unrevoked API ``token`` (``None`` for any other token), recording
    when the token was used (at most once a minute: :func:`radseg.users.user_for_token`)."""
    with platform.sessions.begin() as session:
        return users.user_for_token(session, token)
