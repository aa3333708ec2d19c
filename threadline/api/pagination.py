"""The vendor's two pagination styles, turned into keyset page requests and answer meta.

v1: `after` + `count`, answered with `meta.next_after`. v2: `paginate_position`,
`paginate_direction`, `paginate_count`, `paginate_including`, `paginate_page_order`,
answered with `meta.next_before_position` / `meta.next_after_position`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema

from threadline.api.errors import InvalidParameter
from threadline.api.params import (
    EMPTY_TEXT,
    ApiParams,
    VBool,
    decimal_to_datetime,
    parse_id,
    parse_position,
    to_decimal,
)
from threadline.conversations.queries import Key, PageRequest

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_COUNT = 50
DEFAULT_COUNT = 20

Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
# `[last_update, id]` or `[id]`: numbers, or their text (as `id_as_string` serves them); in a
# query string or form also comma-separated (`1684739969.358085,12`) or JSON text.
PositionParam = Annotated[
    list[Any] | None,
    BeforeValidator(parse_position),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 2,
                    "items": {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}]},
                },
                {"type": "null"},
                EMPTY_TEXT,
            ],
            "x-tl-list": True,
        }
    ),
]


class PageParams(ApiParams):
    after: Annotated[
        str | None,
        WithJsonSchema(
            {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}, {"type": "null"}]}
        ),
    ] = Field(
        None,
        description="v1 cursor: `meta.next_after` of the previous page "
        "(a decimal timestamp for conversation lists, a part id for parts); "
        "0 or empty: from the start.",
    )
    count: Count = Field(DEFAULT_COUNT, description="v1 page size, 1-50.")
    paginate_position: PositionParam = Field(
        None,
        description="v2 position: `[last_update, id]` for conversation lists, `[id]` for parts "
        "(the `meta` position of the previous page, numbers or strings), as a JSON array, its "
        "text, or comma-separated (`1684739969.358085,12`); empty, `[]`, `[0]` or `[0, 0]`: "
        "from the start.",
    )
    paginate_direction: Literal["before", "after", "around"] = Field(
        "before", description="v2: older rows (`before`), newer (`after`), or both (`around`)."
    )
    paginate_count: Count = Field(DEFAULT_COUNT, description="v2 page size, 1-50.")
    paginate_including: VBool = Field(
        None, description="v2: include the row at the position itself."
    )
    paginate_page_order: Literal["desc", "asc"] = Field(
        "desc", description="v2: order of the rows in the answer."
    )


def _timestamp(name: str, value: Any) -> datetime:
    try:
        return decimal_to_datetime(to_decimal(value))
    except ValueError as exc:
        raise InvalidParameter(name, str(exc)) from None


def _ident(name: str, value: Any) -> int:
    try:
        return parse_id(str(value) if isinstance(value, Decimal) else value)
    except ValueError as exc:
        raise InvalidParameter(name, str(exc)) from None


def _is_zero(value: Any) -> bool:
    """0 (as a number or text) or empty: a cursor that means "from the start"."""
    if value is None or isinstance(value, bool):
        return value is None
    if isinstance(value, str) and not value.strip():
        return True
    try:
        return to_decimal(value) == 0
    except ValueError:
        return False


def _position(p: PageParams, timed: bool) -> Key | None:
    raw = p.paginate_position
    # `[]`, `[0]`, `[0, 0]`: from the start, as an absent position.
    if raw is None or all(_is_zero(v) for v in raw):
        return None
    name = "paginate_position"
    if timed:
        if len(raw) != 2:
            raise InvalidParameter(name, "must be [last_update, id]")
        return (_timestamp(name, raw[0]), _ident(name, raw[1]))
    if len(raw) != 1:
        raise InvalidParameter(name, "must be [id]")
    return (_ident(name, raw[0]),)


def page_request(p: PageParams, *, timed: bool) -> PageRequest:
    """The v2 request; `timed` lists are keyed by (last_update, id), others by id."""
    position = _position(p, timed)
    if p.paginate_direction == "around" and position is None:
        raise InvalidParameter("paginate_position", "is required with paginate_direction=around")
    return PageRequest(
        count=p.paginate_count,
        direction=p.paginate_direction,
        position=position,
        including=bool(p.paginate_including),
    )


def v1_after_timestamp(p: PageParams) -> datetime | None:
    """The v1 cursor of a conversation list; 0 or empty: from the start."""
    return None if _is_zero(p.after) else _timestamp("after", p.after)


def v1_after_id(p: PageParams) -> int | None:
    """The v1 cursor of a part list; 0 or empty: from the start."""
    return None if _is_zero(p.after) else _ident("after", p.after)


def _seconds_text(value: datetime) -> str:
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return f"{seconds}.{delta.microseconds:06d}" if delta.microseconds else str(seconds)


def _seconds(value: datetime) -> int | float:
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds + delta.microseconds / 1_000_000 if delta.microseconds else seconds


def cursor_value(value: Any, as_string: bool) -> int | float | str:
    if isinstance(value, datetime):
        return _seconds_text(value) if as_string else _seconds(value)
    return str(value) if as_string else int(value)


def position_out(key: Key | None, as_string: bool) -> list[int | float | str] | None:
    return None if key is None else [cursor_value(v, as_string) for v in key]


def v2_meta(
    p: PageParams, next_before: Key | None, next_after: Key | None, as_string: bool
) -> dict[str, Any]:
    return {
        "next_before_position": position_out(next_before, as_string),
        "next_after_position": position_out(next_after, as_string),
    }


def ordered(rows: list[Any], p: PageParams) -> list[Any]:
    """Rows come newest first; `paginate_page_order=asc` reverses them."""
    return rows[::-1] if p.paginate_page_order == "asc" else rows
