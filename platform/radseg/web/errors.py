"""How the web answers the use cases' typed errors: one table from error class to HTTP status.

Views let :class:`~radseg.errors.RadsegError` propagate; :func:`init_app` registers one handler
that answers with the status below and the error's message (JSON for the API and page scripts,
the error page otherwise). No view matches an error's text to pick a status.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException

from radseg.errors import (
    Conflict,
    InputError,
    NotFound,
    NotRegisteredError,
    PermissionDenied,
    PluginError,
    RadsegError,
)

#: most specific first: the first class an error is an instance of gives its status
STATUS: tuple[tuple[type[RadsegError], int], ...] = (
    (NotFound, 404),
    (NotRegisteredError, 404),
    (PermissionDenied, 403),
    (Conflict, 409),
    (InputError, 400),
    (PluginError, 400),
    (RadsegError, 400),
)


def status_of(error: RadsegError) -> int:
    return next(code for cls, code in STATUS if isinstance(error, cls))


class UseCaseError(HTTPException):
    """A :class:`RadsegError` as an HTTP error with the status :data:`STATUS` gives it."""

    def __init__(self, error: RadsegError) -> None:
        super().__init__(str(error))
        self.code = status_of(error)

    @property
    def name(self) -> str:  # the standard phrase of the status, e.g. "Not Found"
        from werkzeug.http import HTTP_STATUS_CODES

        return HTTP_STATUS_CODES.get(self.code or 400, "Error")


def init_app(app: Flask, http_error: Any) -> None:
    """Answer every :class:`RadsegError` a view raises through ``http_error`` (the app's
    handler for HTTP errors, so both look the same)."""
    app.register_error_handler(RadsegError, lambda error: http_error(UseCaseError(error)))
