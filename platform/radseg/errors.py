"""Errors a user can act on. Each message says what is wrong and what to do next."""

from __future__ import annotations


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


class GeometryError(InputError):
    """Volumes do not share or overlap the same patient space."""


class JobError(RadsegError):
    """A job could not be submitted, claimed or run."""
