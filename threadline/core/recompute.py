"""Derived fields recomputed from the parts alone: what `threadline check` compares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from threadline.core.enums import REPLY_TYPES, SYSTEM_TYPES, AuthorKind, PartType
from threadline.core.model import ConversationState, Part


@dataclass(frozen=True, slots=True)
class Derived:
    parts_count: int
    replies_count: int
    admin_unread_count: int
    user_unread_count: int
    not_answered_admin_replies: int
    reply_last_id: int | None
    reply_last_type: PartType | None
    part_last_id: int | None
    important_part_last_id: int | None
    last_update: datetime
    last_user_reply_time: datetime | None
    last_admin_id: int | None
    important: bool
    tags: tuple[str, ...]
    read: bool


DERIVED_FIELDS = tuple(Derived.__dataclass_fields__)


def derive(state: ConversationState, parts: Iterable[Part]) -> Derived:
    """Recompute from `parts` (any order). Uses only `created` and `assignee_id` of the state."""
    ordered = sorted(parts, key=lambda p: p.id)
    parts_count = replies_count = admin_unread = user_unread = not_answered = 0
    reply_last: Part | None = None
    part_last: Part | None = None
    important_last: Part | None = None
    last_user_reply_time: datetime | None = None
    last_admin_id: int | None = None
    tags: list[str] = []
    first_reply: Part | None = None
    for part in ordered:
        parts_count += 1
        part_last = part
        if part.type not in SYSTEM_TYPES:
            important_last = part
        if first_reply is None and part.type in REPLY_TYPES:
            first_reply = part
        if part.type is PartType.REPLY_USER:
            replies_count += 1
            reply_last = part
            last_user_reply_time = part.created
            not_answered += 1
            admin_unread += not part.read
        elif part.type is PartType.REPLY_ADMIN:
            replies_count += 1
            reply_last = part
            not_answered = 0
            user_unread += not part.read
            if part.author.kind is AuthorKind.ADMIN:
                last_admin_id = part.author.id
        elif part.type is PartType.TAG_ADDED and part.tag is not None:
            if part.tag not in tags:
                tags.append(part.tag)
        elif part.type is PartType.TAG_DELETED and part.tag in tags:
            tags.remove(part.tag)
    reply_last_type = reply_last.type if reply_last else None
    return Derived(
        parts_count=parts_count,
        replies_count=replies_count,
        admin_unread_count=admin_unread,
        user_unread_count=user_unread,
        not_answered_admin_replies=not_answered,
        reply_last_id=reply_last.id if reply_last else None,
        reply_last_type=reply_last_type,
        part_last_id=part_last.id if part_last else None,
        important_part_last_id=important_last.id if important_last else None,
        last_update=reply_last.created if reply_last else state.created,
        last_user_reply_time=last_user_reply_time,
        last_admin_id=last_admin_id,
        important=reply_last_type is PartType.REPLY_USER or state.assignee_id is None,
        tags=tuple(tags),
        # The user has read the conversation's first message (its first reply): always so
        # when it is the user's own; an operator's or a message's once the user read it.
        read=first_reply is not None
        and (first_reply.type is PartType.REPLY_USER or first_reply.read),
    )


@dataclass(frozen=True, slots=True)
class Drift:
    conversation_id: int
    field: str
    stored: object
    computed: object


def drifts(state: ConversationState, parts: Iterable[Part]) -> list[Drift]:
    """Every derived field whose stored value differs from the recomputed one."""
    derived = derive(state, parts)
    found = []
    for name in DERIVED_FIELDS:
        stored, computed = getattr(state, name), getattr(derived, name)
        if stored != computed:
            found.append(Drift(state.id, name, stored, computed))
    return found


def repaired(state: ConversationState, parts: Iterable[Part]) -> ConversationState:
    """A copy of `state` with every derived field set to its recomputed value."""
    derived = derive(state, parts)
    fixed = ConversationState(**{f: getattr(state, f) for f in state.__dataclass_fields__})
    for name in DERIVED_FIELDS:
        setattr(fixed, name, getattr(derived, name))
    return fixed
