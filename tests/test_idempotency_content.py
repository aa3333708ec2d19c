"""Which retried writes are the same write (threadline.core.idempotency): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from threadline.core import events as ev
from threadline.core.enums import AuthorKind, ConversationType, PartType, ReplyType, SentVia
from threadline.core.idempotency import (
    IdempotencyKeyReused,
    check_created_retry,
    check_retry,
    check_started_retry,
    content_digest,
    is_same_write,
)
from threadline.core.model import Attachment, Author, ConversationState, Part
from threadline.core.rules import new_conversation

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


def started(message: bool, removed: bool = False) -> ConversationState:
    state = new_conversation(
        conversation_id=1,
        app_id=1,
        user_id=1,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        channel_id=None,
    )
    if message:
        state.message_id = 3
        state.type = ConversationType.POPUP_CHAT
        state.reply_type = ReplyType.TEXT
    if removed:
        state.removed = datetime(2026, 1, 2, tzinfo=UTC)
    return state


def offer(**changes: object) -> ev.StartByMessage:
    fields: dict[str, object] = {
        "message_id": 0,
        "type": ConversationType.POPUP_CHAT,
        "reply_type": ReplyType.TEXT,
        "sender": ANN,
        "body": "Offer",
    }
    return ev.StartByMessage(**(fields | changes))  # type: ignore[arg-type]


def test_a_start_retry_asks_for_the_same_first_part_and_kind() -> None:
    by_user = part(PartType.REPLY_USER, author=Author(AuthorKind.USER, 1), body="Hello")
    check_started_retry(started(False), by_user, ev.UserReply(body="Hello"))
    by_message = part(body="Offer")
    check_started_retry(started(True), by_message, offer())
    refusals: list[tuple[ConversationState, Part | None, ev.UserReply | ev.StartByMessage]] = [
        (started(False), by_user, ev.UserReply(body="Goodbye")),
        (started(False), by_user, ev.UserReply(body="Hello", attachments=(FILE,))),
        (started(False), by_user, offer(body="Hello")),
        (started(False), None, ev.UserReply(body="Hello")),
        (started(True), by_message, offer(body="Another")),
        (started(True), by_message, offer(sender=BOB)),
        (started(True), by_message, offer(type=ConversationType.EMAIL)),
        (started(True), by_message, offer(reply_type=ReplyType.EMAIL)),
        (started(True), by_message, offer(body_json={"k": 1})),
        (started(True), by_message, ev.UserReply(body="Offer")),
    ]
    for state, first, event in refusals:
        with pytest.raises(IdempotencyKeyReused):
            check_started_retry(state, first, event)
    # An erased conversation lost its bodies: a retry cannot be told from other content.
    erased = part(body="")
    with pytest.raises(IdempotencyKeyReused):
        check_started_retry(started(True, removed=True), erased, offer())


def test_creation_digests_compare_content_whatever_the_key_order() -> None:
    one = content_digest({"name": "Ann", "scopes": ["a", "b"]})
    assert one == content_digest({"scopes": ["a", "b"], "name": "Ann"})
    assert one != content_digest({"name": "Ann", "scopes": ["a"]})
    assert one != content_digest({"name": "Ann ", "scopes": ["a", "b"]})
    check_created_retry(one, one)
    check_created_retry(None, one)  # a row made before digests were kept
    with pytest.raises(IdempotencyKeyReused) as refused:
        check_created_retry(one, content_digest({"name": "Bob", "scopes": ["a", "b"]}))
    assert "in this app" in refused.value.message
