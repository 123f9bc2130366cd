"""``/api/audit``: the audit log for admins, filtered, sorted and paged as its page does."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from radseg import audit
from radseg.roles import ADMINS
from radseg.web.api import bp
from radseg.web.auth import roles_required
from radseg.web.context import db
from radseg.web.schemas import AuditApiQuery
from radseg.web.shapes import audit_event_to_dict
from radseg.web.validation import query_args


@bp.get("/audit")
@roles_required(*ADMINS)
def audit_events() -> Any:
    args = query_args(AuditApiQuery)
    listed = audit.search_page(db(), args.filters(), args.window())
    return jsonify(events=[audit_event_to_dict(e) for e in listed.rows], page=listed.meta())
