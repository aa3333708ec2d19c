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
"""

from __future__ import annotations

from threadline.core import events as ev
from threadline.core.enums import PartType
from threadline.core.errors import DomainError
from threadline.core.model import Actions, Attachment, JSONObject, Part


class IdempotencyKeyReused(DomainError):
    error_name = "IdempotencyKeyReused"
    status = 409

    def __init__(self) -> None:
        super().__init__(
            "random_id: already used for a different write to this conversation "
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
