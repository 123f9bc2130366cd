"""How much a request may send: body sizes, upload bytes in flight, lengths of text fields.

Every request that carries a body passes :func:`check_body` before anything reads it (the CSRF
check reads the form, and reading a multipart form spools its files to disk): the caller has
already been authenticated (:func:`radseg.web.auth.init_app` orders the hooks), so an anonymous
visitor cannot make the server store a byte. Then:

* an upload view (marked with :func:`accepts_upload`) takes up to ``upload_max_bytes``, every
  other view ``json_body_limit`` (JSON bodies and forms alike);
* a declared ``Content-Length`` over the limit is refused (413) before the body is read; a body
  without one (chunked) is counted while it is read and refused when it passes the limit;
* upload bytes in flight are budgeted per user and in total: a request reserves its declared
  length (a chunked one, the per-request maximum) until its response is sent, and is refused
  (413) while the budget is spent. The accounting lives in the web process: with N gunicorn
  workers the server as a whole accepts up to N times the total budget.

The lengths of text fields live here too, for whatever parses a body.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from radseg.web.context import wants_json

F = TypeVar("F", bound=Callable[..., Any])


UPLOADS = "radseg.uploads"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def accepts_upload(view: F) -> F:
    """Mark a view that takes files: it gets the upload limit and budget, not the small one."""
    view.accepts_upload = True  # type: ignore[attr-defined]
    return view


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 1 << 30 else f"{n / 2**30:.1f} GiB"


class TooLarge(RequestEntityTooLarge):
    """413 with a one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


@dataclass
class UploadBudget:
    """Upload bytes in flight in this process, per user and in total (thread-safe)."""

    per_user: int
    total: int

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[int, int] = {}
        self._total = 0

    def reserve(self, user_id: int, size: int) -> None:
        """Take ``size`` bytes of ``user_id``'s and the total budget, or raise :class:`TooLarge`."""
        with self._lock:
            mine = self._by_user.get(user_id, 0)
            if size > self.per_user:
                raise TooLarge(
                    f"an upload of {_mib(size)} is more than the {_mib(self.per_user)} one user "
                    "may send at once; use `radseg ingest` for it"
                )
            if mine + size > self.per_user:
                raise TooLarge(
                    f"you have {_mib(mine)} of uploads in progress; at most "
                    f"{_mib(self.per_user)} at once: wait for them to finish"
                )
            if self._total + size > self.total:
                raise TooLarge(
                    f"the server is receiving {_mib(self._total)} of uploads; at most "
                    f"{_mib(self.total)} at once: try again in a few minutes"
                )
            self._by_user[user_id] = mine + size
            self._total += size

    def release(self, user_id: int, size: int) -> None:
        with self._lock:
            left = self._by_user.get(user_id, 0) - size
            if left > 0:
                self._by_user[user_id] = left
            else:
                self._by_user.pop(user_id, None)
            self._total -= size

    def in_flight(self, user_id: int | None = None) -> int:
        with self._lock:
            return self._total if user_id is None else self._by_user.get(user_id, 0)


def upload_budget() -> UploadBudget:
    return cast(UploadBudget, current_app.extensions[UPLOADS])


def body_limit(view: Callable[..., Any] | None) -> int:
    """The most bytes a request to ``view`` may send."""
    if getattr(view, "accepts_upload", False):
        return int(current_app.config["MAX_CONTENT_LENGTH"])
    return int(current_app.config["RADSEG_JSON_BODY_LIMIT"])


def check_body(user_id: int | None) -> None:
    """Limit this request's body before anything reads it (``user_id``: who sends it).

    Refuses an over-long declared length here, unread; reads a small chunked body (at most the
    limit and one byte) to refuse it whole, or sets the request's ``max_content_length`` for the
    multipart parser to stop a chunked upload; reserves an upload's bytes in the budget until
    :func:`_release` runs at teardown.
    """
    if request.method not in BODY_METHODS or request.endpoint is None:
        return
    view = current_app.view_functions.get(request.endpoint)
    limit = body_limit(view)
    request.max_content_length = limit
    g.radseg_body_limit = limit
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(
            f"the request sends {_mib(length)}; this address takes at most {_mib(limit)}"
        )
    if not getattr(view, "accepts_upload", False):
        if length is None:
            # Werkzeug's whole-body read stops quietly at the limit (a truncated JSON or form
            # would follow); read one byte more, kept for the view, to tell "too long" apart
            request.max_content_length = limit + 1
            if len(request.get_data(cache=True)) > limit:
                raise TooLarge(f"the request sends more than {_mib(limit)}, the most it may send")
        return
    if user_id is not None:
        # the multipart parser raises 413 itself once a chunked body passes the limit
        size = limit if length is None else length
        upload_budget().reserve(user_id, size)
        g.radseg_upload = (user_id, size)


def _release(_exc: BaseException | None = None) -> None:
    reserved = g.pop("radseg_upload", None)
    if reserved is not None:
        upload_budget().release(*reserved)


def _too_large(error: RequestEntityTooLarge) -> Any:
    # Werkzeug's own 413 (a chunked upload past the limit, a form field or part count past
    # Flask's) does not say which limit
    if not isinstance(error, TooLarge):
        limit = g.get("radseg_body_limit") or current_app.config["MAX_CONTENT_LENGTH"]
        field = current_app.config.get("MAX_FORM_MEMORY_SIZE")
        parts = current_app.config.get("MAX_FORM_PARTS")
        error = TooLarge(
            f"the request is too large: at most {_mib(limit)} in all"
            + (f", {_mib(field)} in one form field" if field else "")
            + (f" and {parts} form parts" if parts else "")
        )
    if wants_json():
        return jsonify(error=error.name, detail=error.description), 413
    return render_template("error.html", error=error), 413


def init_app(app: Flask) -> None:
    """The budget and the hooks that release it; :func:`check_body` is called by auth's hook."""
    app.extensions[UPLOADS] = UploadBudget(
        app.config["RADSEG_UPLOAD_INFLIGHT_PER_USER"], app.config["RADSEG_UPLOAD_INFLIGHT_TOTAL"]
    )
    app.teardown_request(_release)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
