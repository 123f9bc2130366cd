"""The audit log for admins: newest first, filtered by actor, action, target and time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, render_template

from radseg import audit
from radseg.roles import ADMINS
from radseg.web.auth import roles_required
from radseg.web.context import db
from radseg.web.paging import Pager
from radseg.web.schemas import AuditQuery
from radseg.web.validation import query_args

bp = Blueprint("audit_log", __name__)


def _date(name: str, raw: str | None) -> datetime | None:
    raw = (raw or "").strip()
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
    chosen = audit.AuditFilters(
        **filters,
        since=_date("since", args.since),
        until=_date("until", args.until),
        sort=args.sort,
    )
    listed = audit.search_page(db(), chosen, args.window())
    return render_template(
        "audit.html",
        events=listed.rows,
        filters=filters,
        since=args.since or "",
        until=args.until or "",
        sort=args.sort,
        pager=Pager.of(listed, args),
    )
