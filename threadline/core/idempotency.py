"""Is a retried write the same write? (pure, no I/O)

A write with a `random_id` that was used before in the conversation (for the same kind of
write) is a retry when it asks for the same content as the write that used it: then the
first write's part is the answer and nothing new is created. When the content differs, the
key is being reused for another write, which is refused (`IdempotencyKeyReused`, 409)
rather than answered with a part the client did not ask for.

The content compared is what the write puts into its part: for replies, notes and other
content parts the part's type, its author (the admin, bot or sender; a user's reply is
always the conversation's user), the body, the structured body, the actions offered to the
user and the attachments (each file's name, size and type, in order: a retry uploads its
files again); for an
assignment the assignee; for a tag the tag. Closing, reopening,
snoozing and changing channel carry nothing beyond their kind, which the key includes.
Transport details (`sent_via`, `external_id`, `referrer`) are not content.

A conversation started with a key (by the user, or by an outbound message) is compared the
same way: its first part, and for a message also the conversation's type, reply type and
recipient type. A key that started a conversation of the other kind is reused, never a
retry. The app's objects created with a key (admins, channels, tokens, webhook endpoints)
keep a digest of the creating request's content (`content_digest`), so that a retry is
compared with what was asked for, not with what the object became since.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from threadline.core import events as ev
from threadline.core.enums import PartType
from threadline.core.errors import DomainError
from threadline.core.model import Actions, Attachment, ConversationState, JSONObject, Part


class IdempotencyKeyReused(DomainError):
    error_name = "IdempotencyKeyReused"
    status = 409

    def __init__(self, scope: str = "to this conversation") -> None:
        super().__init__(
            f"random_id: already used for a different write {scope} "
            "(a retry must send the same content)"
        )


def _same_content(
    part: Part,
    body: str,
    body_json: JSONObject | None,
    attachments: tuple[Attachment, ...],
    actions: Actions | None,
) -> bool:
    return (
        part.body == body
        and (part.body_json or None) == (body_json or None)
        and (part.actions or None) == (actions or None)
        and [_file(a) for a in part.attachments] == [_file(a) for a in attachments]
    )


def _file(attachment: Attachment) -> tuple[str, int, str]:
    # Not its id: a retry uploads its files again, and each upload is stored anew.
    return (attachment.filename, attachment.size, attachment.mime_type)


def is_same_write(part: Part, event: ev.Event) -> bool:
    """Whether `event`, retried with the key that created `part`, asks for that part."""
    match event:
        case ev.UserReply():
            return part.type is PartType.REPLY_USER and _same_content(
                part, event.body, event.body_json, event.attachments, event.actions
            )
        case ev.AdminReply():
            return (
                part.type is PartType.REPLY_ADMIN
                and part.author == event.author
                and _same_content(
                    part, event.body, event.body_json, event.attachments, event.actions
                )
            )
        case ev.ContentPart():
            return (
                part.type is event.type
                and part.author == event.author
                and _same_content(
                    part, event.body, event.body_json, event.attachments, event.actions
                )
            )
        case ev.Assign():
            return part.assignee_id == event.admin_id
        case ev.AddTag() | ev.RemoveTag():
            return part.tag == event.tag
    return True


def check_retry(part: Part, event: ev.Event | None) -> None:
    """Raise `IdempotencyKeyReused` unless `event` is a true retry of the write of `part`."""
    if event is not None and not is_same_write(part, event):
        raise IdempotencyKeyReused


def check_started_retry(
    state: ConversationState, first: Part | None, event: ev.UserReply | ev.StartByMessage
) -> None:
    """Raise `IdempotencyKeyReused` unless `event`, retried with the key that started the
    conversation `state` (whose first part is `first`), asks for that start. (An erased
    conversation has lost its bodies: as for any other write, its retries are refused.)"""
    by_message = isinstance(event, ev.StartByMessage)
    if first is None or (state.message_id is not None) != by_message:
        raise IdempotencyKeyReused("to start a conversation")
    match event:
        case ev.UserReply():
            same = first.type is PartType.REPLY_USER and _same_content(
                first, event.body, event.body_json, event.attachments, event.actions
            )
        case ev.StartByMessage():
            same = (
                first.type is PartType.REPLY_ADMIN
                and first.author == event.sender
                and _same_content(first, event.body, event.body_json, (), None)
                and state.type is event.type
                and state.reply_type is event.reply_type
                and state.recipient_type is event.recipient_type
            )
    if not same:
        raise IdempotencyKeyReused("to start a conversation")


def content_digest(content: Mapping[str, object]) -> str:
    """A fingerprint of a creating request's content (hex SHA-256 of its canonical JSON):
    two requests ask for the same object exactly when their digests are equal."""
    canonical = json.dumps(dict(content), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_created_retry(stored: str | None, digest: str | None) -> None:
    """Raise `IdempotencyKeyReused` when a creation retried with a key asks for other
    content than the first request (`stored`: its digest; None for objects made before
    digests were kept, which cannot be compared)."""
    if stored is not None and digest is not None and stored != digest:
        raise IdempotencyKeyReused("in this app")
