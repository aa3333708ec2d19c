"""What the event log records for each committed change: one pure function of (before, Change).

Each change of a conversation becomes one or more log events, in the order they happened:

- `conversation_started`: a new conversation (its `changes` hold every field);
- `conversation_reply`: a reply, note, article, auto-reply, bot message or vote part;
- `conversation_assigned`, `_closed`, `_reopened`, `_delayed`, `_tag_added`,
  `_tag_deleted`, `_channel_changed`, `_service`: the system part of that type;
- `conversation_read`: parts marked read, no part added (`read_by`: `admin` or `user`);
- `conversation_removed`: the conversation was erased;
- `conversation_updated`: fields changed with no part (delivery status, a bot taking
  over, a repair);
- `conversation_delivery`: a part sent out through a channel (an operator's e-mail reply)
  changed its delivery state (`sent`, `failed`, `bounced`; see threadline.core.delivery):
  `part` names it, `delivery` holds its new state (`delivery_data`). No conversation
  field changes; the operators' record only, never on a user's channels.

A payload is small: the new part's id and type, and `changes`, the conversation's public
fields that the change set, with their new values (ids for embedded objects, Unix seconds
for times). A change's field updates ride on its last log event, so applying the events
of a conversation in order, merging each `changes`, gives the conversation's fields.
`read_by` on any event says the change marked the other side's parts read.

`user_view` is the projection a user's own realtime channels carry: no notes, no system
parts, none of the operators' bookkeeping fields (tags, assignee, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from threadline.core.enums import HIDDEN_FROM_USER, PartType
from threadline.core.model import ConversationState, JSONObject
from threadline.core.rules import Change, MarkRead

STARTED = "conversation_started"
REPLY = "conversation_reply"
READ = "conversation_read"
REMOVED = "conversation_removed"
UPDATED = "conversation_updated"
DELIVERY = "conversation_delivery"

PART_EVENT: dict[PartType, str] = {
    PartType.ASSIGNED: "conversation_assigned",
    PartType.CLOSED: "conversation_closed",
    PartType.OPENED: "conversation_reopened",
    PartType.DELAYED: "conversation_delayed",
    PartType.TAG_ADDED: "conversation_tag_added",
    PartType.TAG_DELETED: "conversation_tag_deleted",
    PartType.CHANNEL_CHANGED: "conversation_channel_changed",
    PartType.SERVICE: "conversation_service",
}
EVENT_TYPES = (STARTED, REPLY, *PART_EVENT.values(), READ, REMOVED, UPDATED, DELIVERY)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unix_seconds(value: datetime | None) -> int | float | None:
    """Whole seconds as an int, with microseconds as a decimal number (the API's rule)."""
    if value is None:
        return None
    delta = value - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds + delta.microseconds / 1_000_000 if delta.microseconds else seconds


def _enum(value: Any) -> str | None:
    return None if value is None else str(value.value)


def _tags(value: tuple[str, ...]) -> list[str]:
    return list(value)


# The conversation's public fields (the API's names): the state attribute each is read from
# and how its value is written (None: as it is). Embedded objects (assignee, last_admin,
# channel, the last parts) are given by id.
FIELDS: tuple[tuple[str, str, Callable[[Any], Any] | None], ...] = (
    ("created", "created", unix_seconds),
    ("replied", "replied", None),
    ("delayed_until", "delayed_until", unix_seconds),
    ("closed", "closed", None),
    ("message", "message_id", None),
    ("type", "type", _enum),
    ("reply_type", "reply_type", _enum),
    ("removed", "removed", unix_seconds),
    ("reply_last_type", "reply_last_type", _enum),
    ("parts_count", "parts_count", None),
    ("assignee", "assignee_id", None),
    ("sended_time", "sended_time", unix_seconds),
    ("admin_unread_count", "admin_unread_count", None),
    ("user_unread_count", "user_unread_count", None),
    ("not_answered_admin_replies", "not_answered_admin_replies", None),
    ("unread_parts_count", "user_unread_count", None),  # deprecated twin of the above
    ("replies_count", "replies_count", None),
    ("last_admin", "last_admin_id", None),
    ("last_update", "last_update", unix_seconds),
    ("tags", "tags", _tags),
    ("important", "important", None),
    ("external_service", "external_service", None),
    ("external_id", "external_id", None),
    ("last_user_reply_time", "last_user_reply_time", unix_seconds),
    ("status", "status", _enum),
    ("assistant_type", "assistant_type", _enum),
    ("recipient_type", "recipient_type", _enum),
    ("read", "read", None),
    ("clicked", "clicked", None),
    ("unsubscribed", "unsubscribed", None),
    ("channel", "channel_id", None),
    ("reply_last", "reply_last_id", None),
    ("part_last", "part_last_id", None),
    ("important_part_last", "important_part_last_id", None),
)
FIELD_NAMES = tuple(name for name, _, _ in FIELDS)
# Fields whose values are object ids (served as strings under `id_as_string`).
ID_FIELDS = frozenset(
    {
        "message",
        "assignee",
        "last_admin",
        "channel",
        "reply_last",
        "part_last",
        "important_part_last",
    }
)
# The operators' bookkeeping, left out of a user's view: besides the tags and the assignee,
# anything that counts or points at notes and system parts.
USER_HIDDEN_FIELDS = frozenset(
    {
        "tags",
        "assignee",
        "channel",
        "assistant_type",
        "parts_count",
        "admin_unread_count",
        "not_answered_admin_replies",
        "part_last",
        "important_part_last",
    }
)
_READ_BY = {MarkRead.USER_PARTS_BY_ADMIN: "admin", MarkRead.ADMIN_PARTS_BY_USER: "user"}


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One entry to append: its type, the conversation (and its user) and the payload."""

    type: str
    conversation_id: int
    user_id: int
    data: JSONObject


def public_fields(state: ConversationState) -> JSONObject:
    fields: JSONObject = {}
    for name, attr, write in FIELDS:
        value = getattr(state, attr)
        fields[name] = value if write is None else write(value)
    return fields


def changed_fields(before: ConversationState, after: ConversationState) -> JSONObject:
    """The public fields whose value differs, with their new values."""
    changed: JSONObject = {}
    for name, attr, write in FIELDS:
        value = getattr(after, attr)
        if value != getattr(before, attr):
            changed[name] = value if write is None else write(value)
    return changed


def part_event_type(part_type: PartType) -> str:
    return PART_EVENT.get(part_type, REPLY)


def derive(before: ConversationState | None, change: Change) -> list[LogEvent]:
    """The log events of one applied change; `before` is None for a new conversation.

    Parts must carry their stored ids (`Change.with_ids` was called).
    """
    if not change.changed:
        return []
    after = change.state
    cid, uid = after.id, after.user_id
    out: list[JSONObject] = []
    types: list[str] = []
    if before is None:
        types.append(STARTED)
        out.append(
            {
                "started_by": "user" if after.message_id is None else "message",
                "changes": public_fields(after),
            }
        )
        changes: JSONObject = {}
    else:
        changes = changed_fields(before, after)
    for part in change.parts:
        types.append(part_event_type(part.type))
        out.append({"part": {"id": part.id, "type": part.type.value}})
    if change.erase:
        types.append(REMOVED)
        out.append({})
    elif change.mark_read is not None and not change.parts:
        types.append(READ)
        out.append({})
    elif not out:
        if not changes:
            return []
        types.append(UPDATED)
        out.append({})
    last = out[-1]
    if changes:
        last["changes"] = changes
    if change.mark_read is not None:
        last["read_by"] = _READ_BY[change.mark_read]
    return [LogEvent(t, cid, uid, data) for t, data in zip(types, out, strict=True)]


def delivery_event(
    conversation_id: int,
    user_id: int,
    part_id: int,
    part_type: PartType,
    delivery: JSONObject,
) -> LogEvent:
    """The log event of a part's new delivery state. `delivery`: `channel`, `status`,
    `message_id`, `attempts`, `relay_code`, `relay_answer`, and for a bounce `bounce`
    (the report's `status`, `diagnostic` and `recipient`)."""
    return LogEvent(
        DELIVERY,
        conversation_id,
        user_id,
        {"part": {"id": part_id, "type": part_type.value}, "delivery": delivery},
    )


def user_view(event_type: str, data: JSONObject) -> JSONObject | None:
    """The payload as the conversation's user may see it, or None when it is not for them."""
    if event_type == DELIVERY:
        return None
    part = data.get("part")
    if part is not None and PartType(part["type"]) in HIDDEN_FROM_USER:
        return None
    changes = data.get("changes")
    if changes is None:
        return data
    visible = {k: v for k, v in changes.items() if k not in USER_HIDDEN_FIELDS}
    if not visible and part is None and event_type == UPDATED:
        return None
    return {**data, "changes": visible}
