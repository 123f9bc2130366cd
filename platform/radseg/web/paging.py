"""The pager under every HTML list: "rows 51–100 of 1,234", page links, previous and next.

Links are built from the request's *validated* parameters (:meth:`PageNumber.link_args`), so a
page link carries the list's filters, sort and page size and never echoes what the model did not
accept. The count behind it is bounded (:mod:`radseg.db.paging`): past 10,000 matches the pager
says "more than 10,000" and offers the pages it knows of, then "next" as far as rows go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import request, url_for

from radseg.db.paging import Listed
from radseg.web.validation import PageNumber

#: page links either side of the current page
AROUND = 2


@dataclass(frozen=True)
class Pager:
    page: int
    per_page: int
    shown: int
    total: int
    total_capped: bool
    has_next: bool
    args: dict[str, Any]

    @classmethod
    def of(cls, listed: Listed[Any], query: PageNumber) -> Pager:
        return cls(
            page=query.page,
            per_page=query.per_page,
            shown=len(listed.rows),
            total=listed.total,
            total_capped=listed.total_capped,
            has_next=listed.has_next,
            args=query.link_args(),
        )

    @property
    def first_row(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.shown else 0

    @property
    def last_row(self) -> int:
        return (self.page - 1) * self.per_page + self.shown

    @property
    def last_page(self) -> int | None:
        """The last page, where the count is exact; ``None`` past the count's bound."""
        if self.total_capped:
            return None
        return max(1, -(-self.total // self.per_page))

    def links(self) -> list[int | None]:
        """Page numbers to link: the first, those around this one and the last (when known);
        ``None`` where pages are left out."""
        last = self.last_page
        known = last if last is not None else self.total // self.per_page
        wanted = {1, *range(self.page - AROUND, self.page + AROUND + 1)}
        if last is not None:
            wanted.add(last)
        pages = sorted(p for p in wanted if 1 <= p <= max(known, self.page))
        out: list[int | None] = []
        for p in pages:
            if out and out[-1] is not None and p > out[-1] + 1:
                out.append(None)
            out.append(p)
        return out

    def url(self, page: int) -> str:
        """This list with the same filters, at ``page``."""
        view_args = request.view_args or {}
        return url_for(str(request.endpoint), **view_args, **self.args, page=page)
