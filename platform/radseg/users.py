"""Accounts: create users, check passwords, change them.

Every function takes a ``session`` and never commits: the request or command that calls it frames
the transaction (STYLE §7). Passwords are hashed with werkzeug's scrypt; the hash string carries
its parameters, so they can be raised later without invalidating stored hashes.
"""

from __future__ import annotations

import functools
import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from radseg.db.models import Role, User
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
