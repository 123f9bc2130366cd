"""The logged-in user as the use cases see them: an :class:`~radseg.roles.Actor`.

Views pass :func:`current_actor` to every use case (:mod:`radseg.workflows`) and to the role
rules of :mod:`radseg.roles`, so the web asks the same questions as the CLI and the API.
"""

from __future__ import annotations

from radseg.roles import Actor
from radseg.web.auth import web_user


def current_actor() -> Actor:
    """The logged-in user (only inside a view wrapped by ``roles_required``)."""
    user = web_user()
    return Actor(user.username, user.role)
