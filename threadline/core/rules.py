"""How each event changes a conversation: the spec's event table as one pure function.

`apply(state, event, now)` never mutates its input. New parts get provisional negative
ids (-1, -2, ...); storage replaces them with real ids through `Change.with_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from threadline.core import events as ev
from threadline.core.enums import (
    CONTENT_TYPES,
    REPLY_TYPES,
    SYSTEM_TYPES,
    AuthorKind,
    ConversationType,
    PartType,
    ReplyType,
    SentVia,
)
from threadline.core.errors import (
    ConversationRemoved,
    InvalidParameter,
    ReplyTooBig,
    TagAlreadyAssigned,
    TagNotAssigned,
)
from threadline.core.model import (
    Actions,
    Attachment,
    Author,
    ConversationState,
    JSONObject,
    Part,
)

# Bodies are chat messages or e-mails, not documents; 64 KiB of text covers long e-mails.
MAX_BODY_CHARS = 65_536
MAX_TAG_CHARS = 255
# A page address, as a browser sends it (Chromium cuts a Referer header at 4 KiB).
MAX_REFERRER_CHARS = 4096
# A conversation its user starts (in the chat, through the API or a messenger) is, in the
# vendor's objects, a chat that expects text: its own example of one shows these two.
USER_STARTED_TYPE = ConversationType.POPUP_CHAT
USER_STARTED_REPLY_TYPE = ReplyType.TEXT


class MarkRead(StrEnum):
    """Which existing parts a change marks as read."""

    USER_PARTS_BY_ADMIN = "user_parts_by_admin"
    ADMIN_PARTS_BY_USER = "admin_parts_by_user"


@dataclass(slots=True)
class Change:
    """The outcome of one event: the new state, the parts to insert, side effects on old parts."""

    state: ConversationState
    parts: list[Part] = field(default_factory=list)
    mark_read: MarkRead | None = None
    erase: bool = False
    changed: bool = True

    def with_ids(self, real_ids: list[int]) -> None:
        """Replace the provisional part ids (in `parts` order) with the stored ones, in place."""
        mapping = {part.id: real for part, real in zip(self.parts, real_ids, strict=True)}

        def real(ident: int | None) -> int | None:
            return mapping.get(ident, ident) if ident is not None else None

        for part in self.parts:
            part.id = mapping[part.id]
            part.part_group = mapping.get(part.part_group, part.part_group)
        s = self.state
        s.part_group = real(s.part_group)
        s.reply_last_id = real(s.reply_last_id)
        s.part_last_id = real(s.part_last_id)
        s.important_part_last_id = real(s.important_part_last_id)


def is_important(state: ConversationState) -> bool:
    return state.reply_last_type is PartType.REPLY_USER or state.assignee_id is None


def unchanged(state: ConversationState) -> Change:
    return Change(state=state, changed=False)


class _Builder:
    """Accumulates one event's effects on a private copy of the state."""

    def __init__(self, state: ConversationState, now: datetime) -> None:
        self.state = state.copy()
        self.now = now
        self.parts: list[Part] = []
        self.mark_read: MarkRead | None = None

    def add_part(
        self,
        type_: PartType,
        author: Author,
        sent_via: SentVia,
        *,
        new_group: bool = False,
        body: str = "",
        body_json: JSONObject | None = None,
        attachments: tuple[Attachment, ...] = (),
        random_id: int | None = None,
        random_kind: str | None = None,
        external_id: str | None = None,
        referrer: str | None = None,
        actions: Actions | None = None,
        tag: str | None = None,
        assignee_id: int | None = None,
    ) -> Part:
        s = self.state
        provisional_id = -(len(self.parts) + 1)
        if new_group or s.part_group is None:
            s.part_group = provisional_id
        part = Part(
            id=provisional_id,
            conversation_id=s.id,
            created=self.now,
            type=type_,
            part_group=s.part_group,
            author=author,
            sent_via=sent_via,
            body=body,
            body_json=body_json,
            attachments=attachments,
            random_id=random_id or None,
            random_kind=random_kind if random_id else None,
            external_id=external_id,
            referrer=referrer,
            actions=actions,
            tag=tag,
            assignee_id=assignee_id,
        )
        self.parts.append(part)
        s.parts_count += 1
        s.part_last_id = part.id
        if type_ not in SYSTEM_TYPES:
            s.important_part_last_id = part.id
        if type_ in REPLY_TYPES:
            s.replies_count += 1
            s.reply_last_id = part.id
            s.reply_last_type = type_
            s.last_update = self.now
        return part

    def system_part(
        self,
        type_: PartType,
        by: Author,
        kind: str,
        random_id: int | None,
        **extra: Any,
    ) -> Part:
        return self.add_part(
            type_, by, SentVia.SYSTEM, random_id=random_id, random_kind=kind, **extra
        )

    def assign(self, admin_id: int | None, by: Author, random_id: int | None) -> bool:
        s = self.state
        if admin_id == s.assignee_id:
            return False
        s.assignee_id = admin_id
        self.system_part(PartType.ASSIGNED, by, "assign", random_id, assignee_id=admin_id)
        if s.assistant_type is not None:
            s.assistant_type = None
            s.replied = True
        s.important = is_important(s)
        return True

    def done(self, erase: bool = False) -> Change:
        return Change(state=self.state, parts=self.parts, mark_read=self.mark_read, erase=erase)


