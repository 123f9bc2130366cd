"""Errors a user can act on. Each message says what is wrong and what to do next."""

from __future__ import annotations

from collections.abc import Sequence


class RadsegError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class PluginError(RadsegError):
    """A plugin could not be registered or used."""


class PluginConfigError(PluginError):
    """A plugin's settings are invalid; the message names the field."""


class NotRegisteredError(RadsegError, KeyError):
    """A name asked for is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(RadsegError):
    """Input files or arguments are unusable."""


def check_one_of(what: str, value: str, names: Sequence[str]) -> None:
    """:raises InputError: ``value`` (a ``what``: a sort, a filter...) is not one of ``names``;
    the message lists them."""
    if value not in names:
        raise InputError(f"unknown {what} {value!r}; use one of: {', '.join(names)}")


class NotFound(RadsegError, LookupError):
    """What was asked for does not exist, or the actor may not know that it does.

    The web answers 404 and the CLI exits non-zero; the message names what is missing.
    """


class PermissionDenied(RadsegError):
    """The acting user's role or ownership does not allow this; the message says who may."""


class Conflict(RadsegError):
    """The request is valid but the thing's current state does not allow it (e.g. retrying a
    running job); the message says what state would."""


class IngestFailed(InputError):
    """Nothing could be ingested, for the reasons listed.

    The message names every problem in its stored form (no PHI: a failed job keeps it as its
    message); ``headline`` is its first part, and ``details`` are the same problems with the
    files named as the user named them, for the console of whoever ran the ingest.
    """

    def __init__(self, headline: str, stored: str, details: list[str]) -> None:
        super().__init__(f"{headline}: {stored}" if stored else headline)
        self.headline = headline
        self.details = details


class GeometryError(InputError):
    """Volumes do not share or overlap the same patient space."""


class JobError(RadsegError):
    """A job could not be submitted, claimed or run."""


class JobNotFound(JobError, NotFound):
    """There is no job with that id."""


class JobStateConflict(JobError, Conflict):
    """The job's state does not allow the operation (only a finished job can be retried)."""
