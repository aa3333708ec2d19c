"""Property tests of `core.eventlog.derive`: the log events of random event sequences.

A client that starts from a conversation's public fields and merges the `changes` of each
log event, in order, has the conversation's public fields after every step; every new part
is announced exactly once, in order; a refused or empty change logs nothing; and the user's
view never carries a note, a system part or an operators' field.

The expectations are written out from the spec (conversation.md's field and part-type
tables, api.md's realtime section), independently of the field table and the functions
`eventlog.derive` uses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.reach import Reach
from tests.test_rules_properties import (
    _PURE,
    BASE,
    PURE_IDS,
    REQUIRED_TRANSITIONS,
    steps,
    store_change,
    transitions,
)
from threadline.core import eventlog, rules
from threadline.core import events as ev
from threadline.core.enums import (
    AuthorKind,
    ConversationType,
    MessageStatus,
    RecipientType,
    ReplyType,
)
from threadline.core.errors import DomainError
from threadline.core.model import Author, ConversationState, Part

# --- the spec, written out --------------------------------------------------------------


def unix(value: datetime | None) -> int | float | None:
    """api.md: times are Unix seconds, whole seconds as an integer."""
    if value is None:
        return None
    seconds = (value - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    whole = int(seconds)
    return whole if whole == seconds else round(seconds, 6)


def _value(x: Any) -> Any:
    return None if x is None else x.value


# conversation.md "Conversation fields" (standard and optional fields, the starter-message
# flags): each public field and how its value follows from the conversation.
SPEC_FIELDS: dict[str, Callable[[ConversationState], Any]] = {
    "created": lambda s: unix(s.created),
    "replied": lambda s: s.replied,
    "delayed_until": lambda s: unix(s.delayed_until),
    "closed": lambda s: s.closed,
    "message": lambda s: s.message_id,
    "type": lambda s: _value(s.type),
    "reply_type": lambda s: _value(s.reply_type),
    "removed": lambda s: unix(s.removed),
    "reply_last_type": lambda s: _value(s.reply_last_type),
    "parts_count": lambda s: s.parts_count,
    "assignee": lambda s: s.assignee_id,
    "sended_time": lambda s: unix(s.sended_time),
    "admin_unread_count": lambda s: s.admin_unread_count,
    "user_unread_count": lambda s: s.user_unread_count,
    "not_answered_admin_replies": lambda s: s.not_answered_admin_replies,
    "unread_parts_count": lambda s: s.user_unread_count,  # deprecated: always equal
    "replies_count": lambda s: s.replies_count,
    "last_admin": lambda s: s.last_admin_id,
    "last_update": lambda s: unix(s.last_update),
    "tags": lambda s: list(s.tags),
    "important": lambda s: s.important,
    "external_service": lambda s: s.external_service,
    "external_id": lambda s: s.external_id,
    "last_user_reply_time": lambda s: unix(s.last_user_reply_time),
    "status": lambda s: _value(s.status),
    "assistant_type": lambda s: _value(s.assistant_type),
    "recipient_type": lambda s: _value(s.recipient_type),
    "channel": lambda s: s.channel_id,
    "part_last": lambda s: s.part_last_id,
    "important_part_last": lambda s: s.important_part_last_id,
    "reply_last": lambda s: s.reply_last_id,
    "read": lambda s: s.read,
    "clicked": lambda s: s.clicked,
    "unsubscribed": lambda s: s.unsubscribed,
}

# conversation.md "Part types": the parts not visible to the user (notes and system parts),
# and the log event of each system part (the realtime channels' names); every other part
# is a `conversation_reply`.
SPEC_HIDDEN_PARTS = frozenset(
    {
        "note",
        "assigned",
        "closed",
        "opened",
        "delayed",
        "tag_added",
        "tag_deleted",
        "channel_changed",
        "service",
    }
)
SPEC_PART_EVENTS = {
    "assigned": "conversation_assigned",
    "closed": "conversation_closed",
    "opened": "conversation_reopened",
    "delayed": "conversation_delayed",
    "tag_added": "conversation_tag_added",
    "tag_deleted": "conversation_tag_deleted",
    "channel_changed": "conversation_channel_changed",
    "service": "conversation_service",
}
# api.md "Realtime": a user's channels carry no tags and no assignee.
SPEC_USER_NEVER_SEES = frozenset({"tags", "assignee"})


def spec_fields(state: ConversationState) -> dict[str, Any]:
    return {name: read(state) for name, read in SPEC_FIELDS.items()}


def test_the_log_names_the_spec_fields() -> None:
    assert set(eventlog.FIELD_NAMES) == set(SPEC_FIELDS)
    assert SPEC_USER_NEVER_SEES <= eventlog.USER_HIDDEN_FIELDS


# --- the machine --------------------------------------------------------------------------

# Every event kind once more: the machine uses the rules' strategies, whose weights make
# every event kind reach an accepted change. A removal starts a new conversation.
LOG_TRANSITIONS = (
    *REQUIRED_TRANSITIONS,
    "conversation_started by a user",
    "conversation_started by a message",
    "a log event the user does not see",
    "conversation_updated",
    "conversation_read",
    "conversation_removed",
)


def _any_event() -> st.SearchStrategy[ev.Event]:
    # Removal is one event in forty: it ends the conversation (the machine starts another).
    weighted = [s for name, s in _PURE.items() if name != "remove"] * 3 + [_PURE["remove"]]
    return st.one_of(weighted)


class LoggedConversation(RuleBasedStateMachine):
    """One conversation in memory and a client that only ever sees its log events."""

    reach = Reach("eventlog", LOG_TRANSITIONS)

    def __init__(self) -> None:
        super().__init__()
        self.now = BASE
        self.conversation_id = 0
        self.new_conversation()

    def new_conversation(self) -> None:
        self.conversation_id += 1
        self.state = rules.new_conversation(
            conversation_id=self.conversation_id,
            app_id=1,
            user_id=PURE_IDS.user,
            now=self.now,
            channel_id=100,
        )
        self.parts: list[Part] = []
        self.next_id = 1
        self.client: dict[str, Any] = {}
        self.announced: list[int] = []
        self.user_announced: list[int] = []

    def apply(self, event: ev.Event, step: timedelta, first: bool = False) -> None:
        self.now += step
        before = copy.deepcopy(self.state)
        try:
            change = rules.apply(self.state, event, self.now)
        except DomainError as error:
            for label in transitions(before, event, None, error):
                self.reach.hit(label)
            return
        for label in transitions(before, event, change, None):
            self.reach.hit(label)
        ids = list(range(self.next_id, self.next_id + len(change.parts)))
        self.next_id += len(change.parts)
        if change.changed:
            store_change(self.parts, change, ids, self.now)
        logged = eventlog.derive(None if first else before, change)
        if not change.changed:
            assert logged == []
            return
        if first:
            assert logged[0].type == "conversation_started"
            assert logged[0].data["changes"] == spec_fields(change.state)
            by = "a user" if change.state.message_id is None else "a message"
            assert logged[0].data["started_by"] == by.split()[-1]
            self.reach.hit(f"conversation_started by {by}")
        for entry in logged:
            self.receive(entry)
        assert [p.id for p in change.parts] == [
            e.data["part"]["id"] for e in logged if "part" in e.data
        ]
        self.state = change.state
        if change.erase:
            assert logged[-1].type == "conversation_removed"

    def receive(self, entry: eventlog.LogEvent) -> None:
        assert entry.conversation_id == self.state.id
        assert entry.user_id == self.state.user_id
        part = entry.data.get("part")
        if part is not None:
            assert entry.type == SPEC_PART_EVENTS.get(part["type"], "conversation_reply")
            self.announced.append(part["id"])
        else:
            assert entry.type in {
                "conversation_started",
                "conversation_read",
                "conversation_removed",
                "conversation_updated",
            }, entry
        if entry.type in {"conversation_updated", "conversation_read", "conversation_removed"}:
            self.reach.hit(entry.type)
        self.client.update(entry.data.get("changes", {}))
        view = eventlog.user_view(entry.type, entry.data)
        if view is None:
            self.reach.hit("a log event the user does not see")
            assert (
                part is None
                or part["type"] in SPEC_HIDDEN_PARTS
                or not (set(entry.data.get("changes", {})) - eventlog.USER_HIDDEN_FIELDS)
            )
            return
        if "part" in view:
            assert view["part"]["type"] not in SPEC_HIDDEN_PARTS
            self.user_announced.append(view["part"]["id"])
        elif part is not None:
            assert part["type"] in SPEC_HIDDEN_PARTS
        assert not set(view.get("changes", {})) & SPEC_USER_NEVER_SEES

    @initialize(first=st.one_of(_PURE["user_reply"], _PURE["start_by_message"]))
    def start(self, first: ev.Event) -> None:
        self.apply(first, timedelta(0), first=True)
        if not self.parts:  # the first event was refused: start with a plain user reply
            self.apply(ev.UserReply(body="Hello"), timedelta(0), first=True)

    def focused(self, focus: int, step: timedelta) -> ev.Event | None:
        """One step in three follows up on the state: the cases random events reach rarely."""
        s, by = self.state, Author(AuthorKind.ADMIN, 1)
        if focus == 0:
            return ev.Delay(until=self.now + step + timedelta(hours=1), by=by)
        if focus == 1 and s.delayed_until is not None:
            return ev.Delay(until=None, by=by) if s.parts_count % 2 else ev.UserReply(body="Hi")
        if focus == 2 and s.assistant_type is not None:
            admin = 2 if s.assignee_id == 1 else 1
            if s.parts_count % 2:
                return ev.BotHandOff(admin_id=admin, by=by)
            return ev.Assign(admin_id=admin, by=by)
        if focus == 3 and s.closed:
            return ev.UserReply(body="Still there?")
        if focus == 4 and s.tags:
            return ev.RemoveTag(tag=s.tags[0], by=by)
        if focus == 5 and s.message_id is not None:
            statuses = [m for m in MessageStatus if m is not s.status]
            return ev.UpdateStatus(status=statuses[s.parts_count % len(statuses)])
        return None

    @rule(event=_any_event(), focus=st.integers(0, 14), step=steps())
    def step(self, event: ev.Event, focus: int, step: timedelta) -> None:
        self.apply(self.focused(focus, step) or event, step)
        if self.state.removed is not None:
            self.apply(ev.ReadByUser(), timedelta(0))  # refused: nothing logged
            self.apply(ev.Remove(), timedelta(0))  # a second removal: nothing logged
            self.new_conversation()
            self.client, self.announced, self.user_announced = {}, [], []
            again: ev.Event = ev.UserReply(body="Hello again")
            if self.conversation_id % 2:
                again = ev.StartByMessage(
                    message_id=self.conversation_id,
                    type=ConversationType.POPUP_CHAT,
                    reply_type=ReplyType.TEXT,
                    sender=Author(AuthorKind.SENDER, PURE_IDS.sender),
                    body="Can we help?",
                    recipient_type=RecipientType.ALL,
                    status=MessageStatus.SENT,
                    sended_time=None,
                )
            self.apply(again, timedelta(0), first=True)

    @invariant()
    def client_has_the_fields(self) -> None:
        assert self.client == spec_fields(self.state)

    @invariant()
    def every_part_announced_once_in_order(self) -> None:
        assert self.announced == [p.id for p in self.parts]
        visible = [p.id for p in self.parts if p.type.value not in SPEC_HIDDEN_PARTS]
        assert self.user_announced == visible


def test_log_events_rebuild_the_conversation() -> None:
    LoggedConversation.reach = Reach("eventlog", LOG_TRANSITIONS)
    run_state_machine_as_test(
        LoggedConversation,
        settings=settings(max_examples=80, stateful_step_count=30, deadline=None),
    )
    LoggedConversation.reach.assert_reached()


def test_a_read_with_nothing_to_read_is_not_logged_but_a_read_by_user_is() -> None:
    state = rules.new_conversation(
        conversation_id=1, app_id=1, user_id=2, now=BASE, channel_id=None
    )
    first = rules.apply(state, ev.UserReply(body="Hi"), BASE)
    first.with_ids([1])
    read = rules.apply(first.state, ev.ReadByAdmin(), BASE)
    (entry,) = eventlog.derive(first.state, read)
    assert entry.type == eventlog.READ
    assert entry.data == {"changes": {"admin_unread_count": 0}, "read_by": "admin"}
    assert eventlog.derive(read.state, rules.apply(read.state, ev.ReadByAdmin(), BASE)) == []
    (by_user,) = eventlog.derive(read.state, rules.apply(read.state, ev.ReadByUser(), BASE))
    assert by_user.type == eventlog.READ
    assert by_user.data == {"read_by": "user"}
    assert eventlog.user_view(by_user.type, by_user.data) == by_user.data
