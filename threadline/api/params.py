"""Request parameters: merged from every place a client may put them, then validated.

The vendor lets a client send any parameter in the query string, a urlencoded or multipart
form, or a JSON body (the body wins over the query). `raw_params` merges them into one dict;
each endpoint declares a pydantic model of its parameters, whose annotated types apply the
vendor's coercions (booleans, comma-separated arrays, Unix timestamps, 64-bit ids).
A validation failure is a `BadRequest` naming the parameter.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from starlette.datastructures import UploadFile

from threadline.api.errors import BadRequest, InvalidParameter

# Ids are signed 64-bit integers on both databases.
MAX_ID = 2**63 - 1
# A text body is at most 64 KiB of characters; JSON and form encodings add some overhead.
MAX_PLAIN_BODY_BYTES = 1024 * 1024
# Multipart fields that are not files (the text body among them).
MAX_FORM_FIELD_BYTES = 1024 * 1024
# JSON nested deeper than this is refused before it is parsed: no parameter needs more, and
# recursive parsing, validation and storage of a few hundred levels overflow the stack.
MAX_JSON_DEPTH = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger("threadline.api")
_MAX_TIMESTAMP = Decimal(253_402_300_799)  # 9999-12-31T23:59:59Z


@dataclass(slots=True)
class RawParams:
    """Every parameter of the request by name; files of a multipart body apart."""

    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, UploadFile] = field(default_factory=dict)


def _query_values(request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        _collect(values, key, value)
    return values


# A JSON string (its escapes included), whose brackets are text, not structure.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(text: bytes | str) -> int:
    """How deeply the arrays and objects of a JSON text nest, found without parsing it
    (a malformed text gets a number too: the parser refuses it afterwards)."""
    data = text.encode() if isinstance(text, str) else text
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += _STEP[byte]
        deepest = max(deepest, depth)
    return deepest


def check_json_depth(text: bytes | str) -> None:
    """ValueError for JSON text nested deeper than `MAX_JSON_DEPTH`."""
    data = text.encode() if isinstance(text, str) else text
    # Fewer opening brackets than the limit cannot nest past it: most texts stop here.
    if data.count(b"[") + data.count(b"{") <= MAX_JSON_DEPTH:
        return
    if json_depth(data) > MAX_JSON_DEPTH:
        log.info("refused JSON nested deeper than %d levels", MAX_JSON_DEPTH)
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        check_json_depth(body)
    except ValueError as exc:
        raise BadRequest(f"body: {exc}") from None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body: not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequest("body: a JSON body must be an object")
    return parsed


def _urlencoded(body: bytes) -> dict[str, Any]:
    stripped = body.strip()
    if stripped.startswith(b"{"):
        # `curl -d '{...}'` labels a JSON body as a form; accept what was meant.
        return _json_object(stripped)
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadRequest("body: not valid UTF-8") from None
    values: dict[str, Any] = {}
    for key, value in pairs:
        _collect(values, key, value)
    return values


def _collect(values: dict[str, Any], key: str, value: Any) -> None:
    """A repeated name (`tags=a&tags=b`) gathers its values into a list, as in a query."""
    if key in values:
        previous = values[key]
        values[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
    else:
        values[key] = value


def _nul_in(value: Any) -> bool:
    """PostgreSQL stores no NUL character in text or JSON: refuse it up front."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_nul_in(v) for v in value)
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    return False


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest("body: the request body is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest("body: the request body is too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _merge_body(request: Request, raw: RawParams) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_multipart_bytes(request):
            raise BadRequest("body: the request body is too large")
        try:
            form = await request.form(max_part_size=MAX_FORM_FIELD_BYTES)
        except Exception as exc:  # python-multipart raises several unrelated types
            raise BadRequest(f"body: malformed multipart form ({exc})") from None
        stack = request.scope.get("fastapi_middleware_astack")
        if isinstance(stack, AsyncExitStack):
            stack.push_async_callback(form.close)
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                raw.files[key] = value
            else:
                _collect(fields, key, value)
        raw.values.update(fields)
        return
    body = await _read_body(request, MAX_PLAIN_BODY_BYTES)
    if not body.strip():
        return
    if content_type == "application/x-www-form-urlencoded":
        raw.values.update(_urlencoded(body))
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        raw.values.update(_json_object(body))
    else:
        raise BadRequest(f"body: unsupported content type {content_type}")


# A route that takes larger files (a raw e-mail message) sets its own limit here, in a
# dependency that runs before the body is read.
MULTIPART_LIMIT_SCOPE_KEY = "threadline.max_multipart_bytes"


def max_multipart_bytes(request: Request) -> int:
    """A file of the largest accepted size, plus room for the other fields."""
    settings = getattr(request.app.state, "api_settings", None)
    max_file = getattr(settings, "attachment_max_bytes", 0)
    default = int(max_file) + MAX_PLAIN_BODY_BYTES
    override = request.scope.get(MULTIPART_LIMIT_SCOPE_KEY)
    return max(default, override) if isinstance(override, int) else default


async def raw_params(request: Request) -> RawParams:
    """Merge query string and body (the body wins), on every method: some clients send the
    parameters of a GET (the token among them) as a form body."""
    raw = RawParams(_query_values(request))
    await _merge_body(request, raw)
    for key, value in raw.values.items():
        if _nul_in(key) or _nul_in(value):
            name = key.replace("\x00", "\\0") or "(unnamed)"
            raise InvalidParameter(name, "must not contain NUL characters")
    return raw


_RAW_SCOPE_KEY = "threadline.raw_params"


async def cached_raw_params(request: Request) -> RawParams:
    """`raw_params`, computed once per request whoever asks first (auth or an endpoint)."""
    raw = request.scope.get(_RAW_SCOPE_KEY)
    if raw is None:
        raw = await raw_params(request)
        request.scope[_RAW_SCOPE_KEY] = raw
    assert isinstance(raw, RawParams)
    return raw


# ---------------------------------------------------------------------------
# The vendor's coercions, as pydantic "before" validators.


def vendor_bool(value: Any) -> bool | None:
    """The vendor's boolean ("Types": Boolean): absent or null = None; `false` in any case,
    `0` and the empty string are false; any other text is true. In a JSON body `true` and
    `false` are themselves and a number is true unless 0; an array or object is refused."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return value != 0
    if isinstance(value, str):
        text = value.strip()
        return not (text == "" or text == "0" or text.lower() == "false")
    raise ValueError("must be a boolean")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, int):
        return value
    # A JSON number the parser could not keep as an integer (beyond 64 bits) is a float
    # that may differ from the number sent: taken only while a float is exact (2^53).
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            return int(text)
    raise ValueError("must be an integer")


def parse_id(value: Any) -> int:
    ident = _integer(value)
    if not 0 < ident <= MAX_ID:
        raise ValueError(f"must be an id between 1 and {MAX_ID}")
    return ident


def parse_id_or_zero(value: Any) -> int:
    """An id, or 0 (and the empty string) for "none"."""
    if isinstance(value, str) and not value.strip():
        return 0
    ident = _integer(value)
    if not 0 <= ident <= MAX_ID:
        raise ValueError(f"must be 0 or an id between 1 and {MAX_ID}")
    return ident


def _optional(parser: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parser(value)

    return parse


# A `random_id` is any signed 64-bit number (the column's type on both databases): the pages
# call it "a random 32-bit number", and Java's `Random.nextInt()` (or `nextLong()`) is
# negative half the time. Stored as sent, a negative key never meets a positive one.
MIN_RANDOM_ID = -(2**63)
MAX_RANDOM_ID = 2**63 - 1


def parse_random_id(value: Any) -> int | None:
    """A client idempotency key, signed 64-bit; 0 or empty means none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    ident = _integer(value)
    if not MIN_RANDOM_ID <= ident <= MAX_RANDOM_ID:
        raise ValueError(f"must be between {MIN_RANDOM_ID} and {MAX_RANDOM_ID}")
    return ident or None


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, float):
        # repr is the shortest text that reads back as the same double: exact to the µs.
        value = repr(value)
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError("must be a number") from None
    if not number.is_finite():
        raise ValueError("must be a finite number")
    return number


