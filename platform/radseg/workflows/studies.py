"""Looking at patient data: every view of a study or a series is an audit event (DESIGN §8).

The pages, the JSON API and the viewer read the rows themselves; this use case records that
someone looked, in its own unit of work, so no adapter writes.
"""

from __future__ import annotations

from typing import Any

from radseg import audit
from radseg.core import Platform
from radseg.roles import VIEWERS, Actor
from radseg.workflows.jobs import require_role

#: the views of patient data the trail records
VIEW_ACTIONS = ("study.view", "series.view")


def record_view(platform: Platform, actor: Actor, action: str, target: str, **detail: Any) -> None:
    """Audit that ``actor`` looked at ``target`` (``study:<id>``, ``series:<id>``).

    :param action: one of :data:`VIEW_ACTIONS`.
    :param detail: joins the event (``via="api"``, the prediction shown with a series).
    """
    require_role(actor, VIEWERS, "look at studies")
    if action not in VIEW_ACTIONS:
        raise ValueError(f"{action!r} is not a view; use one of {', '.join(VIEW_ACTIONS)}")
    with platform.sessions.begin() as session:
        audit.record(session, actor.username, action, target, **detail)
