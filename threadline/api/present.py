"""Conversations and parts as the API shows them, with their embedded objects batch-loaded.

One query per kind of embedded object per page (parts, admins, senders, users, channels,
the conversations' first parts, the users' presence), never one per row.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.apps import queries as app_q
from threadline.conversations import queries as conv_q
from threadline.conversations.formatting import body_html
from threadline.core.enums import AuthorKind, PartType, SentVia
from threadline.core.model import Attachment, Author, ConversationState, Part

_TAG_TYPES = frozenset({PartType.TAG_ADDED, PartType.TAG_DELETED})
# The vendor's constant `type` of its message-sender object (the app's default sender).
SENDER_TYPE = "message_sender"
# The name a bot's part shows when it was written without one (the vendor's default).
DEFAULT_BOT_NAME = "Bot"
# `sent_via` on the wire is one of the vendor's documented values (its ConversationPart
# page: web_user, web_panel, email_user, email_admin, app_android, app_chrome, app_desktop,
# message_auto, message_manual; "can be empty or missing: could not define"). Threadline's
# finer values stay stored; those the vendor has no word for are sent as the empty string.
VENDOR_SENT_VIA: dict[SentVia, str] = {
    SentVia.WEB_USER: "web_user",
    SentVia.WEB_PANEL: "web_panel",
    SentVia.EMAIL_USER: "email_user",
    SentVia.EMAIL_ADMIN: "email_admin",
    SentVia.MESSAGE_AUTO: "message_auto",
    SentVia.MESSAGE_MANUAL: "message_manual",
    # A chat bot's message is an automatic one in the vendor's terms.
    SentVia.MESSAGE_CHAT_BOT: "message_auto",
    SentVia.API: "",
    SentVia.INTEGRATIONS: "",
    SentVia.SYSTEM: "",
}


def admin_out(row: app_q.AdminRow | None, ident: int) -> dict[str, Any]:
    """The vendor's Admin object; `avatar` is a string (empty when there is none).
    `name_internal` (the name operators see among themselves) is the name: Threadline keeps
    one name per admin."""
    if row is None:
        return {"id": ident, "name": "", "avatar": "", "type": "admin", "name_internal": ""}
    return {
        "id": row.id,
        "name": row.name,
        "avatar": row.avatar or "",
        "type": "admin",
        "name_internal": row.name,
    }


def sender_out(row: app_q.SenderRow | None, ident: int) -> dict[str, Any]:
    """The vendor's message-sender object. Senders are never removed and are no bots in
    Threadline (a bot's part names its bot instead, see `bot_name`)."""
    return {
        "id": ident,
        "name": row.name if row else "",
        "email_name": row.email_name if row else "",
        "is_default": bool(row.is_default) if row else False,
        "is_removed": False,
        "is_bot": False,
        "avatar": (row.avatar if row else None) or "",
        "type": SENDER_TYPE,
    }


def channel_out(row: app_q.ChannelRow) -> dict[str, Any]:
    """The vendor's Channel object; `avatar` is a string (empty when there is none)."""
    return {"id": row.id, "name": row.name, "type": row.type, "avatar": row.avatar or ""}


# Which of an app's users (by id) are on the site now: (app id, user ids) -> those online.
PresenceSource = Callable[[int, Collection[int]], Awaitable[Collection[int]]]
# The vendor's User `presence` is online, idle or offline. Threadline knows whether a user
# has the chat widget open (a realtime stream of theirs, on any process): online; it does
# not follow their activity on the page, so it never says idle.
ONLINE = "online"
OFFLINE = "offline"


def user_out(row: app_q.UserRow, app_id: int, online: bool = False) -> dict[str, Any]:
    """The vendor's User object as a conversation embeds it: `id`, `app`, `user_id`,
    `presence`, `props`, `removed` (null unless the user was removed), `map_url` (empty:
    Threadline keeps no map of its users), and Threadline's `created`."""
    return {
        "id": row.id,
        "app": app_id,
        "user_id": row.user_id,
        "presence": ONLINE if online else OFFLINE,
        "props": row.props,
        "removed": row.removed,
        "map_url": "",
        "created": row.created,
    }


def attachment_url(base_url: str, attachment_id: int) -> str:
    return f"{base_url.rstrip('/')}/ext/attachments/{attachment_id}"


class Presenter:
    """Turns engine objects into answer dicts for one app, loading what they embed."""

    def __init__(
        self,
        conn: AsyncConnection | None,
        app_id: int,
        base_url: str,
        *,
        ids_as_strings: bool = False,
        presence: PresenceSource | None = None,
    ) -> None:
        # None: everything to show is known already (see `know`); a query would be a bug.
        self._conn = conn
        self.app_id = app_id
        self.base_url = base_url
        # `id_as_string`: the serializer turns the answer's typed ids into strings; ids
        # inside a system part's `body_json` are turned here.
        self.ids_as_strings = ids_as_strings
        self.admins: dict[int, app_q.AdminRow] = {}
        self.senders: dict[int, app_q.SenderRow] = {}
        # Conversation id -> the id of its first part (None: none of the parts to show).
        self._first: dict[int, int | None] = {}
        # Who tells the embedded users' presence (None: every user shows `offline`).
        self.presence = presence

    @property
    def conn(self) -> AsyncConnection:
        assert self._conn is not None, "this presenter has no connection to load with"
        return self._conn

    def use(self, conn: AsyncConnection) -> None:
        self._conn = conn

    def know(
        self, admins: Mapping[int, app_q.AdminRow], senders: Mapping[int, app_q.SenderRow]
    ) -> None:
        """People already read (by the write being answered): not loaded again."""
        self.admins.update(admins)
        self.senders.update(senders)

    def know_first(self, conversation_id: int, part_id: int | None) -> None:
        """The conversation's first part is `part_id` (None: none of the parts to show, an
        earlier one), known already (by the write being answered)."""
        self._first[conversation_id] = part_id

    def knows_all_of(self, parts: Iterable[Part]) -> bool:
        """Can `parts` be shown without loading anything?"""
        parts = list(parts)
        wanted_admins, wanted_senders = self._missing_people((), parts)
        return (
            not wanted_admins
            and not wanted_senders
            and all(p.conversation_id in self._first for p in parts)
        )

    def _missing_people(
        self, admin_ids: Iterable[int | None], parts: Iterable[Part]
    ) -> tuple[set[int], set[int]]:
        wanted_admins = set(i for i in admin_ids if i is not None)
        wanted_senders: set[int] = set()
        for part in parts:
            author = part.author
            if author.id is not None and author.kind is AuthorKind.ADMIN:
                wanted_admins.add(author.id)
            elif author.id is not None and author.kind is AuthorKind.SENDER:
                wanted_senders.add(author.id)
            if part.type is PartType.ASSIGNED and part.assignee_id is not None:
                wanted_admins.add(part.assignee_id)
        return wanted_admins - self.admins.keys(), wanted_senders - self.senders.keys()

    async def _load(self, admin_ids: Iterable[int | None], parts: Iterable[Part]) -> None:
        parts = list(parts)
        wanted_admins, wanted_senders = self._missing_people(admin_ids, parts)
        unknown_first = {p.conversation_id for p in parts} - self._first.keys()
        if unknown_first:
            found = await conv_q.first_part_ids(self.conn, unknown_first)
            self._first.update({c: found.get(c) for c in unknown_first})
        if wanted_admins:
            self.admins.update(await app_q.admins_by_id(self.conn, self.app_id, wanted_admins))
        if wanted_senders:
            self.senders.update(await app_q.senders_by_id(self.conn, self.app_id, wanted_senders))

    def _admin(self, ident: int | None) -> dict[str, Any] | None:
        return None if ident is None else admin_out(self.admins.get(ident), ident)

    def _author(self, author: Author) -> Any:
        kind, ident = author.kind, author.id
        if kind is AuthorKind.USER:
            return ident
        if kind is AuthorKind.ADMIN:
            return self._admin(ident)
        if kind is AuthorKind.SENDER and ident is not None:
            return sender_out(self.senders.get(ident), ident)
        if kind is AuthorKind.BOT:
            # The vendor's reply `bot_name`: the part's author shows as that bot.
            return {
                "id": ident,
                "name": author.name or DEFAULT_BOT_NAME,
                "avatar": "",
                "type": "bot",
            }
        return None

    def _attachment(self, a: Attachment, part: Part) -> dict[str, Any]:
        return {
            "type": "file",
            "id": a.id,
            "size": a.size,
            "filename": a.filename,
            "mime_type": a.mime_type,
            "url": attachment_url(self.base_url, a.id),
            # A file is stored by the request that writes its part, just before it; parts
            # from before files kept their time carry the part's.
            "created": a.created or part.created,
        }

    def part(self, p: Part) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": p.id,
            "created": p.created,
            "edited": p.edited,
            "removed": p.removed,
            "conversation": p.conversation_id,
            "part_group": p.part_group,
            "body": p.body,
            # How the screens show the body (sanitised HTML; see conversations/formatting).
            "body_html": body_html(p),
            "body_json": self._body_json(p),
            "type": p.type.value,
            "from": self._author(p.author),
            "direction": p.direction,
            "sent_via": VENDOR_SENT_VIA[p.sent_via],
            "read": p.read,
            "attachments": [self._attachment(a, p) for a in p.attachments],
            "random_id": p.random_id,
            "external_id": p.external_id,
            "referrer": p.referrer,
            "actions": p.actions,
        }
        if self._first.get(p.conversation_id) == p.id:
            # The vendor's page: "true if this part is the first part of conversation,
            # else, this field is not shown".
            out["first"] = True
        if p.type in _TAG_TYPES:
            out["tag"] = p.tag
        elif p.type is PartType.ASSIGNED:
            out["assignee"] = self._admin(p.assignee_id)
        return out

    def _body_json(self, p: Part) -> Any:
        body_json = p.body_json
        if self.ids_as_strings and p.type is PartType.CHANNEL_CHANGED and body_json:
            channel = body_json.get("channel")
            if isinstance(channel, int) and not isinstance(channel, bool):
                return {**body_json, "channel": str(channel)}
        return body_json

    async def parts(self, parts: Sequence[Part]) -> list[dict[str, Any]]:
        await self._load((), parts)
        return [self.part(p) for p in parts]

    async def conversations(
        self,
        states: Sequence[ConversationState],
        *,
        user: bool = True,
        channel: bool = False,
        embeds: bool = True,
    ) -> list[dict[str, Any]]:
        parts: dict[int, Part] = {}
        if embeds:
            parts = await conv_q.parts_by_id(
                self.conn,
                [s.id for s in states],
                [
                    i
                    for s in states
                    for i in (s.part_last_id, s.important_part_last_id, s.reply_last_id)
                ],
            )
        await self._load(
            [i for s in states for i in (s.assignee_id, s.last_admin_id)], parts.values()
        )
        users = (
            await app_q.users_by_id(self.conn, self.app_id, [s.user_id for s in states])
            if user
            else {}
        )
        online: Collection[int] = (
            await self.presence(self.app_id, {s.user_id for s in states})
            if user and self.presence is not None and states
            else ()
        )
        channels = (
            await app_q.channels_by_id(self.conn, self.app_id, [s.channel_id for s in states])
            if channel
            else {}
        )
        answer = []
        for s in states:
            out = self.conversation(s)
            if user:
                row = users.get(s.user_id)
                out["user"] = user_out(
                    row or app_q.UserRow(s.user_id, None, {}, s.created, None),
                    self.app_id,
                    s.user_id in online,
                )
            if channel:
                found = channels.get(s.channel_id) if s.channel_id is not None else None
                out["channel"] = channel_out(found) if found else None
            if embeds:
                for key, ident in (
                    ("part_last", s.part_last_id),
                    ("important_part_last", s.important_part_last_id),
                    ("reply_last", s.reply_last_id),
                ):
                    found_part = parts.get(ident) if ident is not None else None
                    out[key] = self.part(found_part) if found_part else None
            answer.append(out)
        return answer

    def conversation(self, s: ConversationState) -> dict[str, Any]:
        """The standard fields (embedded admins must be loaded already)."""
        return {
            "id": s.id,
            "created": s.created,
            "replied": s.replied,
            "delayed_until": s.delayed_until,
            "closed": s.closed,
            "message": s.message_id,
            "type": s.type.value if s.type else None,
            "reply_type": s.reply_type.value if s.reply_type else None,
            "removed": s.removed,
            "reply_last_type": s.reply_last_type.value if s.reply_last_type else None,
            "parts_count": s.parts_count,
            "assignee": self._admin(s.assignee_id),
            "sended_time": s.sended_time,
            "admin_unread_count": s.admin_unread_count,
            "user_unread_count": s.user_unread_count,
            "not_answered_admin_replies": s.not_answered_admin_replies,
            "unread_parts_count": s.unread_parts_count,
            "replies_count": s.replies_count,
            "last_admin": self._admin(s.last_admin_id),
            "last_update": s.last_update,
            "tags": list(s.tags),
            "important": s.important,
            "external_service": s.external_service,
            "external_id": s.external_id,
            "last_user_reply_time": s.last_user_reply_time,
            "status": s.status.value if s.status else None,
            "assistant_type": s.assistant_type.value if s.assistant_type else None,
            "recipient_type": s.recipient_type.value,
            "read": s.read,
            "clicked": s.clicked,
            "unsubscribed": s.unsubscribed,
        }
