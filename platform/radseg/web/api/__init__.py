"""The JSON REST API, split by area like the pages: studies, datasets, jobs, models,
predictions (with their reviews and exports), readings, the audit log.

Scripts and the CLI authenticate with ``Authorization: Bearer <token>`` (create a token on the
Account page); the pages' own scripts use the session cookie and send ``X-CSRFToken`` on writes.
Every answer, errors included, is JSON. ``GET /api/openapi.json`` describes all of it
(:mod:`radseg.web.openapi`); a test checks that every route here is in that document.

One blueprint, ``api`` (so the endpoints are ``api.<view>`` whatever module holds them); each
module adds its routes to :data:`bp` when it is imported below. Views call the use cases of
:mod:`radseg.workflows` and let their typed errors reach the one status table
(:mod:`radseg.web.errors`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from radseg.web import openapi
from radseg.web.auth import public

bp = Blueprint("api", __name__, url_prefix="/api")

#: what every write through the API records in its audit event
VIA = "api"


@bp.get("/openapi.json")
@public
def openapi_document() -> Any:
    return jsonify(openapi.document(request.host_url.rstrip("/")))


# the areas register their routes on bp (imported after it exists)
from radseg.web.api import (  # noqa: E402
    audit,
    datasets,
    jobs,
    models,
    predictions,
    readings,
    studies,
)

__all__ = ["audit", "bp", "datasets", "jobs", "models", "predictions", "readings", "studies"]
