"""Response shapes: TypedDicts serialised by module-level TypeAdapters straight to JSON bytes.

Handlers build plain dicts holding ints and aware datetimes; the annotated serializers
turn ids into strings when the request asked for `id_as_string` (passed as the
serialisation context) and datetimes into whole Unix seconds, as the vendor's answers have
them (with microseconds, as a decimal number, when the request asked for `precise_times`).
The same types are the `response_model`s, so the OpenAPI document describes exactly what is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Generic, NotRequired, TypeVar

from pydantic import ConfigDict, Field, PlainSerializer, SerializationInfo, TypeAdapter
from typing_extensions import TypedDict

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _serialize_id(value: int, info: SerializationInfo) -> int | str:
    # Unions list their object choices before `Id`, so only ints arrive here.
    context = info.context
    if context is not None and context.get("id_as_string"):
        return str(value)
    return value


def unix_seconds(value: datetime, precise: bool = False) -> int | float:
    """Whole seconds as an int (the fraction dropped); `precise`: with microseconds as a
    decimal number."""
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    if precise and delta.microseconds:
        return seconds + delta.microseconds / 1_000_000
    return seconds


def _serialize_ts(value: datetime, info: SerializationInfo) -> int | float:
    context = info.context
    return unix_seconds(value, bool(context is not None and context.get("precise_times")))


# An id: a JSON number, or a string under `id_as_string`.
Id = Annotated[int, PlainSerializer(_serialize_id, return_type=int | str, when_used="always")]
# A point in time as whole Unix seconds (under `precise_times`, decimal with microseconds).
Ts = Annotated[
    datetime, PlainSerializer(_serialize_ts, return_type=int | float, when_used="always")
]
# A cursor position as sent: numbers, or strings under `id_as_string`.
Position = list[int | float | str]


class Meta(TypedDict):
    status: int
    next_after: NotRequired[int | float | str | None]
    next_before_position: NotRequired[Position | None]
    next_after_position: NotRequired[Position | None]
    error: NotRequired[str]
    error_message: NotRequired[str]


T = TypeVar("T")


class Envelope(TypedDict, Generic[T]):
    meta: Meta
    data: T


class Empty(TypedDict):
    pass


class AdminOut(TypedDict):
    id: Id
    name: str
    # A URL, or empty: the vendor declares a string.
    avatar: str
    type: str
    name_internal: Annotated[
        str,
        Field(
            description="The name operators know the admin by: Threadline keeps one name "
            "per admin, so this is `name`."
        ),
    ]


class SenderOut(TypedDict):
    """The author of a message or of a reply from the app's default sender (the vendor's
    message-sender object: `type` is `message_sender`)."""

    id: Id
    name: str
    email_name: Annotated[
        str,
        Field(
            description="The part before `@` of the address the app's e-mails leave from "
            "(every sender's); empty while the app has none."
        ),
    ]
    is_default: Annotated[bool, Field(description="The app's default sender.")]
    is_removed: Annotated[bool, Field(description="Always false: senders are not removed.")]
    is_bot: Annotated[
        bool,
        Field(description="Always false: a bot's part names its bot (`type` `bot`) instead."),
    ]
    avatar: str
    type: str


class BotOut(TypedDict):
    """A bot's part's author: `name` is the `bot_name` it was written under ("Bot" when
    none was given); a bot has no avatar."""

    id: Id | None
    name: str
    avatar: str
    type: str


class ChannelOut(TypedDict):
    id: Id
    name: str
    type: str
    avatar: str


class ChannelWithCounts(ChannelOut):
    """The Channel object with its optional fields, as `GET /apps/{app}/channels` serves it."""

    droppable: Annotated[
        bool,
        Field(
            description="Conversations can be moved to it by hand "
            "(`POST /ext/conversations/{id}/channel`): always true."
        ),
    ]
    operators: Annotated[
        list[AdminOut],
        Field(
            description="Who reads its conversations: every admin of the app (Threadline "
            "has no per-channel access), as Admin objects."
        ),
    ]
    not_assigned_count: Annotated[
        int, Field(description="Its open conversations that have no assignee.")
    ]
    not_read_count: Annotated[
        int,
        Field(
            description="Its open conversations that are unanswered: their last reply is "
            "the user's (whether an operator read it or not)."
        ),
    ]
    read_permission: Annotated[
        bool,
        Field(
            description="The caller may read its conversations: always true (the endpoint "
            "takes the read scope)."
        ),
    ]
    priority: Annotated[
        int, Field(description="Threadline does not rank channels: 0 for every channel.")
    ]
    auto_set: Annotated[
        bool,
        Field(
            description="New conversations are put in it automatically: true for the app's "
            "default channel, false for the others."
        ),
    ]
    auto_set_settings: Annotated[
        dict[str, Any],
        Field(description="Settings of that automatic placement: none (an empty object)."),
    ]


class UserOut(TypedDict):
    id: Id
    app: Annotated[Id, Field(description="The user's app.")]
    user_id: str | None
    presence: Annotated[
        str,
        Field(
            description="`online` while the user has the chat widget open on the site (a "
            "realtime stream of theirs, on any server process), else `offline`. Threadline "
            "does not follow the user's activity on the page, so it never answers `idle`."
        ),
    ]
    props: dict[str, Any]
    removed: Annotated[
        Ts | None, Field(description="When the user was removed; null unless removed.")
    ]
    map_url: Annotated[
        str, Field(description="Always empty: Threadline keeps no map of its users.")
    ]
    created: Ts


class AttachmentOut(TypedDict):
    type: str
    id: Id
    size: int
    filename: str
    mime_type: str
    url: str
    created: Annotated[Ts, Field(description="When the file was stored, with its part.")]


# `from` is a Python keyword, so PartOut uses the functional TypedDict form.
PartOut = TypedDict(
    "PartOut",
    {
        "id": Id,
        "created": Ts,
        "edited": Ts | None,
        "removed": Ts | None,
        "conversation": Id,
        "part_group": Id,
        "body": str,
        # The body as a screen shows it: a user's text escaped, an operator's HTML cleaned
        # to an allowlist; bare web addresses are links (never stored: made when served).
        "body_html": str,
        "body_json": dict[str, Any] | None,
        "type": str,
        # The user's id for the user's parts; an admin, sender or bot; null for the system.
        "from": AdminOut | SenderOut | BotOut | Id | None,
        "direction": str,
        "sent_via": str,
        "read": Annotated[
            bool,
            Field(
                description="On a part the user sees and did not write (an operator's, a "
                "bot's or a message's reply, an article, ...): the user has read it, as the "
                "vendor's page says of operators' replies. On the user's own part: an "
                "operator has read it. Notes and system parts: false."
            ),
        ],
        "attachments": list[AttachmentOut],
        "random_id": Id | None,
        "external_id": str | None,
        # The page it was written on, and what the user can do with it (reply and
        # startconversation parameters), as sent; null when not given.
        "referrer": str | None,
        "actions": list[dict[str, Any]] | None,
        "first": NotRequired[
            Annotated[
                bool,
                Field(
                    description="Only on the conversation's first part, and then true "
                    "(absent on every other part, as the vendor's page says)."
                ),
            ]
        ],
        "tag": NotRequired[str | None],
        "assignee": NotRequired[AdminOut | None],
    },
)


class ConversationOut(TypedDict):
    id: Id
    created: Ts
    replied: bool
    delayed_until: Ts | None
    closed: bool
    message: Id | None
    type: str | None
    reply_type: str | None
    removed: Ts | None
    reply_last_type: str | None
    parts_count: int
    assignee: AdminOut | None
    sended_time: Ts
    admin_unread_count: int
    user_unread_count: int
    not_answered_admin_replies: int
    unread_parts_count: int
    replies_count: int
    last_admin: AdminOut | None
    last_update: Ts
    tags: list[str]
    important: bool
    external_service: str | None
    external_id: str | None
    last_user_reply_time: Ts | None
    status: str | None
    assistant_type: str | None
    recipient_type: str
    read: Annotated[
        bool,
        Field(
            description="The user has read the conversation's first message (its first "
            "reply): always true when the user started it; for one an operator or a message "
            "started, true once the user has read it."
        ),
    ]
    clicked: bool
    unsubscribed: bool
    user: NotRequired[UserOut]
    channel: NotRequired[ChannelOut | None]
    part_last: NotRequired[PartOut | None]
    important_part_last: NotRequired[PartOut | None]
    reply_last: NotRequired[PartOut | None]


class PartRef(TypedDict):
    """The part a write created: enough to find it again."""

    id: Id
    part_group: Id


class ConversationRef(TypedDict):
    id: Id


class MessageStarted(TypedDict):
    conversation: Id
    message: Id


class AdminRecord(AdminOut):
    email: str | None
    created: Ts
    # owner, administrator or operator.
    role: str


class TokenOut(TypedDict):
    id: Id
    name: str
    prefix: str
    scopes: list[str]
    created: Ts
    # When an inbox sign-in stops working; null for tokens made through the API.
    expires: Ts | None
    # The admin who issued it, whose role it acts with and whose removal ends it; null for
    # the command line's tokens, which act as an owner.
    issuer_admin: Id | None
    # An admin's inbox sign-in.
    session: bool


class TokenCreated(TokenOut):
    # Null when a retry answers a token created before: only its hash is stored.
    token: str | None


class AuditEntryOut(TypedDict):
    id: Id
    created: Ts
    # admin (an inbox session), token or cli (the command line).
    actor_kind: str
    actor_admin: Id | None
    actor_token: Id | None
    # admin.create, admin.remove, admin.role, token.create, token.revoke, token.reown,
    # webhook.create, webhook.remove, conversation.as_admin ...
    action: str
    object_type: str
    object_id: Id | None
    details: dict[str, Any]


class ErrorMeta(TypedDict):
    status: int
    # The vendor's machine name: BadRequest, NotFound, Throttled ...
    error: str
    # For a person; a bad parameter is named first (`count: ...`).
    error_message: str


class NoData(TypedDict):
    """The `{}` of an error."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]


class ErrorEnvelope(TypedDict):
    meta: ErrorMeta
    data: NoData


def error_responses(bad_request: str = "BadRequest") -> dict[int | str, dict[str, Any]]:
    """The error answers every router documents (`bad_request`: what 400 names)."""
    return {
        status: {"model": ErrorEnvelope, "description": name}
        for status, name in (
            (400, bad_request),
            (401, "AuthenticationFailed"),
            (403, "PermissionDenied"),
            (404, "NotFound (also for objects of another app)"),
            (409, "IdempotencyKeyReused (a random_id reused for different content)"),
            (429, "Throttled"),
            (503, "ServiceUnavailable (storage down, slow, full or read-only; see Retry-After)"),
        )
    }


@cache
def adapter(kind: Any) -> TypeAdapter[Any]:
    """One TypeAdapter per response type, built on first use and kept for the process."""
    return TypeAdapter(kind)
