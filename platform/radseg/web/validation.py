"""Request validation: every JSON body and query string is parsed here, against a pydantic model.

One layer, so no view checks types by hand: :func:`json_body` parses the body safely (no
``NaN``/``Infinity``, nesting bounded *before* the parser recurses, numbers that fit a float)
and validates it strictly (a JSON string is not a number, ``true`` is not ``1``);
:func:`query_args` and :func:`form_fields` validate text fields (``"5"`` is 5). Anything wrong
is a 400 whose detail is one line naming the field, e.g.
``model_version_id: must be at most 2147483647``. The same models produce the OpenAPI document
(:mod:`radseg.web.openapi`), so the document and the checks cannot disagree.

The bounded types here (:data:`RowId`, :data:`Name`, :data:`Text`) keep values inside what the
database stores: an id larger than PostgreSQL's ``INTEGER`` or SQLite's 64 bits, or a string with
a NUL (which PostgreSQL refuses), never reaches a query.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn, TypeVar, cast

import numpy as np
from flask import abort, request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
)

from radseg.db.paging import Window
from radseg.errors import InputError

#: the largest id the database stores (PostgreSQL ``INTEGER``); larger ids are refused or not found
MAX_ROW_ID = 2**31 - 1
#: deeper JSON is refused before it is parsed; radseg's bodies nest at most four levels
MAX_JSON_DEPTH = 32
#: list endpoints: rows per answer, and how far a client may page
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_OFFSET = 2**31 - 1
#: a page number of an HTML list: far beyond any real table; times MAX_PAGE_SIZE, inside the
#: database's range of offsets
MAX_PAGE = 1_000_000
#: rows on a page of an HTML list, unless ``?per_page=`` says otherwise (at most MAX_PAGE_SIZE)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: names (datasets, backends, exporters, PACS, filters) and free text (comments)
MAX_NAME = 200
#: free text typed by a user (a review comment), in characters
MAX_COMMENT = 4000

M = TypeVar("M", bound=BaseModel)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_FREE = r"^[^\x00-\x1f\x7f]*$"
_LINES_ONLY = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _no_control_but_lines(value: str) -> str:
    if _CONTROL_BUT_LINES.search(value):
        raise ValueError("must not contain control characters other than tabs and line breaks")
    return value


#: a row id in a body or a query string
RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]
#: a count or index stored in an INTEGER column (slice index, class id)
Index = Annotated[int, Field(ge=0, le=MAX_ROW_ID)]
#: a name: one line, no control characters (the pattern documents the check's rule)
Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME, json_schema_extra={"pattern": _CONTROL_FREE}),
    AfterValidator(_no_control),
]
#: free text (comments): lines allowed, other control characters not
Text = Annotated[
    str,
    Field(max_length=MAX_COMMENT, json_schema_extra={"pattern": _LINES_ONLY}),
    AfterValidator(_no_control_but_lines),
]


@dataclass(frozen=True)
class OneOf:
    """``Annotated[str, OneOf(CONSTANT)]``: one of the names a domain constant lists, checked and
    documented exactly as a ``Literal`` of them (an ``enum`` in the OpenAPI document), so the
    schema cannot drift from the constant the use cases check against."""

    values: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return handler.generate_schema(cast(Any, Literal)[self.values])


#: a finite, non-negative coordinate
Coordinate = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Request(BaseModel):
    """Base of the JSON bodies: unknown fields are refused (a misspelt field is not ignored)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Query(BaseModel):
    """Base of the query strings: other parameters (cache busters, a page's own) are ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


class Page(Query):
    """``?limit=&offset=`` of the JSON list endpoints."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="rows per answer")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="rows to skip")

    def window(self) -> Window:
        return Window(self.limit, self.offset)


