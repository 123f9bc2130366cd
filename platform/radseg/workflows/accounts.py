"""Use cases of one's own account: change the password, create and revoke API tokens.

Everyone with an account may do these to their own account; an admin may also revoke anyone's
token. A new token is returned once, to be shown once: only its digest is stored.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import ApiToken, User
from radseg.errors import NotFound
from radseg.roles import ADMINS, Actor


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
