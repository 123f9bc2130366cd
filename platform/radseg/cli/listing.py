"""What every ``list`` command shares with the list pages: a window of rows (``--limit`` with
``--page`` or ``--offset``) and the line that says which rows were printed of how many.

The rows come from the same use cases as the pages (:mod:`radseg.db.paging` ``Listed``), so the
command line searches, filters, sorts and counts exactly as they do; the count is bounded the
same way ("more than 10,000"). The count line goes to stderr, so the rows on stdout stay one per
line for a script, and it is printed only when the rows are not the whole list.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

import click

from radseg.db.paging import Listed, Window

F = TypeVar("F", bound=Callable[..., Any])

#: rows printed unless ``--limit`` says otherwise, and the most one command prints
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def window_options(func: F) -> F:
    """Add ``--limit``, ``--page`` and ``--offset``; the command receives ``window: Window``."""

    @click.option(
        "--limit",
        type=click.IntRange(1, MAX_LIMIT),
        default=DEFAULT_LIMIT,
        show_default=True,
        help="rows to print",
    )
    @click.option(
        "--page", type=click.IntRange(min=1), help="the page of --limit rows (1 is the first)"
    )
    @click.option("--offset", type=click.IntRange(min=0), help="rows to skip (instead of --page)")
    @functools.wraps(func)
    def wrapper(*args: Any, limit: int, page: int | None, offset: int | None, **kwargs: Any) -> Any:
        if page is not None and offset is not None:
            raise click.UsageError("give --page or --offset, not both")
        skip = offset if offset is not None else ((page or 1) - 1) * limit
        return func(*args, window=Window(limit, skip), **kwargs)

    return wrapper  # type: ignore[return-value]


def echo_count(listed: Listed[Any], noun: str) -> None:
    """``studies 51–100 of 10,000; more: --page 3`` on stderr, unless every row was printed."""
    window = listed.window
    if window.offset == 0 and not listed.has_next:
        return
    of = f"{'more than ' if listed.total_capped else ''}{listed.total:,}"
    shown = (
        f"{noun} {window.offset + 1:,}–{window.offset + len(listed.rows):,} of {of}"
        if listed.rows
        else f"no {noun} from row {window.offset + 1:,} ({of} in all)"
    )
    more = ""
    if listed.has_next:
        following = window.offset + window.limit
        page = following // window.limit + 1
        more = f"; more: --page {page}" if following % window.limit == 0 else ""
        more = more or f"; more: --offset {following}"
    click.echo(shown + more, err=True)


def study_date_text(value: date | None) -> str:
    """A study date as the pages show it: after de-identification's date shift, marked so."""
    return f"{value.isoformat()} (shifted)" if value else "no date"