def check_body(
    body: str, body_json: JSONObject | None, attachments: tuple[Attachment, ...]
) -> None:
    if len(body) > MAX_BODY_CHARS:
        raise ReplyTooBig(f"body: {len(body)} characters, at most {MAX_BODY_CHARS} allowed")
    if not body.strip() and not attachments and not body_json:
        raise InvalidParameter("body", "must not be empty without an attachment")


def check_page_and_actions(referrer: str | None, actions: Actions | None) -> None:
    """A part's `referrer` (the page it was written on) and `actions` (what the user can do
    with it: JSON objects)."""
    if referrer is not None and len(referrer) > MAX_REFERRER_CHARS:
        raise InvalidParameter("referrer", f"at most {MAX_REFERRER_CHARS} characters")
    if actions is not None and not all(isinstance(action, dict) for action in actions):
        raise InvalidParameter("actions", "must be an array of JSON objects")


def check_tag(tag: str) -> str:
    if not tag.strip():
        raise InvalidParameter("tag", "must not be empty")
    if len(tag) > MAX_TAG_CHARS:
        raise InvalidParameter("tag", f"at most {MAX_TAG_CHARS} characters")
    return tag


def _user_reply(b: _Builder, e: ev.UserReply) -> Change:
    check_body(e.body, e.body_json, e.attachments)
    check_page_and_actions(e.referrer, e.actions)
    s = b.state
    if s.parts_count == 0 and s.type is None:
        # The user writes first: `type` and `reply_type` are set by the very first reply.
        s.type = USER_STARTED_TYPE
        s.reply_type = USER_STARTED_REPLY_TYPE
    if s.replies_count == 0:
        # The user's reply is the conversation's first message: `read` (the user has read
        # the first message) is true, as the vendor's page says of user-started ones.
        s.read = True
    b.add_part(
        PartType.REPLY_USER,
        Author(AuthorKind.USER, s.user_id),
        e.sent_via,
        new_group=s.closed,
        body=e.body,
        body_json=e.body_json,
        attachments=e.attachments,
        random_id=e.random_id,
        random_kind="reply",
        external_id=e.external_id,
        referrer=e.referrer,
        actions=e.actions,
    )
    s.admin_unread_count += 1
    s.not_answered_admin_replies += 1
    s.last_user_reply_time = b.now
    s.replied = True
    s.closed = False
    s.delayed_until = None
    s.important = True
    return b.done()


