"""The vendor's closed vocabularies, as Python enums (values are the wire strings)."""

from enum import StrEnum


class PartType(StrEnum):
    REPLY_USER = "reply_user"
    REPLY_ADMIN = "reply_admin"
    NOTE = "note"
    ARTICLE = "article"
    AUTO_REPLY = "auto_reply"
    CHAT_BOT_ADMIN = "chat_bot_admin"
    CHAT_BOT_USER = "chat_bot_user"
    VOTE = "vote"
    ASSIGNED = "assigned"
    CLOSED = "closed"
    OPENED = "opened"
    DELAYED = "delayed"
    TAG_ADDED = "tag_added"
    TAG_DELETED = "tag_deleted"
    CHANNEL_CHANGED = "channel_changed"
    SERVICE = "service"


REPLY_TYPES = frozenset({PartType.REPLY_USER, PartType.REPLY_ADMIN})

SYSTEM_TYPES = frozenset(
    {
        PartType.ASSIGNED,
        PartType.CLOSED,
        PartType.OPENED,
        PartType.DELAYED,
        PartType.TAG_ADDED,
        PartType.TAG_DELETED,
        PartType.CHANNEL_CHANGED,
        PartType.SERVICE,
    }
)

# Non-reply parts an operator or bot may post as content (not system entries).
CONTENT_TYPES = frozenset(
    {
        PartType.NOTE,
        PartType.ARTICLE,
        PartType.AUTO_REPLY,
        PartType.CHAT_BOT_ADMIN,
        PartType.CHAT_BOT_USER,
        PartType.VOTE,
    }
)

# Parts the user never sees: notes and every system entry.
HIDDEN_FROM_USER = SYSTEM_TYPES | {PartType.NOTE}


class ConversationType(StrEnum):
    EMAIL = "email"
    INCOMING_EMAIL = "incoming_email"
    POPUP_SMALL = "popup_small"
    POPUP_BIG = "popup_big"
    BLOCK_POPUP_SMALL = "block_popup_small"
    BLOCK_POPUP_BIG = "block_popup_big"
    POPUP_CHAT = "popup_chat"
    LEAD_BOT = "lead_bot"
    ROUTING_BOT = "routing_bot"
    PUSH = "push"
    SDK_PUSH = "sdk_push"


class ReplyType(StrEnum):
    TEXT = "text"
    EMAIL = "email"
    PHONE = "phone"
    PUSH = "push"
    BUTTON = "button"
    NO = "no"


class MessageStatus(StrEnum):
    CREATED = "created"
    RENDERED = "rendered"
    SENT = "sent"
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DROPPED = "dropped"
    ERROR = "error"


class AssistantType(StrEnum):
    DIALOGFLOW = "dialogflow"
    LEAD_BOT = "lead_bot"
    ROUTING_BOT = "routing_bot"
    FACEBOOK_BOT = "facebook_bot"
    TELEGRAM_BOT = "telegram_bot"
    WIDGET_BOT = "widget_bot"


class RecipientType(StrEnum):
    ALL = "all"
    WEB = "web"
    SDK = "sdk"


class SentVia(StrEnum):
    WEB_USER = "web_user"
    WEB_PANEL = "web_panel"
    EMAIL_USER = "email_user"
    EMAIL_ADMIN = "email_admin"
    API = "api"
    MESSAGE_AUTO = "message_auto"
    MESSAGE_MANUAL = "message_manual"
    MESSAGE_CHAT_BOT = "message_chat_bot"
    INTEGRATIONS = "integrations"
    SYSTEM = "system"


class ChannelType(StrEnum):
    """The Channel object's `type` (the vendor's list). A channel an app makes for itself,
    its default one included, is `manual`."""

    EMAIL = "email"
    MOBILE = "mobile"
    MANUAL = "manual"
    VK = "vk"
    FACEBOOK = "facebook"
    INSTAGRAM = "instagram"
    TELEGRAM = "telegram"
    VIBER = "viber"
    WHATSAPP = "whatsapp"


class AuthorKind(StrEnum):
    """Who wrote a part: `from` is a user id, an Admin, a message sender or nobody."""

    USER = "user"
    ADMIN = "admin"
    BOT = "bot"
    SENDER = "sender"
    SYSTEM = "system"
