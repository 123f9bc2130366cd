"""The audit trail: who did what to which object, and when (DESIGN §8).

Append-only by construction: this module can add and read events, nothing else. Every view of
patient data, every login, review, export and plugin change records one. :func:`record` takes a
``session`` and never commits, so the event is stored in the same transaction as the action.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from radseg.db.models import AuditEvent, User
from radseg.db.paging import Listed, Window, fetch
from radseg.errors import InputError

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


@dataclass(frozen=True)
class AuditFilters:
    """The admins' filters: an empty one matches everything; ``action`` also matches its dotted
    sub-actions (``"login"`` finds ``"login.failed"``); ``since`` is inclusive, ``until``
    exclusive; ``sort`` is ``newest`` or ``oldest`` first."""

    actor: str = ""
    action: str = ""
    target: str = ""
    since: datetime | None = None
    until: datetime | None = None
    sort: Literal["newest", "oldest"] = "newest"


def parse_time(name: str, raw: str | None) -> datetime | None:
    """A filter's date or time as typed (``2026-01-31``, ``2026-01-31T12:00``; UTC unless it
    says otherwise), ``None`` when empty; :class:`InputError` naming ``name`` otherwise."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(
            f"{name} must be a date like 2026-01-31 or 2026-01-31T12:00, got {raw!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _matching(query: Select[Any], filters: AuditFilters) -> Select[Any]:
    if filters.actor:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.action:
        query = query.where(
            (AuditEvent.action == filters.action)
            | AuditEvent.action.startswith(filters.action + ".", autoescape=True)
        )
    if filters.target:
        query = query.where(AuditEvent.target == filters.target)
    if filters.since:
        query = query.where(AuditEvent.created_at >= filters.since)
    if filters.until:
        query = query.where(AuditEvent.created_at < filters.until)
    return query


def search_page(
    session: Session, filters: AuditFilters | None = None, window: Window | None = None
) -> Listed[AuditEvent]:
    """One page of the audit log (newest first by default) and the bounded count of matches."""
    filters = filters or AuditFilters()
    order = AuditEvent.id.desc() if filters.sort == "newest" else AuditEvent.id.asc()
    rows = _matching(select(AuditEvent), filters).order_by(order)
    return fetch(session, rows, _matching(select(AuditEvent.id), filters), window or Window(100))


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
    """The rows of :func:`search_page` alone: ``limit`` events from ``offset``, newest first."""
    filters = AuditFilters(actor=actor, action=action, target=target, since=since, until=until)
    return search_page(session, filters, Window(limit, offset)).rows
