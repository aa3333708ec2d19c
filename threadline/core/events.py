"""The events that change a conversation, one class per row of the spec's event table.

`random_id`, where present, is the client's idempotency key (0 and None mean none).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from threadline.core.enums import (
    AssistantType,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
    SentVia,
)
from threadline.core.model import Actions, Attachment, Author, JSONObject


@dataclass(frozen=True, slots=True)
class UserReply:
    body: str = ""
    body_json: JSONObject | None = None
    attachments: tuple[Attachment, ...] = ()
    sent_via: SentVia = SentVia.WEB_USER
    random_id: int | None = None
    external_id: str | None = None
    referrer: str | None = None
    actions: Actions | None = None


@dataclass(frozen=True, slots=True)
class AdminReply:
    """A `reply_admin` from an admin, a bot or the app's default sender."""

    author: Author
    body: str = ""
    body_json: JSONObject | None = None
    attachments: tuple[Attachment, ...] = ()
    sent_via: SentVia = SentVia.WEB_PANEL
    random_id: int | None = None
    external_id: str | None = None
    referrer: str | None = None
    actions: Actions | None = None


@dataclass(frozen=True, slots=True)
class ContentPart:
    """A note, article, auto_reply, bot message or vote: shown in the inbox, not a reply."""

    type: PartType
    author: Author
    body: str = ""
    body_json: JSONObject | None = None
    attachments: tuple[Attachment, ...] = ()
    sent_via: SentVia = SentVia.WEB_PANEL
    random_id: int | None = None
    external_id: str | None = None
    referrer: str | None = None
    actions: Actions | None = None


@dataclass(frozen=True, slots=True)
class Assign:
    """Assign to `admin_id`, or unassign with None."""

    admin_id: int | None
    by: Author
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class Close:
    by: Author
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class Reopen:
    by: Author
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class Delay:
    """Snooze until `until` (must be in the future), or clear the snooze with None."""

    until: datetime | None
    by: Author
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class AddTag:
    """`strict` (API v2) refuses a tag the conversation has; otherwise it is a quiet no-op."""

    tag: str
    by: Author
    strict: bool = True
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class RemoveTag:
    tag: str
    by: Author
    strict: bool = True
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class ChangeChannel:
    channel_id: int | None
    by: Author
    random_id: int | None = None


@dataclass(frozen=True, slots=True)
class ReadByAdmin:
    pass


@dataclass(frozen=True, slots=True)
class ReadByUser:
    pass


@dataclass(frozen=True, slots=True)
class StartByMessage:
    """An outbound message opens the conversation; its body becomes the first `reply_admin`."""

    message_id: int
    type: ConversationType
    reply_type: ReplyType
    sender: Author
    body: str = ""
    body_json: JSONObject | None = None
    recipient_type: RecipientType = RecipientType.ALL
    status: MessageStatus = MessageStatus.CREATED
    sended_time: datetime | None = None
    sent_via: SentVia = SentVia.MESSAGE_MANUAL


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    status: MessageStatus


@dataclass(frozen=True, slots=True)
class BotTakeOver:
    assistant_type: AssistantType


@dataclass(frozen=True, slots=True)
class BotHandOff:
    """The bot leaves; with `admin_id` the conversation is assigned to that operator."""

    admin_id: int | None = None
    by: Author | None = None


@dataclass(frozen=True, slots=True)
class Remove:
    pass


Event = (
    UserReply
    | AdminReply
    | ContentPart
    | Assign
    | Close
    | Reopen
    | Delay
    | AddTag
    | RemoveTag
    | ChangeChannel
    | ReadByAdmin
    | ReadByUser
    | StartByMessage
    | UpdateStatus
    | BotTakeOver
    | BotHandOff
    | Remove
)
