"""The one way a use case (or a view) fetches a row by id: found, or :class:`NotFound`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from radseg.errors import NotFound

T = TypeVar("T")


def get_row(
    session: Session,
    model: type[T],
    ident: int,
    what: str,
    *,
    options: Sequence[ORMOption] = (),
) -> T:
    """The ``model`` row with primary key ``ident``; :class:`NotFound` names ``what`` otherwise.

    The web maps :class:`NotFound` to 404 and the CLI to an error line (``there is no series 7``).
    ``options`` are loader options (e.g. ``joinedload``), so related rows come in the same query.
    """
    found = session.get(model, ident, options=options)
    if found is None:
        raise NotFound(f"there is no {what} {ident}")
    return found