def _operator_reply(
    b: _Builder,
    author: Author,
    sent_via: SentVia,
    body: str,
    body_json: JSONObject | None,
    attachments: tuple[Attachment, ...],
    random_id: int | None,
    external_id: str | None,
    referrer: str | None = None,
    actions: Actions | None = None,
) -> None:
    if author.kind is AuthorKind.USER:
        raise InvalidParameter("from_admin", "an operator reply needs an admin, bot or sender")
    check_body(body, body_json, attachments)
    check_page_and_actions(referrer, actions)
    s = b.state
    b.add_part(
        PartType.REPLY_ADMIN,
        author,
        sent_via,
        body=body,
        body_json=body_json,
        attachments=attachments,
        random_id=random_id,
        random_kind="reply",
        external_id=external_id,
        referrer=referrer,
        actions=actions,
    )
    s.user_unread_count += 1
    s.not_answered_admin_replies = 0
    if s.admin_unread_count:
        s.admin_unread_count = 0
        b.mark_read = MarkRead.USER_PARTS_BY_ADMIN
    if author.kind is AuthorKind.ADMIN:
        s.last_admin_id = author.id
    s.important = is_important(s)


def _admin_reply(b: _Builder, e: ev.AdminReply) -> Change:
    _operator_reply(
        b,
        e.author,
        e.sent_via,
        e.body,
        e.body_json,
        e.attachments,
        e.random_id,
        e.external_id,
        e.referrer,
        e.actions,
    )
    return b.done()


def _content_part(b: _Builder, e: ev.ContentPart) -> Change:
    if e.type not in CONTENT_TYPES:
        raise InvalidParameter("type", f"{e.type} is not a note or content part")
    if e.author.kind is AuthorKind.USER:
        raise InvalidParameter("from_admin", f"a {e.type} part is written by an operator")
    check_body(e.body, e.body_json, e.attachments)
    check_page_and_actions(e.referrer, e.actions)
    b.add_part(
        e.type,
        e.author,
        e.sent_via,
        body=e.body,
        body_json=e.body_json,
        attachments=e.attachments,
        random_id=e.random_id,
        random_kind="reply",
        external_id=e.external_id,
        referrer=e.referrer,
        actions=e.actions,
    )
    return b.done()


def _assign(b: _Builder, e: ev.Assign) -> Change:
    return b.done() if b.assign(e.admin_id, e.by, e.random_id) else unchanged(b.state)


def _close(b: _Builder, e: ev.Close) -> Change:
    if b.state.closed:
        return unchanged(b.state)
    b.state.closed = True
    b.system_part(PartType.CLOSED, e.by, "close", e.random_id)
    return b.done()


def _reopen(b: _Builder, e: ev.Reopen) -> Change:
    if not b.state.closed:
        return unchanged(b.state)
    b.state.closed = False
    b.system_part(PartType.OPENED, e.by, "reopen", e.random_id)
    return b.done()


def _delay(b: _Builder, e: ev.Delay) -> Change:
    s = b.state
    if e.until is not None and e.until <= b.now:
        raise InvalidParameter("until", "must be in the future")
    if e.until == s.delayed_until:
        return unchanged(s)
    s.delayed_until = e.until
    until = e.until.timestamp() if e.until is not None else None
    b.system_part(PartType.DELAYED, e.by, "delay", e.random_id, body_json={"delayed_until": until})
    return b.done()


def _add_tag(b: _Builder, e: ev.AddTag) -> Change:
    tag = check_tag(e.tag)
    s = b.state
    if tag in s.tags:
        if e.strict:
            raise TagAlreadyAssigned(f"tag {tag!r} is already on the conversation")
        return unchanged(s)
    s.tags = (*s.tags, tag)
    b.system_part(PartType.TAG_ADDED, e.by, "tag", e.random_id, tag=tag)
    return b.done()


def _remove_tag(b: _Builder, e: ev.RemoveTag) -> Change:
    tag = check_tag(e.tag)
    s = b.state
    if tag not in s.tags:
        if e.strict:
            raise TagNotAssigned(f"tag {tag!r} is not on the conversation")
        return unchanged(s)
    s.tags = tuple(t for t in s.tags if t != tag)
    b.system_part(PartType.TAG_DELETED, e.by, "untag", e.random_id, tag=tag)
    return b.done()


def _change_channel(b: _Builder, e: ev.ChangeChannel) -> Change:
    s = b.state
    if e.channel_id == s.channel_id:
        return unchanged(s)
    s.channel_id = e.channel_id
    b.system_part(
        PartType.CHANNEL_CHANGED, e.by, "channel", e.random_id, body_json={"channel": e.channel_id}
    )
    return b.done()