class PageNumber(Query):
    """``?page=&per_page=`` of the HTML lists (1 is the first page)."""

    page: int = Field(1, ge=1, le=MAX_PAGE, description="the page, 1 is the first")
    per_page: int = Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="rows per page")

    def window(self) -> Window:
        return Window(self.per_page, (self.page - 1) * self.per_page)

    def link_args(self) -> dict[str, Any]:
        """The validated parameters that differ from their defaults, but the page: what a link
        to another page of the same list carries (never the raw query string)."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude={"page"})


# --- parsing ------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number; send a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large for a number")
    return value


_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in ``raw`` (strings skipped), without parsing it."""
    skeleton = np.frombuffer(_STRINGS.sub(b"", raw), dtype=np.uint8)
    steps = np.zeros(skeleton.shape, dtype=np.int32)
    steps[(skeleton == ord("[")) | (skeleton == ord("{"))] = 1
    steps[(skeleton == ord("]")) | (skeleton == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def loads(raw: bytes) -> Any:
    """Parse a JSON document from outside, or raise :class:`InputError` saying what is wrong.

    Refused: invalid UTF-8 or JSON, ``NaN``/``Infinity`` (and numbers too large for a float),
    integers of more than 4300 digits, and nesting deeper than :data:`MAX_JSON_DEPTH` — checked
    before the parser recurses, so a deep document costs one linear scan.
    """
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise InputError(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise InputError("the body is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, too many digits
        raise InputError(f"the body is not valid JSON: {_one_line(str(exc))}") from None


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error: ValidationError, limit: int = 3) -> str:
    """A :class:`ValidationError` as one line: ``field: what is wrong; field: …``."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        where = _location(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        ctx = item.get("ctx") or {}
        if item["type"] == "union_tag_invalid":  # a tagged union: say which tags exist
            where = ctx["discriminator"].strip("'")
            message = f"must be one of {ctx['expected_tags']}"
        elif item["type"] == "union_tag_not_found":
            where, message = ctx["discriminator"].strip("'"), "Field required"
        parts.append(f"{where}: {message}" if where else message)
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return _one_line("; ".join(parts), 400)


def validate(model: type[M], data: Any, *, strict: bool) -> M:
    """``data`` as ``model``, or :class:`InputError` with :func:`describe`'s one line.

    :param strict: ``True`` for parsed JSON (types must match), ``False`` for text fields.
    """
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise InputError(describe(exc)) from None


def bad_request(exc: InputError) -> NoReturn:
    abort(400, str(exc))


# --- the request's parts ------------------------------------------------------------------------


def request_json() -> Any:
    """The request's body as JSON (any type), or :class:`InputError`."""
    if not request.is_json:
        raise InputError("send a JSON object with Content-Type: application/json")
    return loads(request.get_data(cache=True))


def json_body(model: type[M]) -> M:
    """The request's JSON body validated against ``model``; 400 with one line otherwise."""
    try:
        data = request_json()
        if not isinstance(data, Mapping):
            raise InputError("send a JSON object with Content-Type: application/json")
        return validate(model, data, strict=True)
    except InputError as exc:
        bad_request(exc)


def _text_fields(model: type[BaseModel], source: Any, *, drop_empty: bool) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in model.model_fields:
        values = source.getlist(name)
        if len(values) > 1:
            raise InputError(f"{name}: give it once, not {len(values)} times")
        if values and not (drop_empty and values[0] == ""):
            data[name] = values[0]
    return data


def query_args(model: type[M]) -> M:
    """The query string validated against ``model``; 400 otherwise.

    Each parameter may come at most once; an empty one (``?model=`` from a form's "any" choice)
    counts as absent."""
    try:
        return validate(model, _text_fields(model, request.args, drop_empty=True), strict=False)
    except InputError as exc:
        bad_request(exc)


def form_fields(model: type[M]) -> M:
    """The form's fields of ``model`` (empty ones left out); :class:`InputError` otherwise."""
    return validate(model, _text_fields(model, request.form, drop_empty=True), strict=False)


def _row_id(name: str, raw: str) -> int:
    digits = raw.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= len(str(MAX_ROW_ID))):
        digits = ""
    if not digits or not 1 <= int(digits) <= MAX_ROW_ID:
        raise InputError(f"{name}: {_one_line(raw, 40)!r} is not an id from 1 to {MAX_ROW_ID}")
    return int(digits)


def form_ids(name: str) -> list[int]:
    """Row ids of a multi-valued form field (checkboxes); :class:`InputError` otherwise."""
    return [_row_id(name, raw) for raw in request.form.getlist(name)]


def query_ids(name: str, *, at_most: int) -> list[int]:
    """Distinct row ids of a repeated query parameter (ticked checkboxes of a GET form), in
    their order; :class:`InputError` for one that is not an id or for more than ``at_most``."""
    ids = list(dict.fromkeys(_row_id(name, raw) for raw in request.args.getlist(name)))
    if len(ids) > at_most:
        raise InputError(f"{name}: at most {at_most} may be ticked; untick some")
    return ids


def form_id(name: str) -> int | None:
    """The row id of a form field, ``None`` when it is empty; :class:`InputError` otherwise."""
    raw = request.form.get(name, "")
    return _row_id(name, raw) if raw.strip() else None