def decimal_to_datetime(seconds: Decimal) -> datetime:
    if not 0 <= seconds <= _MAX_TIMESTAMP:
        raise ValueError("must be a Unix timestamp between 0 and 253402300799")
    micros = int((seconds * 1_000_000).to_integral_value())
    return _EPOCH + timedelta(microseconds=micros)


def parse_timestamp(value: Any) -> datetime:
    """Unix seconds, integer or decimal (a number or its text)."""
    if isinstance(value, datetime):
        return value
    return decimal_to_datetime(to_decimal(value))


def parse_timestamp_or_zero(value: Any) -> datetime | None:
    """A timestamp, or 0 for "none"."""
    if isinstance(value, datetime) or value is None:
        return value
    number = to_decimal(value)
    return None if number == 0 else decimal_to_datetime(number)


def parse_json(value: Any) -> Any:
    """A JSON value given as JSON text inside a form field, or as itself in a JSON body."""
    if isinstance(value, str):
        check_json_depth(value)
        try:
            return json.loads(value, parse_float=Decimal)
        except json.JSONDecodeError:
            raise ValueError("must be valid JSON") from None
    return value


def _kept_json(value: Any) -> Any:
    """A JSON value to keep as sent: JSON text (in a form field) parsed with its numbers as
    JSON numbers, anything else as it came (a JSON body's value)."""
    if not isinstance(value, str):
        return value
    check_json_depth(value)
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise ValueError("must be valid JSON") from None


