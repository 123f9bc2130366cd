"""The audit trail: who did what to which object, and when (DESIGN §8).

Append-only by construction: this module can add and read events, nothing else. Every view of
patient data, every login, review, export and plugin change records one. :func:`record` takes a
``session`` and never commits, so the event is stored in the same transaction as the action.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from radseg.db.models import AuditEvent, User

ANONYMOUS = "anonymous"


def _clip(value: str, column: Any) -> str:
    return value[: column.type.length]


def record(
    session: Session, actor: User | str | None, action: str, target: str = "", **detail: Any
) -> AuditEvent:
    """Append an :class:`AuditEvent`.

    :param actor: the user (or a name: a CLI user, a worker id, a failed login's username).
    :param action: a dotted verb, e.g. ``"study.view"``, ``"login"``, ``"plugin.disable"``.
    :param target: what was acted on, e.g. ``"study:12"``.
    :param detail: JSON-able context; anything else is stored as its ``str``.
    """
    name = actor.username if isinstance(actor, User) else (actor or ANONYMOUS)
    columns = AuditEvent.__table__.c
    event = AuditEvent(
        actor=_clip(name, columns.actor),
        action=_clip(action, columns.action),
        target=_clip(str(target), columns.target),
        detail=json.loads(json.dumps(detail, default=str)),
    )
    session.add(event)
    return event


def events(
    session: Session,
    *,
    action: str | None = None,
    target: str | None = None,
    actor: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """The newest events first, optionally filtered."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if target is not None:
        query = query.where(AuditEvent.target == target)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    return list(session.scalars(query))


def search(
    session: Session,
    *,
    actor: str = "",
    action: str = "",
    target: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    """The admins' audit log: newest first, ``limit`` events from ``offset``.

    An empty filter matches everything; ``action`` also matches its dotted sub-actions
    (``"login"`` finds ``"login.failed"``); ``since`` is inclusive, ``until`` exclusive.
    """
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(
            (AuditEvent.action == action)
            | AuditEvent.action.startswith(action + ".", autoescape=True)
        )
    if target:
        query = query.where(AuditEvent.target == target)
    if since:
        query = query.where(AuditEvent.created_at >= since)
    if until:
        query = query.where(AuditEvent.created_at < until)
    return list(session.scalars(query.limit(limit).offset(offset)))
