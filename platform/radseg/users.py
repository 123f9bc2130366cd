"""Accounts: create users, check passwords, change them; API tokens; failed-login throttling.

Every function takes a ``session`` and never commits: the request or command that calls it frames
the transaction (STYLE §7). Passwords are hashed with werkzeug's scrypt; the hash string carries
its parameters, so they can be raised later without invalidating stored hashes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, delete, distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from radseg.db.base import utcnow
from radseg.db.models import ApiToken, LoginFailure, Role, User
from radseg.errors import InputError, RadsegError

MIN_PASSWORD_LENGTH = 8
#: scrypt is deliberately slow; a bound keeps a huge "password" from tying up a worker
MAX_PASSWORD_LENGTH = 1024
MAX_USERNAME_LENGTH = 80
HASH_METHOD = "scrypt"


class UsernameTakenError(InputError):
    """``create_user`` was given a name that already has an account."""


class PasswordPolicyError(InputError):
    """A password is too short or too long."""


class WrongPasswordError(InputError):
    """The password given to confirm a change is not the account's current one."""


class LoginRefused(RadsegError):
    """A login's name or password is wrong (the message never says which)."""


class LoginThrottled(LoginRefused):
    """Too many failed logins of this account from this address: ``wait`` until the next try
    (:class:`ThrottlePolicy`); the password was not checked."""

    def __init__(self, wait: timedelta) -> None:
        super().__init__(
            "too many failed logins for this account from your address; try again later, "
            "or ask an admin to clear them"
        )
        self.wait = wait


def hash_password(password: str) -> str:
    check_password_policy(password)
    return generate_password_hash(password, method=HASH_METHOD)


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"the password has {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")


def parse_role(role: Role | str) -> Role:
    """``role`` as a :class:`Role`, or an :class:`InputError` that lists the valid roles."""
    try:
        return Role(role)
    except ValueError:
        valid = ", ".join(r.value for r in Role)
        raise InputError(f"unknown role {role!r}; valid roles are: {valid}") from None


def _username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > MAX_USERNAME_LENGTH or any(c.isspace() for c in name):
        raise InputError(
            f"invalid username {username!r}: use 1 to {MAX_USERNAME_LENGTH} characters "
            "without spaces"
        )
    return name


def find_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username.strip()))


def get_user(session: Session, username: str) -> User:
    """The user called ``username``, or an :class:`InputError` that says how to create one."""
    user = find_user(session, username)
    if user is None:
        raise InputError(f"no user named {username!r}; create one with `radseg users create`")
    return user


def create_user(session: Session, username: str, password: str, role: Role | str) -> User:
    """Add a user (flushed, so it has an ``id``); the caller commits.

    Raises :class:`UsernameTakenError` when the name exists, :class:`PasswordPolicyError` when
    the password is shorter than :data:`MIN_PASSWORD_LENGTH`.
    """
    name = _username(username)
    checked_role = parse_role(role)
    taken = UsernameTakenError(
        f"the username {name!r} is already taken; pick another one or change that user's "
        "password with `radseg users set-password`"
    )
    if find_user(session, name) is not None:
        raise taken
    user = User(username=name, password_hash=hash_password(password), role=checked_role)
    try:
        # a savepoint, so that losing a race for the name leaves the caller's transaction usable
        with session.begin_nested():
            session.add(user)
    except IntegrityError as exc:
        raise taken from exc
    return user


def set_password(session: Session, user: User, password: str) -> User:
    """Replace ``user``'s password; existing browser sessions of that user stop working."""
    user.password_hash = hash_password(password)
    end_sessions(user)
    session.flush()
    return user


def end_sessions(user: User) -> None:
    """End every browser session of ``user``: a session is valid only while the epoch it was
    made in is the user's current one, and epochs never come back."""
    user.session_epoch = (user.session_epoch or 0) + 1


def set_active(session: Session, user: User, active: bool) -> int:
    """Activate or deactivate ``user``. Deactivation ends their browser sessions and revokes
    their API tokens for good: reactivating the account brings neither back. Returns how many
    tokens were revoked."""
    revoked = 0
    if user.active and not active:
        end_sessions(user)
        now = utcnow()
        for token in user.tokens:
            if token.revoked_at is None:
                token.revoked_at = now
                revoked += 1
    user.active = active
    session.flush()
    return revoked


def set_role(session: Session, user: User, role: Role | str) -> User:
    user.role = parse_role(role)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user whose name and password match, else ``None`` (never says which failed)."""
    user = find_user(session, username) if username.strip() else None
    if user is None or not user.active or len(password) > MAX_PASSWORD_LENGTH:
        # spend the same time as a real check so response times do not reveal valid names
        check_password_hash(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])
        return None
    return user if check_password_hash(user.password_hash, password) else None


def session_token(user: User) -> str:
    """What a browser session of ``user`` carries: their session epoch. The session is valid
    while it matches; :func:`end_sessions` moves the epoch on."""
    return str(user.session_epoch or 0)


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("radseg-no-such-user", method=HASH_METHOD)


# --- API tokens ----------------------------------------------------------------------------

TOKEN_PREFIX = "rsg_"


def token_digest(token: str) -> str:
    """What is stored for a token. A token is 256 random bits, so a plain SHA-256 is enough:
    nobody can guess one from its digest, and lookup stays a single indexed query."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new API token for ``user``: the row and the token itself, which is shown once and
    never stored (only its digest is)."""
    label = name.strip()
    if not label or len(label) > 80:
        raise InputError("give the token a name of 1 to 80 characters, e.g. 'laptop CLI'")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=label, token_hash=token_digest(token), prefix=token[:10])
    session.add(row)
    session.flush()
    return row, token


def user_for_token(session: Session, token: str) -> User | None:
    """The active owner of an unrevoked ``token``, else ``None``; records when it was used."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(
        select(ApiToken)
        .where(ApiToken.token_hash == token_digest(token))
        .options(joinedload(ApiToken.user))
    )
    if row is None or row.revoked_at is not None or not row.user.active:
        return None
    now = utcnow()
    # one write a minute at most: a script polling the API should not rewrite the row each time
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        row.last_used_at = now
    return row.user