def _read_by_admin(b: _Builder, _e: ev.ReadByAdmin) -> Change:
    if not b.state.admin_unread_count:
        return unchanged(b.state)
    b.state.admin_unread_count = 0
    b.mark_read = MarkRead.USER_PARTS_BY_ADMIN
    return b.done()


def _read_by_user(b: _Builder, _e: ev.ReadByUser) -> Change:
    # Always a change: besides the replies counted in user_unread_count, the user may have
    # unread articles, auto-replies, bot messages or votes to mark read.
    b.state.user_unread_count = 0
    b.mark_read = MarkRead.ADMIN_PARTS_BY_USER
    if b.state.replies_count:
        # The first message (the first reply, an operator's or a message's) is read now.
        b.state.read = True
    return b.done()


def _start_by_message(b: _Builder, e: ev.StartByMessage) -> Change:
    s = b.state
    if s.parts_count:
        raise InvalidParameter("message", "the conversation has already started")
    s.message_id = e.message_id
    s.type = e.type
    s.reply_type = e.reply_type
    s.recipient_type = e.recipient_type
    s.status = e.status
    s.sended_time = e.sended_time or b.now
    _operator_reply(b, e.sender, e.sent_via, e.body, e.body_json, (), None, None)
    return b.done()


def _update_status(b: _Builder, e: ev.UpdateStatus) -> Change:
    s = b.state
    if s.message_id is None:
        raise InvalidParameter("status", "no message started this conversation")
    if s.status is e.status:
        return unchanged(s)
    s.status = e.status
    return b.done()


def _bot_take_over(b: _Builder, e: ev.BotTakeOver) -> Change:
    if b.state.assistant_type is e.assistant_type:
        return unchanged(b.state)
    b.state.assistant_type = e.assistant_type
    return b.done()


def _bot_hand_off(b: _Builder, e: ev.BotHandOff) -> Change:
    s = b.state
    by = e.by or Author.system()
    if s.assistant_type is None:
        # No bot to hand off from: only the requested assignment, if any, is left to do.
        return _assign(b, ev.Assign(e.admin_id, by)) if e.admin_id is not None else unchanged(s)
    previous = s.assistant_type
    s.assistant_type = None
    s.replied = True
    b.system_part(
        PartType.SERVICE,
        by,
        "assistant",
        None,
        body_json={"event": "bot_hand_off", "assistant_type": previous.value},
    )
    if e.admin_id is not None:
        b.assign(e.admin_id, by, None)
    return b.done()


def _remove(b: _Builder, _e: ev.Remove) -> Change:
    b.state.removed = b.now
    return b.done(erase=True)


_HANDLERS: dict[type[Any], Any] = {
    ev.UserReply: _user_reply,
    ev.AdminReply: _admin_reply,
    ev.ContentPart: _content_part,
    ev.Assign: _assign,
    ev.Close: _close,
    ev.Reopen: _reopen,
    ev.Delay: _delay,
    ev.AddTag: _add_tag,
    ev.RemoveTag: _remove_tag,
    ev.ChangeChannel: _change_channel,
    ev.ReadByAdmin: _read_by_admin,
    ev.ReadByUser: _read_by_user,
    ev.StartByMessage: _start_by_message,
    ev.UpdateStatus: _update_status,
    ev.BotTakeOver: _bot_take_over,
    ev.BotHandOff: _bot_hand_off,
    ev.Remove: _remove,
}


def apply(state: ConversationState, event: ev.Event, now: datetime) -> Change:
    """Apply one event. Raises a `DomainError` (and changes nothing) when it is refused."""
    if state.removed is not None:
        if isinstance(event, ev.Remove):
            return unchanged(state)
        raise ConversationRemoved(state.id)
    handler = _HANDLERS[type(event)]
    change: Change = handler(_Builder(state, now), event)
    return change


def new_conversation(
    *, conversation_id: int, app_id: int, user_id: int, now: datetime, channel_id: int | None
) -> ConversationState:
    """A conversation before its first part: created = sended_time = last_update = now."""
    return ConversationState(
        id=conversation_id,
        app_id=app_id,
        user_id=user_id,
        created=now,
        sended_time=now,
        last_update=now,
        channel_id=channel_id,
    )
