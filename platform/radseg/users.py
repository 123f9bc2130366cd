"""Accounts: create users, check passwords, change them; API tokens; failed-login limits.

Every function takes a ``session`` and never commits: the request or command that calls it frames
the transaction (STYLE §7). Passwords are hashed with werkzeug's scrypt; the hash string carries
its parameters, so they can be raised later without invalidating stored hashes.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from radseg.db.base import utcnow
from radseg.db.models import ApiToken, LoginFailure, Role, User
from radseg.errors import InputError

MIN_PASSWORD_LENGTH = 8
#: scrypt is deliberately slow; a bound keeps a huge "password" from tying up a worker
MAX_PASSWORD_LENGTH = 1024
MAX_USERNAME_LENGTH = 80
HASH_METHOD = "scrypt"


class UsernameTakenError(InputError):
    """``create_user`` was given a name that already has an account."""


class PasswordPolicyError(InputError):
    """A password is too short or too long."""


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


def _role(role: Role | str) -> Role:
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
    checked_role = _role(role)
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
    session.flush()
    return user


def set_role(session: Session, user: User, role: Role | str) -> User:
    user.role = _role(role)
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
    """A short digest of the password hash; a browser session is valid while it matches."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


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


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s tokens (admins may revoke anyone's)."""
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != user.id and user.role != Role.ADMIN):
        raise InputError(f"you have no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def tokens_of(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )


# --- failed logins -------------------------------------------------------------------------

#: failures of one account, or from one address, within the window that lock it out
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
LOCKOUT_WINDOW = timedelta(minutes=15)


def lockout_remaining(
    session: Session, username: str, remote: str, *, now: datetime | None = None
) -> timedelta | None:
    """How long logins for ``username`` (or from ``remote``) stay refused, or ``None``.

    The failures are rows in the database, so every web worker and every machine counts the
    same ones; a lock ends ``LOCKOUT_WINDOW`` after the failure that filled the budget.
    """
    now = now or utcnow()
    since = now - LOCKOUT_WINDOW
    checks = (
        (LoginFailure.username == username.strip()[:80], MAX_FAILURES_PER_USER),
        (LoginFailure.remote == remote[:64], MAX_FAILURES_PER_ADDRESS),
    )
    longest: timedelta | None = None
    for condition, limit in checks:
        times = session.scalars(
            select(LoginFailure.created_at)
            .where(condition, LoginFailure.created_at > since)
            .order_by(LoginFailure.created_at.desc())
            .limit(limit)
        ).all()
        if len(times) >= limit:
            remaining = times[-1] + LOCKOUT_WINDOW - now
            if longest is None or remaining > longest:
                longest = remaining
    return longest


def record_login_failure(session: Session, username: str, remote: str) -> None:
    session.add(LoginFailure(username=username.strip()[:80], remote=remote[:64]))


def clear_login_failures(session: Session, username: str) -> None:
    """A successful login forgives the account's failures (not the address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.username == username.strip()[:80]))
