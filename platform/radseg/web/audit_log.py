"""The audit log for admins: newest first, filtered by actor, action, target and time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, render_template, request

from radseg import audit
from radseg.roles import ADMINS
from radseg.web.auth import roles_required
from radseg.web.context import db
from radseg.web.schemas import AuditQuery
from radseg.web.validation import query_args

bp = Blueprint("audit_log", __name__)

PAGE_SIZE = 100


def _date(name: str) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        abort(400, f"{name} must be a date like 2026-01-31 or 2026-01-31T12:00, got {raw!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@bp.get("/admin/audit")
@roles_required(*ADMINS)
def audit_page() -> Any:
    args = query_args(AuditQuery)
    filters = {k: (getattr(args, k) or "").strip() for k in ("actor", "action", "target")}
    since, until = _date("since"), _date("until")
    page = args.page
    rows = audit.search(
        db(),
        **filters,
        since=since,
        until=until,
        limit=PAGE_SIZE + 1,  # one more tells whether there is a next page
        offset=(page - 1) * PAGE_SIZE,
    )
    return render_template(
        "audit.html",
        events=rows[:PAGE_SIZE],
        filters=filters,
        since=request.args.get("since", ""),
        until=request.args.get("until", ""),
        page=page,
        has_next=len(rows) > PAGE_SIZE,
        args={k: v for k, v in request.args.items() if k != "page"},
    )
