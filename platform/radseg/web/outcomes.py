"""How a page's form answers a use case: the queued job's page, or the form again with why.

A form that starts work (upload, build, train, predict, evaluate) answers 303 to the new job's
page with a flash, or ``202 {"job_id", "url"}`` to a script that asks for JSON. A refusal the
user can fix (:class:`InputError`, :class:`NotFound`, :class:`Conflict`) goes back to the form
with the message flashed (JSON: the status of :mod:`radseg.web.errors` and the message); any
other error propagates to the one status table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec

from flask import flash, jsonify, redirect, request, url_for

from radseg.db.models import Job
from radseg.errors import Conflict, InputError, NotFound
from radseg.web.errors import UseCaseError, status_of

P = ParamSpec("P")

#: the refusals a form shows next to itself instead of an error page
FORM_REFUSALS = (InputError, NotFound, Conflict)


def wants_json_answer() -> bool:
    return request.accept_mimetypes.best == "application/json" or request.is_json


def queued(job: Job, what: str) -> Any:
    """The answer to a form that queued ``job``: its page (or its id and URL, as JSON)."""
    url = url_for("jobs.job_page", job_id=job.id)
    if wants_json_answer():
        return jsonify(job_id=job.id, url=url), 202
    flash(f"{what}: job {job.id} is queued.", "info")
    return redirect(url, 303)


def refused(error: InputError | NotFound | Conflict, back_to: str) -> Any:
    """Back to the form (the referrer, else ``back_to``) with the message flashed."""
    if request.accept_mimetypes.best == "application/json":
        code = status_of(error)
        return jsonify(error=UseCaseError(error).name, detail=str(error)), code
    flash(str(error), "error")
    return redirect(request.referrer or url_for(back_to), 303)


def form_refusals(back_to: str) -> Callable[[Callable[P, Any]], Callable[P, Any]]:
    """Wrap a form's view so that a refusal the user can fix is :func:`refused`."""

    def wrap(view: Callable[P, Any]) -> Callable[P, Any]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                return view(*args, **kwargs)
            except FORM_REFUSALS as error:
                return refused(error, back_to)

        return guarded

    return wrap