def parse_json_object(value: Any) -> dict[str, Any] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    value = _kept_json(value)
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    if _nul_in(value):  # a \u0000 escape inside JSON text
        raise ValueError("must not contain NUL characters")
    return value


def parse_json_list(value: Any) -> list[Any] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parsed = parse_json(value)
    if not isinstance(parsed, list):
        raise ValueError("must be a JSON array")
    return parsed


def parse_json_object_list(value: Any) -> list[dict[str, Any]] | None:
    """JSON objects to keep as sent (numbers as JSON numbers: stored and served again)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    value = _kept_json(value)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("must be a JSON array of objects")
    if _nul_in(value):  # a \u0000 escape inside JSON text
        raise ValueError("must not contain NUL characters")
    return value


def parse_str_list(value: Any) -> list[str]:
    """A JSON array, or comma-separated text (`a,b`)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = parse_json(text)
        else:
            return [item.strip() for item in text.split(",") if item.strip()]
    if not isinstance(value, list):
        raise ValueError("must be an array of strings")
    items: list[str] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | Decimal | float):
            raise ValueError("must be an array of strings")
        items.append(str(item))
    return items


def parse_position(value: Any) -> list[Any] | None:
    """A v2 `paginate_position`: a JSON array, its text (`[1684739969.358085, 12]`), or the
    comma-separated text the general rules allow for a one-level array of numbers or
    strings (`1684739969.358085,12`). Absent or empty: none. The items are checked by the
    list that reads them (a timestamp and an id, or an id)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not text.startswith("["):
            return [item.strip() for item in text.split(",")]
        value = parse_json(text)
    if not isinstance(value, list):
        raise ValueError("must be a JSON array or comma-separated values")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int | Decimal | float):
            raise ValueError("must be an array of numbers or strings")
    return value


def blank_none(value: Any) -> Any:
    """For optional choices: an empty value means "none" (`null` and `none` too)."""
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none"):
        return None
    return value


# Put in front of an optional enum: `Annotated[Kind | None, Blank, blank_choice(Kind)]`.
Blank = BeforeValidator(blank_none)


def blank_choice(kind: type[Enum] | tuple[str, ...]) -> WithJsonSchema:
    """The schema of an optional enum (or choice of words) that an empty value (or `null`,
    `none`) leaves unset."""
    values = list(kind) if isinstance(kind, tuple) else [member.value for member in kind]
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": values},
                {"type": "null"},
                {"type": "string", "pattern": r"^\s*([nN][uU][lL][lL]|[nN][oO][nN][eE])?\s*$"},
            ]
        }
    )


DEFAULT_USER: Final = "default_user"
# Text that reads as a number: a user id, or (with a fraction, or negative) no id at all.
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_from_user(value: Any) -> int | Literal["default_user"] | None:
    """`from_user`: the vendor's boolean (v1 pages) or `default_user` / a user id (v2 pages).

    Told apart like this, on every version: what the vendor's boolean reads as false (JSON
    `false`, `false` in any case, `0`, the empty string, null) means "not as the user"; a
    whole number other than 0 and 1 is a user id; anything else the boolean reads as true
    (JSON `true`, `1`, `default_user`, `true` or any other word) means the conversation's
    user. PHP and other form encoders send `true` as `1`: a write as the user is allowed only
    in the name of the conversation's own user, so `1` read as the boolean names the only
    user the write could be made as.
    """
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            value = Decimal(text)
        elif vendor_bool(text):
            return DEFAULT_USER
        else:
            return None
    if value is None or isinstance(value, bool):
        return DEFAULT_USER if value else None
    # (An integral number of any size: bounded first, so that no huge exponent is expanded.)
    if isinstance(value, float | Decimal) and math.isfinite(value) and -(2**64) <= value <= 2**64:
        whole = int(value)
        value = whole if value == whole else value
    if isinstance(value, int):
        if value in (0, 1):
            return DEFAULT_USER if value else None
        try:
            return parse_id(value)
        except ValueError:
            raise ValueError(f"a user id must be between 1 and {MAX_ID}") from None
    raise ValueError("must be true, false, default_user or a user id")


# The newest API version Threadline serves; a higher one asked for behaves as this one.
NEWEST_VERSION: Final = 2
# The whitespace a form field may carry around a value (what `EMPTY_TEXT` allows too).
_SPACES = " \t\n\r\f\v"
# A semantic version or a prefix of it ("you can set only version prefix"): `2`, `2.1`,
# `2.1.1`; the major number is not 0, and each number has at most 9 digits.
_VERSION = re.compile(r"0*([1-9][0-9]{0,8})(?:\.[0-9]{1,9}){0,2}")


def parse_version(value: Any) -> Literal[1, 2] | None:
    """`version` (the vendor's "Web API versions" page): a semantic version or its prefix,
    of which the major number counts. 1 is the old pagination; 2 and above the current one
    ("used if you request API version 2 and above"), so the announced 3 behaves as 2, the
    newest Threadline knows. In a JSON body a whole number (`2`, `2.0`) or the text. Absent
    or empty: None (the path's version, else 2)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("must be a version such as 1, 2 or 2.1.1")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    text = str(value) if isinstance(value, int) else value
    if not isinstance(text, str):
        raise ValueError("must be a version such as 1, 2 or 2.1.1")
    text = text.strip(_SPACES)
    if not text:
        return None
    found = _VERSION.fullmatch(text)
    if found is None:
        raise ValueError("must be a version such as 1, 2 or 2.1.1")
    return 1 if int(found.group(1)) == 1 else NEWEST_VERSION


# ---------------------------------------------------------------------------
# The JSON schemas of the hand-parsed types, for the OpenAPI document. `x-tl-*` keys are
# read (and removed) by `describe`: `x-tl-json` marks a value sent as JSON text in a query
# string or form field, `x-tl-list` an array that may also be comma-separated, and
# `x-tl-note` is added to the parameter's description.

_INT64 = {"type": "integer", "format": "int64"}
_ID = {**_INT64, "minimum": 1, "maximum": MAX_ID}
_ID_OR_ZERO = {**_INT64, "minimum": 0, "maximum": MAX_ID}
_NULL = {"type": "null"}
# In a form every value is text, so an empty field is how "none" is sent.
# (Spelled out: JSON Schema's `\s` also matches characters that `str.strip` keeps.)
_EMPTY = {"type": "string", "pattern": r"^[ \t\n\r\f\v]*$"}
EMPTY_TEXT: Final = _EMPTY
_SECONDS = {"type": "number", "minimum": 0, "maximum": int(_MAX_TIMESTAMP)}

BOOL_NOTE = (
    "Vendor boolean: `false` (any case), `0` and the empty string are false, "
    "any other value true; absent means not set."
)


def _schema(schema: dict[str, Any], note: str | None = None) -> WithJsonSchema:
    return WithJsonSchema({**schema, "x-tl-note": note} if note else schema)


def text(max_chars: int, *, blank: bool = True) -> WithJsonSchema:
    """The schema of a text parameter: at most `max_chars`; `blank=False`: not only spaces
    (said in words: a `pattern` next to a length makes generating examples very slow)."""
    schema: dict[str, Any] = {"type": "string", "maxLength": max_chars}
    if not blank:
        schema |= {"minLength": 1, "x-tl-note": "Not blank."}
    return WithJsonSchema(schema)


def author(default: str, what: str) -> WithJsonSchema:
    """`from_admin` / `from_user`: an id, or the name of the default author."""
    return WithJsonSchema(
        {
            "anyOf": [_ID, {"type": "string", "enum": [default]}, _NULL, _EMPTY],
            "x-tl-note": f"An id, or `{default}` ({what}).",
        }
    )


FROM_USER_NOTE = (
    "Write as the conversation's user (needs `as-user`). The same on /v1/, /v2/ and "
    "unversioned paths, read as the vendor's boolean with user ids besides: JSON `false`, "
    "`false` (any case), `0`, empty and null mean not as the user; any whole number other "
    "than 0 and 1 is a user id, which must be the conversation's user; anything else (JSON "
    "`true`, `1`, `default_user`, `true` or any other word) means the conversation's user. "
    "(`1` is the boolean: form encoders such as PHP's send `true` as `1`.)"
)
FromUser = Annotated[
    int | Literal["default_user"] | None,
    BeforeValidator(parse_from_user),
    _schema(
        {
            "anyOf": [
                _ID_OR_ZERO,
                {"type": "boolean"},
                {"type": "string", "enum": [DEFAULT_USER]},
                {"type": "string"},
                _NULL,
            ]
        },
        FROM_USER_NOTE,
    ),
]
VBool = Annotated[
    bool | None,
    BeforeValidator(vendor_bool),
    _schema(
        {"anyOf": [{"type": "boolean"}, {"type": "string"}, {"type": "number"}, _NULL]},
        BOOL_NOTE,
    ),
]
IdParam = Annotated[int, BeforeValidator(parse_id), _schema(_ID)]
OptionalId = Annotated[
    int | None,
    BeforeValidator(_optional(parse_id)),
    _schema({"anyOf": [_ID, _NULL, _EMPTY]}),
]
IdOrZero = Annotated[
    int, BeforeValidator(parse_id_or_zero), _schema({"anyOf": [_ID_OR_ZERO, _EMPTY]})
]
OptionalIdOrZero = Annotated[
    int | None,
    BeforeValidator(_optional(parse_id_or_zero)),
    _schema({"anyOf": [_ID_OR_ZERO, _NULL, _EMPTY]}),
]
_RANDOM_ID = {**_INT64, "minimum": MIN_RANDOM_ID, "maximum": MAX_RANDOM_ID}
RandomId = Annotated[
    int | None,
    BeforeValidator(parse_random_id),
    _schema(
        {"anyOf": [_RANDOM_ID, _NULL, _EMPTY]},
        "Any signed 64-bit number (negative ones too, e.g. Java's `Random.nextInt()`); "
        "0 or empty means none.",
    ),
]
Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    _schema(_SECONDS, "Unix seconds, integer or decimal."),
]
TimestampOrZero = Annotated[
    datetime | None,
    BeforeValidator(parse_timestamp_or_zero),
    _schema({"anyOf": [_SECONDS, _NULL]}, "Unix seconds, integer or decimal; 0 for none."),
]
JsonObject = Annotated[
    dict[str, Any] | None,
    BeforeValidator(parse_json_object),
    _schema({"anyOf": [{"type": "object"}, _NULL], "x-tl-json": True}),
]
JsonArray = Annotated[
    list[Any] | None,
    BeforeValidator(parse_json_list),
    _schema({"anyOf": [{"type": "array"}, _NULL], "x-tl-json": True}),
]
JsonObjectList = Annotated[
    list[dict[str, Any]] | None,
    BeforeValidator(parse_json_object_list),
    _schema({"anyOf": [{"type": "array", "items": {"type": "object"}}, _NULL], "x-tl-json": True}),
]
StrList = Annotated[
    list[str],
    BeforeValidator(parse_str_list),
    _schema(
        {"type": "array", "items": {"type": "string"}, "x-tl-list": True},
        "A JSON array, or comma-separated (`a,b`).",
    ),
]
Version = Annotated[
    Literal[1, 2] | None,
    BeforeValidator(parse_version),
    _schema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 999_999_999},
                {
                    "type": "string",
                    "pattern": r"^[ \t\n\r\f\v]*0*[1-9][0-9]{0,8}(\.[0-9]{1,9}){0,2}"
                    r"[ \t\n\r\f\v]*$",
                },
                _NULL,
                _EMPTY,
            ]
        },
        "A semantic version or its prefix (`2`, `2.1.1`); its major number counts.",
    ),
]


