"""One page of a long list, read the same way by every list (studies, review queue, jobs, model
versions, audit log) and every front end (the pages, the JSON API).

Paging is by offset over an indexed order, so a page is a range scan of one index; the count of
matching rows is bounded: it stops at :data:`COUNT_LIMIT`, and past it the page says "more than
10,000" (``total_capped``). Counting a hundred thousand rows to print one number would cost more
than the page; stopping at a bound keeps every count as cheap as reading 10,000 index entries,
whatever the table's size. Next-page links do not need the count: one row more than the page is
read to know whether there is a next page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")
U = TypeVar("U")

#: matching rows are counted up to this many; beyond, the count says "more than COUNT_LIMIT"
COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class Window:
    """Which rows of an ordered list: ``limit`` rows after skipping ``offset``."""

    limit: int
    offset: int = 0


@dataclass(frozen=True)
class Listed(Generic[T]):
    """One page of a list: its rows, whether more follow, and how many match in all."""

    rows: list[T]
    window: Window
    has_next: bool
    #: rows matching the filters, counted up to :data:`COUNT_LIMIT`
    total: int
    #: more than :data:`COUNT_LIMIT` rows match (``total`` is then :data:`COUNT_LIMIT`)
    total_capped: bool

    def map(self, convert: Callable[[T], U]) -> Listed[U]:
        """The same page with each row converted."""
        return Listed(
            [convert(r) for r in self.rows],
            self.window,
            self.has_next,
            self.total,
            self.total_capped,
        )

    def meta(self) -> dict[str, Any]:
        """What the JSON API answers beside the rows."""
        return {
            "total": self.total,
            "total_capped": self.total_capped,
            "limit": self.window.limit,
            "offset": self.window.offset,
            "has_next": self.has_next,
        }


def count_upto(session: Session, matching: Select[Any], limit: int = COUNT_LIMIT) -> int:
    """How many rows ``matching`` selects, counting at most ``limit + 1``."""
    bounded = matching.order_by(None).limit(limit + 1).subquery()
    return int(session.scalar(select(func.count()).select_from(bounded)) or 0)


def fetch(
    session: Session,
    rows: Select[Any],
    matching: Select[Any],
    window: Window,
    *,
    scalars: bool = True,
) -> Listed[Any]:
    """The ``window`` of ``rows`` (an ordered select) and the bounded count of ``matching``
    (the same filters, selecting a narrow column such as the id).

    :param scalars: rows are the first column of each result (one entity); ``False`` keeps tuples.
    """
    query = rows.limit(window.limit + 1).offset(window.offset)
    found: list[Any] = (
        list(session.scalars(query).unique()) if scalars else list(session.execute(query))
    )
    has_next = len(found) > window.limit
    found = found[: window.limit]
    # when the whole list is on this page, its length is the count
    whole = window.offset == 0 and not has_next
    total = len(found) if whole else count_upto(session, matching)
    capped = total > COUNT_LIMIT
    return Listed(found, window, has_next, min(total, COUNT_LIMIT), capped)
