"""Property tests of `core.eventlog.derive`: the log events of random event sequences.

A client that starts from a conversation's public fields and merges the `changes` of each
log event, in order, has the conversation's public fields after every step; every new part
is announced exactly once, in order; a refused or empty change logs nothing; and the user's
view never carries a note, a system part or an operators' field.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.test_rules_properties import _PURE, BASE, PURE_IDS, steps, store_change
from threadline.core import eventlog, rules
from threadline.core import events as ev
from threadline.core.enums import HIDDEN_FROM_USER, PartType
from threadline.core.errors import DomainError
from threadline.core.model import Part


def _any_event() -> st.SearchStrategy[ev.Event]:
    return st.one_of(list(_PURE.values()))


class LoggedConversation(RuleBasedStateMachine):
    """One conversation in memory and a client that only ever sees its log events."""

    def __init__(self) -> None:
        super().__init__()
        self.now = BASE
        self.state = rules.new_conversation(
            conversation_id=1, app_id=1, user_id=PURE_IDS.user, now=BASE, channel_id=100
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
        except DomainError:
            return
        ids = list(range(self.next_id, self.next_id + len(change.parts)))
        self.next_id += len(change.parts)
        if change.changed:
            store_change(self.parts, change, ids, self.now)
        logged = eventlog.derive(None if first else before, change)
        if not change.changed:
            assert logged == []
            return
        if first:
            assert logged[0].type == eventlog.STARTED
            assert logged[0].data["changes"] == eventlog.public_fields(change.state)
        for entry in logged:
            self.receive(entry)
        assert [p.id for p in change.parts] == [
            e.data["part"]["id"] for e in logged if "part" in e.data
        ]
        self.state = change.state

    def receive(self, entry: eventlog.LogEvent) -> None:
        assert entry.type in eventlog.EVENT_TYPES
        assert entry.conversation_id == self.state.id
        assert entry.user_id == self.state.user_id
        part = entry.data.get("part")
        if part is not None:
            assert entry.type == eventlog.part_event_type(PartType(part["type"]))
            self.announced.append(part["id"])
        self.client.update(entry.data.get("changes", {}))
        view = eventlog.user_view(entry.type, entry.data)
        if view is None:
            return
        if "part" in view:
            assert PartType(view["part"]["type"]) not in HIDDEN_FROM_USER
            self.user_announced.append(view["part"]["id"])
        assert not set(view.get("changes", {})) & eventlog.USER_HIDDEN_FIELDS

    @initialize(first=st.one_of(_PURE["user_reply"], _PURE["start_by_message"]))
    def start(self, first: ev.Event) -> None:
        self.apply(first, timedelta(0), first=True)
        if not self.parts:  # the first event was refused: start with a plain user reply
            self.apply(ev.UserReply(body="Hello"), timedelta(0), first=True)

    @rule(event=_any_event(), step=steps())
    def step(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @invariant()
    def client_has_the_fields(self) -> None:
        assert self.client == eventlog.public_fields(self.state)

    @invariant()
    def every_part_announced_once_in_order(self) -> None:
        assert self.announced == [p.id for p in self.parts]
        visible = [p.id for p in self.parts if p.type not in HIDDEN_FROM_USER]
        assert self.user_announced == visible


LoggedConversation.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None
)
TestLoggedConversation = LoggedConversation.TestCase


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
