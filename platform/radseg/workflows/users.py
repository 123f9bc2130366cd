"""Use cases of user management: admins create accounts, change roles, deactivate them, reset
passwords and clear an account's failed logins; ``radseg init`` creates the first admin.

The web's users page and the ``radseg users`` commands call these, so both check the same
rules and leave the same audit events. The account rows and their rules (names, password policy,
sessions, tokens, the login throttle) are :mod:`radseg.users`, below this layer.
"""

from __future__ import annotations

from typing import Any

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import Role, User
from radseg.errors import PermissionDenied
from radseg.roles import ADMINS, CLI_ACTOR, Actor, require_role
from radseg.workflows.lookup import get_row


def login_key(platform: Platform, username: str) -> str:
    """The failed-login records' key for ``username`` (:func:`radseg.users.account_key`)."""
    return users.account_key(username, platform.settings.secret("secret_key"))


def create_user(
    platform: Platform, actor: Actor, *, username: str, password: str, role: Role | str
) -> User:
    """Create an account with ``role``; audited as ``user.create``.

    Raises :class:`~radseg.users.UsernameTakenError` or
    :class:`~radseg.users.PasswordPolicyError` (both :class:`~radseg.errors.InputError`).
    """
    require_role(actor, ADMINS, "create users")
    with platform.sessions.begin() as session:
        user = users.create_user(session, username, password, role)
        audit.record(
            session, actor.username, "user.create", f"user:{user.id}", role=user.role.value
        )
    return user


def ensure_first_admin(platform: Platform, *, username: str, password: str) -> bool:
    """Create the admin ``username`` unless an account of that name exists (``radseg init``).

    Returns whether it was created; an existing account keeps its password and role. Only the
    server's command line calls this, so the audit event names :data:`~radseg.roles.CLI_ACTOR`.
    """
    with platform.sessions.begin() as session:
        if users.find_user(session, username) is not None:
            return False
        user = users.create_user(session, username, password, Role.ADMIN)
        audit.record(
            session, CLI_ACTOR.username, "user.create", f"user:{user.id}", role=user.role.value
        )
    return True


def _refuse_self_lockout(user: User, actor: Actor, role: Role | None, active: bool | None) -> None:
    # an admin who demotes or deactivates themselves may leave nobody to undo it
    if user.username == actor.username and ((role not in (None, Role.ADMIN)) or active is False):
        raise PermissionDenied("you cannot demote or deactivate yourself; ask another admin")


def update_user(
    platform: Platform,
    actor: Actor,
    user_id: int,
    *,
    role: Role | str | None = None,
    active: bool | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Change a user's role, activate or deactivate them, reset their password; audited.

    ``None`` (and an empty password) leaves that part alone. Deactivating ends the user's
    sessions and revokes their API tokens for good; a new password ends their sessions and
    clears their failed logins. Returns the changes made, as the ``user.update`` audit event
    records them (empty: nothing changed, nothing audited).
    """
    require_role(actor, ADMINS, "manage users")
    new_role = users.parse_role(role) if role is not None else None
    if password:
        users.check_password_policy(password)  # before anything is written
    with platform.sessions.begin() as session:
        user = get_row(session, User, user_id, "user")
        _refuse_self_lockout(user, actor, new_role, active)
        changes: dict[str, Any] = {}
        if new_role is not None and new_role != user.role:
            changes["role"] = new_role.value
            users.set_role(session, user, new_role)
        if active is not None and active != user.active:
            changes["active"] = active
            revoked = users.set_active(session, user, active)
            if revoked:
                changes["tokens_revoked"] = revoked
        if password:
            users.set_password(session, user, password)
            changes["password"] = "reset"
            users.clear_login_failures(session, login_key(platform, user.username))
        if changes:
            audit.record(session, actor.username, "user.update", f"user:{user.id}", **changes)
    return changes


def clear_login_failures(platform: Platform, actor: Actor, *, username: str) -> int:
    """Forget ``username``'s failed logins from every address, so the login throttle lets them
    in at once; audited. Returns how many failures were forgotten."""
    require_role(actor, ADMINS, "clear failed logins")
    with platform.sessions.begin() as session:
        user = users.get_user(session, username)
        cleared = users.clear_login_failures(session, login_key(platform, user.username))
        audit.record(
            session,
            actor.username,
            "user.login_failures.clear",
            f"user:{user.id}",
            cleared=cleared,
        )
    return cleared