def revoke_token(session: Session, token: ApiToken) -> ApiToken:
    """Revoke ``token`` for good (revoking it again changes nothing). Who may revoke which
    token is the use case's rule (:func:`radseg.workflows.accounts.revoke_token`)."""
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
    return token


def tokens_of(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


# --- failed logins -------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottlePolicy:
    """How failed logins slow down further attempts of one (account, address) pair.

    The first ``free_failures`` failures of a pair cost nothing. After that, each attempt from
    that pair waits ``base_delay`` after its latest failure, doubling with every further failure
    up to ``max_delay``. Failures older than ``forget_after`` no longer count. When one account
    has ``alarm_failures`` failures from all addresses together (guessing spread over many
    addresses), a pair that has failed once already waits. An address that has not failed for
    an account is never slowed down, so nobody can lock another person out.
    """

    free_failures: int = 5
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(hours=24)
    alarm_failures: int = 100

    def delay(self, failures: int, *, alarm: bool = False) -> timedelta | None:
        """The wait after the latest of ``failures`` failures of one pair (``None``: no wait)."""
        free = 1 if alarm else self.free_failures
        if failures < free:
            return None
        doublings = min(failures - free, 32)  # 2**32 base delays are far above any cap
        return min(self.base_delay * (1 << doublings), self.max_delay)


THROTTLE = ThrottlePolicy()


def account_key(username: str, secret: str) -> str:
    """What the failed-login records store instead of the typed name: a keyed digest.

    People type passwords into the name field; a keyed digest still tells failures of the same
    name apart but keeps what was typed out of the database (and its backups).
    """
    name = username.strip()[:MAX_USERNAME_LENGTH]
    return hmac.new(secret.encode(), b"radseg-login\0" + name.encode(), "sha256").hexdigest()


def login_wait(
    session: Session,
    key: str,
    remote: str,
    *,
    now: datetime,
    policy: ThrottlePolicy = THROTTLE,
) -> timedelta | None:
    """How long the account ``key`` stays closed to logins from ``remote``, or ``None``.

    The failures are rows in the database, so every web worker and every machine counts the
    same ones.
    """
    since = now - policy.forget_after
    pair = (
        LoginFailure.account_key == key,
        LoginFailure.remote == remote[:64],
        LoginFailure.created_at > since,
    )
    failures, latest = session.execute(
        select(func.count(), func.max(LoginFailure.created_at)).where(*pair)
    ).one()
    if not failures or latest is None:
        return None
    of_account = session.scalar(
        select(func.count()).where(LoginFailure.account_key == key, LoginFailure.created_at > since)
    )
    delay = policy.delay(failures, alarm=(of_account or 0) >= policy.alarm_failures)
    if delay is None:
        return None
    remaining: timedelta = latest + delay - now
    return remaining if remaining > timedelta(0) else None


def record_login_failure(
    session: Session, key: str, remote: str, *, now: datetime, policy: ThrottlePolicy = THROTTLE
) -> None:
    """Count a failed login of ``key`` from ``remote``, and drop failures nobody counts any more."""
    stale = LoginFailure.created_at <= now - policy.forget_after
    session.execute(delete(LoginFailure).where(stale))
    session.add(LoginFailure(account_key=key, remote=remote[:64], created_at=now))


def clear_login_failures(session: Session, key: str, remote: str | None = None) -> int:
    """Forget the failures of ``key`` from ``remote`` (a successful login), or from everywhere
    (an admin's unlock, a password reset). Returns how many were forgotten."""
    query = delete(LoginFailure).where(LoginFailure.account_key == key)
    if remote is not None:
        query = query.where(LoginFailure.remote == remote[:64])
    result: CursorResult[Any] = session.execute(query)  # type: ignore[assignment]
    return result.rowcount or 0


@dataclass(frozen=True)
class FailureSummary:
    """An account's counted failed logins, for the admins' users page."""

    failures: int
    addresses: int
    latest: datetime | None


def login_failures(
    session: Session, keys: Iterable[str], *, now: datetime, policy: ThrottlePolicy = THROTTLE
) -> dict[str, FailureSummary]:
    """The counted failures of each account in ``keys`` that has any."""
    rows = session.execute(
        select(
            LoginFailure.account_key,
            func.count(),
            func.count(distinct(LoginFailure.remote)),
            func.max(LoginFailure.created_at),
        )
        .where(
            LoginFailure.account_key.in_(list(keys)),
            LoginFailure.created_at > now - policy.forget_after,
        )
        .group_by(LoginFailure.account_key)
    )
    return {key: FailureSummary(n, addresses, latest) for key, n, addresses, latest in rows}
