"""The audit log for admins: newest first, filtered by actor, action, target and time."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from radseg import audit
from radseg.errors import InputError
from radseg.roles import ADMINS
from radseg.web.auth import roles_required
from radseg.web.context import db
from radseg.web.paging import Pager
from radseg.web.schemas import AuditQuery
from radseg.web.validation import bad_request, query_args

bp = Blueprint("audit_log", __name__)


@bp.get("/admin/audit")
@roles_required(*ADMINS)
def audit_page() -> Any:
    args = query_args(AuditQuery)
    try:
        chosen = args.filters()
    except InputError as exc:
        bad_request(exc)
    listed = audit.search_page(db(), chosen, args.window())
    return render_template(
        "audit.html",
        events=listed.rows,
        filters={"actor": chosen.actor, "action": chosen.action, "target": chosen.target},
        since=args.since or "",
        until=args.until or "",
        sort=args.sort,
        pager=Pager.of(listed, args),
    )