class ApiParams(BaseModel):
    """Parameters every endpoint takes."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    auth_token: str | None = Field(
        None, description="The API token, when not sent in the Authorization header."
    )
    id_as_string: VBool = Field(None, description="Serve every id as a string.")
    precise_times: VBool = Field(
        None,
        description="Threadline: serve timestamps with microseconds (a decimal number) "
        "instead of the vendor's whole seconds.",
    )
    version: Version = Field(
        None,
        description="1 or 1.x.y: the old pagination; 2 or 2.x.y (the default): the current "
        "one; a higher version (3, announced) behaves as 2. A version path (/v1/, /v2/) wins.",
    )


P = TypeVar("P", bound=ApiParams)


def bad_request_from(exc: ValidationError) -> InvalidParameter:
    """The first error of a validation failure, naming its parameter."""
    first = exc.errors(include_url=False)[0]
    loc = first.get("loc") or ("body",)
    name = ".".join(str(part) for part in loc)
    message = str(first.get("msg", "is invalid"))
    if first.get("type") == "missing":
        message = "is required"
    message = message.removeprefix("Value error, ")
    return InvalidParameter(name, message)


def params(model: type[P]) -> Callable[[RawParams], Awaitable[P]]:
    """A dependency that validates the merged parameters against `model`."""

    async def dependency(raw: Annotated[RawParams, Depends(cached_raw_params)]) -> P:
        try:
            return model.model_validate(raw.values)
        except ValidationError as exc:
            raise bad_request_from(exc) from None

    return dependency


# ---------------------------------------------------------------------------
# OpenAPI: the parameters are read by hand, so describe them by hand, from the models.

# Described by the `AuthToken` security scheme (query string or body) instead.
_NOT_LISTED = frozenset({"auth_token"})


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            # Keys next to the reference (the field's description, examples) win.
            siblings = {k: _inline(v, defs) for k, v in schema.items() if k != "$ref"}
            return {**_inline(defs[ref.removeprefix("#/$defs/")], defs), **siblings}
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _clean(schema: Any) -> Any:
    """The schema without our `x-tl-*` markers and pydantic's titles."""
    if isinstance(schema, dict):
        return {
            k: _clean(v)
            for k, v in schema.items()
            if not k.startswith("x-tl-") and not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_clean(item) for item in schema]
    return schema


