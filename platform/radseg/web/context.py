"""Per-app and per-request state of the web app, and the hooks that manage it.

The platform lives in ``app.extensions["radseg"]``; each request gets at most one database
session for reading (opened on first use, closed at teardown). Views never write through it:
every write is a use case of :mod:`radseg.workflows`, which opens and commits its own unit of
work (docs/architecture.md).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, cast

from flask import Flask, Request, abort, current_app, g, jsonify, render_template, request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.wrappers import Response

from radseg.core import Platform
from radseg.web import errors
from radseg.web.render import ImageCache, VolumeCache
from radseg.web.validation import MAX_ROW_ID, describe

EXTENSION = "radseg"
VOLUMES = "radseg.volumes"
IMAGES = "radseg.images"
#: paths that answer JSON, also for errors and missing logins
JSON_PREFIXES = ("/api/", "/-/")

#: the viewer's images are same-origin; no inline script or style anywhere
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)


def current_platform() -> Platform:
    return cast(Platform, current_app.extensions[EXTENSION])


def volumes() -> VolumeCache:
    return cast(VolumeCache, current_app.extensions[VOLUMES])


def images() -> ImageCache:
    return cast(ImageCache, current_app.extensions[IMAGES])


def db() -> Session:
    """This request's session."""
    if "radseg_db" not in g:
        g.radseg_db = current_platform().sessions()
    return cast(Session, g.radseg_db)


def wants_json() -> bool:
    """JSON for the API, and for any request that sent JSON or asks for it (page scripts)."""
    return (
        request.path.startswith(JSON_PREFIXES)
        or request.is_json
        or request.accept_mimetypes.best == "application/json"
    )


def _close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("radseg_db", None)
    if session is not None:
        session.close()


#: blueprints whose views never use a plugin: the viewer's images, the hottest path
NO_PLUGINS = frozenset({"slices"})


def _refresh_plugins() -> None:
    # one small query; makes an admin's enable/disable visible in every web process
    if request.endpoint != "static" and request.blueprint not in NO_PLUGINS:
        current_platform().refresh_plugins()


def _bounded_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # an id in a URL beyond what the database stores is simply not found
    for name, value in (values or {}).items():
        if isinstance(value, int) and value > MAX_ROW_ID:
            abort(404, f"there is no {name.removesuffix('_id').replace('_', ' ')} {value}")


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _http_error(error: HTTPException) -> Any:
    code = error.code or 500
    if wants_json():
        return jsonify(error=error.name, detail=error.description), code
    return render_template("error.html", error=error), code


def _refuse_nul(where: str, values: Any) -> None:
    for name, value in values.items(multi=True):
        if "\x00" in name or (isinstance(value, str) and "\x00" in value):
            raise BadRequest(f"the {where} {name!r} contains a NUL character; remove it")


class NulFreeRequest(Request):
    """A request whose query parameters and form fields never carry a NUL character.

    PostgreSQL cannot store one (every such request used to end in a 500 there, and SQLite kept
    names no one can type); checked once here, when a view or the CSRF check first reads them,
    so no body is read earlier than before."""

    @property
    def args(self) -> Any:
        values = super().args
        if not self.environ.get("radseg.args_checked"):
            self.environ["radseg.args_checked"] = True
            _refuse_nul("query parameter", values)
        return values

    def _load_form_data(self) -> None:
        super()._load_form_data()
        _refuse_nul("form field", self.form)


def _invalid(error: ValidationError) -> Any:
    # views validate through radseg.web.validation; a model validated anywhere else is still
    # the client's mistake, never a 500
    return _http_error(BadRequest(describe(error)))


#: what the log keeps of an unhandled exception: its last frames, a line of its message, and
#: the exceptions it was raised from (a RecursionError's or a driver's chain can run to megabytes)
LOG_FRAMES = 30
LOG_MESSAGE_CHARS = 1000
LOG_CHAIN = 3


def bounded_traceback(error: BaseException) -> str:
    """The traceback of ``error`` and its causes, bounded by the ``LOG_*`` limits above."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None and len(parts) < LOG_CHAIN:
        frames = traceback.extract_tb(current.__traceback__)
        skipped = len(frames) - LOG_FRAMES
        lines = [f"  ... {skipped} earlier frames\n"] if skipped > 0 else []
        lines += traceback.format_list(frames[-LOG_FRAMES:])
        message = " ".join(str(current).split())
        if len(message) > LOG_MESSAGE_CHARS:
            message = f"{message[:LOG_MESSAGE_CHARS]}… ({len(message)} characters)"
        lines.append(f"{type(current).__module__}.{type(current).__qualname__}: {message}\n")
        parts.append("".join(lines))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    more = "\n(and the exceptions it was raised from)" if current is not None else ""
    return "\nwhile handling it, from:\n".join(parts) + more


class BoundedTracebacks(logging.Filter):
    """Replace a record's full traceback by :func:`bounded_traceback` (the app's logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}\n{bounded_traceback(record.exc_info[1])}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def init_app(app: Flask, platform: Platform) -> None:
    app.extensions[EXTENSION] = platform
    app.extensions[VOLUMES] = VolumeCache(app.config["RADSEG_VOLUME_CACHE_BYTES"])
    app.extensions[IMAGES] = ImageCache(app.config["RADSEG_IMAGE_CACHE_BYTES"])
    app.url_value_preprocessor(_bounded_ids)
    app.before_request(_refresh_plugins)
    app.after_request(_security_headers)
    app.teardown_appcontext(_close_db)
    app.request_class = NulFreeRequest
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ValidationError, _invalid)
    errors.init_app(app, _http_error)
    app.logger.addFilter(BoundedTracebacks())
