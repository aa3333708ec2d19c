"""Plain data: a conversation's stored state and its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from threadline.core.enums import (
    AssistantType,
    AuthorKind,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
    SentVia,
)

JSONObject = dict[str, Any]
# What the user can do with a part (the vendor's reply `actions`): JSON objects, in order.
Actions = list[JSONObject]


@dataclass(frozen=True, slots=True)
class App:
    """A workspace (tenant): everything else belongs to exactly one app."""

    id: int
    name: str
    created: datetime
    default_channel_id: int | None
    default_sender_id: int | None


@dataclass(frozen=True, slots=True)
class Admin:
    """An operator. Embedded in conversations as `{id, name, avatar, type: "admin"}`."""

    id: int
    name: str
    avatar: str | None
    email: str | None
    created: datetime


@dataclass(frozen=True, slots=True)
class Sender:
    """A message sender: the name outbound messages (and the app's default replies) carry."""

    id: int
    name: str
    avatar: str | None
    # The part of the app's e-mail address before `@` ("" while it has none).
    email_name: str = ""
    # The app's default sender (its automatic replies and messages carry its name).
    is_default: bool = False


@dataclass(frozen=True, slots=True)
class Channel:
    """A group of conversations and the admins who work on it."""

    id: int
    name: str
    type: str
    avatar: str | None


@dataclass(frozen=True, slots=True)
class User:
    """An end user; `user_id` is the site's own id for them, `props` their name, e-mail..."""

    id: int
    user_id: str | None
    props: dict[str, Any]
    created: datetime
    removed: datetime | None


@dataclass(frozen=True, slots=True)
class Message:
    """An outbound (starter) message; its body becomes the first part of its conversation."""

    id: int
    type: ConversationType
    reply_type: ReplyType
    recipient_type: RecipientType
    sender_id: int | None
    admin_id: int | None
    body: str
    created: datetime


@dataclass(frozen=True, slots=True)
class Author:
    """Who performs an event. `id` is the internal id of the user, admin or sender; `name`
    is a bot's name (the vendor's `bot_name`: a bot is known by the name it writes under)."""

    kind: AuthorKind
    id: int | None = None
    name: str | None = None

    @staticmethod
    def system() -> Author:
        return Author(AuthorKind.SYSTEM)


@dataclass(frozen=True, slots=True)
class Attachment:
    id: int
    size: int
    filename: str
    mime_type: str
    # When the file was stored (just before its part); None for parts written before it
    # was kept with them, whose files date from their part.
    created: datetime | None = None


@dataclass(slots=True)
class Part:
    """One conversation part. A negative `id` is provisional: the part is not stored yet."""

    id: int
    conversation_id: int
    created: datetime
    type: PartType
    part_group: int
    author: Author
    sent_via: SentVia
    body: str = ""
    body_json: JSONObject | None = None
    read: bool = False
    attachments: tuple[Attachment, ...] = ()
    random_id: int | None = None
    random_kind: str | None = None
    external_id: str | None = None
    # The page the part was written on, and what the user can do with it: as the client
    # sent them (the vendor's reply and startconversation parameters).
    referrer: str | None = None
    actions: Actions | None = None
    tag: str | None = None
    assignee_id: int | None = None
    edited: datetime | None = None
    removed: datetime | None = None

    @property
    def direction(self) -> str:
        """Legacy field: `u2a` for the user's parts, `a2u` for everything else."""
        return "u2a" if self.type is PartType.REPLY_USER else "a2u"


@dataclass(slots=True)
class ConversationState:
    """Everything stored on a conversation row. Derived fields are kept exact by `rules.apply`."""

    id: int
    app_id: int
    user_id: int
    created: datetime
    sended_time: datetime
    last_update: datetime
    type: ConversationType | None = None
    reply_type: ReplyType | None = None
    recipient_type: RecipientType = RecipientType.ALL
    message_id: int | None = None
    status: MessageStatus | None = None
    external_service: str | None = None
    external_id: str | None = None
    channel_id: int | None = None
    assignee_id: int | None = None
    assistant_type: AssistantType | None = None
    removed: datetime | None = None
    replied: bool = False
    closed: bool = False
    delayed_until: datetime | None = None
    tags: tuple[str, ...] = ()
    part_group: int | None = None
    # Derived from the parts (see recompute.derive):
    parts_count: int = 0
    replies_count: int = 0
    admin_unread_count: int = 0
    user_unread_count: int = 0
    not_answered_admin_replies: int = 0
    reply_last_id: int | None = None
    reply_last_type: PartType | None = None
    part_last_id: int | None = None
    important_part_last_id: int | None = None
    last_user_reply_time: datetime | None = None
    last_admin_id: int | None = None
    important: bool = True
    # The user has read the first message (the first reply): true from the start when it
    # is the user's own, else once the user reads the conversation (see recompute.derive).
    read: bool = False
    # Starter-message flags (legacy, set by the message's own tracking):
    clicked: bool = False
    unsubscribed: bool = False
    start_random_id: int | None = field(default=None)

    def copy(self) -> ConversationState:
        """A shallow copy (every field is immutable), faster than `copy.copy` on slots."""
        twin = object.__new__(ConversationState)
        for name in _STATE_SLOTS:
            object.__setattr__(twin, name, getattr(self, name))
        return twin

    @property
    def unread_parts_count(self) -> int:
        """Deprecated vendor field, by definition equal to `user_unread_count`."""
        return self.user_unread_count

    def is_delayed(self, now: datetime) -> bool:
        return self.delayed_until is not None and now < self.delayed_until


_STATE_SLOTS = tuple(ConversationState.__dataclass_fields__)