def _description(prop: dict[str, Any]) -> str:
    text = str(prop.get("description", ""))
    note = prop.get("x-tl-note")
    return f"{text} {note}".strip() if note else text


def _query_parameter(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": name,
        "in": "query",
        "required": required,
        "description": _description(prop),
    }
    schema = _clean({k: v for k, v in prop.items() if k != "description"})
    if prop.get("x-tl-json"):
        # JSON text in the query string: `paginate_position=[1700000000.5,12]`.
        parameter["content"] = {"application/json": {"schema": schema}}
    else:
        if prop.get("x-tl-list"):
            parameter["style"] = "form"
            parameter["explode"] = False
        parameter["schema"] = schema
    return parameter


def describe(
    model: type[ApiParams],
    *,
    body: bool,
    files: dict[str, str] | None = None,
    dependent_required: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """`openapi_extra` for an endpoint: every parameter in the query, and for writes a body.

    `files` names the multipart file fields the endpoint reads, with their descriptions;
    `dependent_required` the fields a file needs beside it in the multipart body.
    """
    schema = model.model_json_schema(mode="validation")
    schema = _inline(schema, schema.get("$defs", {}))
    required = set(schema.get("required", []))
    properties: dict[str, Any] = {
        name: prop for name, prop in schema.get("properties", {}).items() if name not in _NOT_LISTED
    }
    parameters = [
        _query_parameter(name, prop, name in required and not body)
        for name, prop in properties.items()
    ]
    extra: dict[str, Any] = {"parameters": parameters}
    if body:
        props = {
            name: {**_clean(prop), "description": _description(prop)}
            for name, prop in properties.items()
        }
        content_schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            content_schema["required"] = sorted(required)
        json_text = {
            name: {"contentType": "application/json"}
            for name, prop in properties.items()
            if prop.get("x-tl-json")
        }
        form_schema = content_schema
        if files:
            form_schema = {
                **content_schema,
                "properties": {
                    **props,
                    **{
                        name: {"type": "string", "format": "binary", "description": text}
                        for name, text in files.items()
                    },
                },
            }
            if dependent_required:
                form_schema["dependentRequired"] = dependent_required
        form: dict[str, Any] = {"schema": content_schema}
        multipart: dict[str, Any] = {"schema": form_schema}
        if json_text:
            form["encoding"] = json_text
            multipart["encoding"] = json_text
        extra["requestBody"] = {
            "required": False,
            "description": "Any parameter may be sent in the query string, a JSON body, or a "
            "urlencoded or multipart form; the body wins. In a form, arrays and objects are "
            "JSON text.",
            "content": {
                "application/json": {"schema": content_schema},
                "application/x-www-form-urlencoded": form,
                "multipart/form-data": multipart,
            },
        }
    return extra
