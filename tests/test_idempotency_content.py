"""Which retried writes are the same write (threadline.core.idempotency): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from threadline.core import events as ev
from threadline.core.enums import AuthorKind, PartType, SentVia
from threadline.core.idempotency import IdempotencyKeyReused, check_retry, is_same_write
from threadline.core.model import Attachment, Author, Part

ANN = Author(AuthorKind.ADMIN, 1)
BOB = Author(AuthorKind.ADMIN, 2)
FILE = Attachment(id=7, size=10, filename="a.txt", mime_type="text/plain")
OTHER_FILE = Attachment(id=8, size=11, filename="b.txt", mime_type="text/plain")
# The same file uploaded again by a retry: stored anew, under another id.
SAME_FILE_AGAIN = Attachment(id=9, size=10, filename="a.txt", mime_type="text/plain")


def part(type_: PartType = PartType.REPLY_ADMIN, author: Author = ANN, **fields: object) -> Part:
    return Part(
        id=5,
        conversation_id=1,
        created=datetime(2026, 1, 1, tzinfo=UTC),
        type=type_,
        part_group=1,
        author=author,
        sent_via=SentVia.API,
        random_id=9,
        random_kind="reply",
        **fields,  # type: ignore[arg-type]
    )


def test_the_same_reply_is_a_retry() -> None:
    stored = part(body="Hi", attachments=(FILE,))
    retry = ev.AdminReply(author=ANN, body="Hi", attachments=(FILE,), sent_via=SentVia.API)
    assert is_same_write(stored, retry)
    check_retry(stored, retry)  # no error
    # The channel it came through and the external id are not content.
    assert is_same_write(stored, ev.AdminReply(author=ANN, body="Hi", attachments=(FILE,)))
    again = ev.AdminReply(author=ANN, body="Hi", attachments=(SAME_FILE_AGAIN,))
    assert is_same_write(stored, again)


@pytest.mark.parametrize(
    "event",
    [
        ev.AdminReply(author=ANN, body="Bye", attachments=(FILE,)),
        ev.AdminReply(author=BOB, body="Hi", attachments=(FILE,)),
        ev.AdminReply(author=ANN, body="Hi"),
        ev.AdminReply(author=ANN, body="Hi", attachments=(OTHER_FILE,)),
        ev.AdminReply(author=ANN, body="Hi", attachments=(FILE,), body_json={"k": 1}),
        ev.ContentPart(type=PartType.NOTE, author=ANN, body="Hi", attachments=(FILE,)),
        ev.UserReply(body="Hi", attachments=(FILE,)),
    ],
)
def test_other_content_reuses_the_key(event: ev.Event) -> None:
    stored = part(body="Hi", attachments=(FILE,))
    assert not is_same_write(stored, event)
    with pytest.raises(IdempotencyKeyReused) as refused:
        check_retry(stored, event)
    assert refused.value.status == 409


def test_assignments_and_tags_compare_what_they_set() -> None:
    assigned = part(PartType.ASSIGNED, assignee_id=1)
    assert is_same_write(assigned, ev.Assign(admin_id=1, by=ANN))
    assert not is_same_write(assigned, ev.Assign(admin_id=2, by=ANN))
    tagged = part(PartType.TAG_ADDED, tag="vip")
    assert is_same_write(tagged, ev.AddTag(tag="vip", by=ANN))
    assert not is_same_write(tagged, ev.AddTag(tag="lead", by=ANN))
