"""Property tests of the pure core: random event sequences keep every spec invariant.

A hypothesis state machine applies random events (valid and invalid) to one in-memory
conversation, stores the parts the way the repository does (real ids, read marks, erasure)
and checks the spec's "Invariants" section after every step. The invariant check and the
event strategies are shared with the storage state machine in test_stateful_storage.py.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.reach import Reach
from threadline.core import events as ev
from threadline.core import recompute, rules
from threadline.core.enums import (
    CONTENT_TYPES,
    HIDDEN_FROM_USER,
    REPLY_TYPES,
    SYSTEM_TYPES,
    AssistantType,
    AuthorKind,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
    SentVia,
)
from threadline.core.errors import ConversationRemoved, DomainError
from threadline.core.model import Attachment, Author, ConversationState, Part

# Every generated time lies within a few hours after BASE, so Delay targets fall both
# before and after the machine's clock.
BASE = datetime(2031, 1, 1, 9, 0, tzinfo=UTC)


def assert_invariants(state: ConversationState, parts: list[Part]) -> None:
    """The spec's "Invariants" section, checked on a conversation and all of its parts."""
    ordered = sorted(parts, key=lambda p: p.id)
    assert len({p.id for p in ordered}) == len(ordered), "part ids are unique"
    assert all(p.conversation_id == state.id for p in ordered)
    # Parts are stored in time order: a higher id is never older.
    for older, newer in itertools.pairwise(ordered):
        assert older.created <= newer.created, (older, newer)

    replies = [p for p in ordered if p.type in REPLY_TYPES]
    user_replies = [p for p in replies if p.type is PartType.REPLY_USER]
    admin_replies = [p for p in replies if p.type is PartType.REPLY_ADMIN]
    non_system = [p for p in ordered if p.type not in SYSTEM_TYPES]

    assert state.parts_count == len(ordered)
    assert state.replies_count == len(replies)
    assert state.unread_parts_count == state.user_unread_count

    if replies:
        newest_reply = replies[-1]
        assert newest_reply.created == max(p.created for p in replies)
        assert state.reply_last_id == newest_reply.id
        assert state.reply_last_type is newest_reply.type
        assert state.last_update == newest_reply.created
    else:
        assert state.reply_last_id is None
        assert state.reply_last_type is None
        assert state.last_update == state.created

    assert state.part_last_id == (ordered[-1].id if ordered else None)
    assert state.important_part_last_id == (non_system[-1].id if non_system else None)
    assert state.important == (
        state.reply_last_type is PartType.REPLY_USER or state.assignee_id is None
    )

    assert 0 <= state.admin_unread_count <= len(user_replies)
    assert 0 <= state.user_unread_count <= len(admin_replies)
    assert state.admin_unread_count == sum(not p.read for p in user_replies)
    assert state.user_unread_count == sum(not p.read for p in admin_replies)
    since_answer = 0
    for p in replies:
        since_answer = since_answer + 1 if p.type is PartType.REPLY_USER else 0
    assert state.not_answered_admin_replies == since_answer
    assert state.last_user_reply_time == (user_replies[-1].created if user_replies else None)
    assert len(set(state.tags)) == len(state.tags), "each tag at most once"
    # `read`: the user has read the first message (the first reply); always so when the
    # user wrote it.
    assert state.read == bool(
        replies and (replies[0].type is PartType.REPLY_USER or replies[0].read)
    )

    assert recompute.drifts(state, ordered) == []


# --- event strategies -----------------------------------------------------------------


class _LongBody(str):
    """A body one character over the limit, with a short repr for failure reports."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} chars>"


TOO_LONG = _LongBody("x" * (rules.MAX_BODY_CHARS + 1))
ATTACHMENT = Attachment(id=1, size=2048, filename="invoice.pdf", mime_type="application/pdf")


@dataclass(frozen=True, slots=True)
class Ids:
    """The ids events may name. In the storage tests `foreign_*` belong to another app."""

    user: int
    admins: tuple[int, ...]
    channels: tuple[int, ...]
    sender: int
    foreign_admins: tuple[int, ...] = ()
    foreign_channels: tuple[int, ...] = ()
    foreign_senders: tuple[int, ...] = ()


def _times() -> st.SearchStrategy[datetime]:
    return st.integers(0, 4 * 3600 * 10**6).map(lambda us: BASE + timedelta(microseconds=us))


# Bodies and authors are drawn valid three times out of four: a refusal checks one rule, an
# accepted event moves the state on to the cases the later steps build on.
BODIES = st.sampled_from(
    ["Hello", "<p>Thanks!</p>", "Order #42?", "Hello", "Hi", "Thanks", "", "   ", TOO_LONG]
)
CONTENT_TYPE_LIST = sorted(CONTENT_TYPES)
BODY_JSON = st.sampled_from([None, {}, {"buttons": ["yes", "no"]}])
ATTACHMENTS = st.sampled_from([(), (ATTACHMENT,)])
RANDOM_IDS = st.sampled_from([None, 0, 1, 2, 3])


def user_replies() -> st.SearchStrategy[ev.UserReply]:
    return st.builds(
        ev.UserReply,
        body=BODIES,
        body_json=BODY_JSON,
        attachments=ATTACHMENTS,
        sent_via=st.sampled_from([SentVia.WEB_USER, SentVia.EMAIL_USER, SentVia.INTEGRATIONS]),
        random_id=RANDOM_IDS,
        external_id=st.sampled_from([None, "tg-1"]),
    )


def event_strategies(ids: Ids) -> dict[str, st.SearchStrategy[ev.Event]]:
    """One strategy per event class, drawing valid and invalid parameters."""
    # Most references are valid; in the storage tests one in four names another app's admin.
    admin_ids = st.sampled_from(ids.admins * 3 + ids.foreign_admins * 2)
    own_admin = st.sampled_from(ids.admins).map(lambda a: Author(AuthorKind.ADMIN, a))
    operators = st.one_of(
        own_admin,
        own_admin,
        admin_ids.map(lambda a: Author(AuthorKind.ADMIN, a)),
        st.sampled_from((ids.sender, ids.sender, *ids.foreign_senders)).map(
            lambda s: Author(AuthorKind.SENDER, s)
        ),
        st.just(Author(AuthorKind.BOT, 1)),
        st.just(Author(AuthorKind.USER, ids.user)),  # never an operator: refused
    )
    by = st.one_of(operators, st.just(Author.system()))
    bodies, body_json, attachments, random_ids = BODIES, BODY_JSON, ATTACHMENTS, RANDOM_IDS
    tags = st.sampled_from(["vip", "billing", "vip", "bug", "", "t" * (rules.MAX_TAG_CHARS + 1)])
    channels = st.sampled_from((None, *ids.channels, *ids.channels, *ids.foreign_channels))
    assignees = st.one_of(st.none(), admin_ids)
    return {
        "user_reply": user_replies(),
        "admin_reply": st.builds(
            ev.AdminReply,
            author=operators,
            body=bodies,
            body_json=body_json,
            attachments=attachments,
            sent_via=st.sampled_from([SentVia.WEB_PANEL, SentVia.API, SentVia.EMAIL_ADMIN]),
            random_id=random_ids,
        ),
        "content_part": st.builds(
            ev.ContentPart,
            # Mostly a type the rules accept (a note one time in three), else any type.
            type=st.one_of(
                st.just(PartType.NOTE),
                st.sampled_from(CONTENT_TYPE_LIST),
                st.sampled_from(list(PartType)),
            ),
            author=operators,
            body=bodies,
            body_json=body_json,
            attachments=attachments,
            random_id=random_ids,
        ),
        "assign": st.builds(ev.Assign, admin_id=assignees, by=by, random_id=random_ids),
        "close": st.builds(ev.Close, by=by, random_id=random_ids),
        "reopen": st.builds(ev.Reopen, by=by, random_id=random_ids),
        "delay": st.builds(
            ev.Delay, until=st.one_of(st.none(), _times()), by=by, random_id=random_ids
        ),
        "add_tag": st.builds(
            ev.AddTag, tag=tags, by=by, strict=st.booleans(), random_id=random_ids
        ),
        "remove_tag": st.builds(
            ev.RemoveTag, tag=tags, by=by, strict=st.booleans(), random_id=random_ids
        ),
        "change_channel": st.builds(
            ev.ChangeChannel, channel_id=channels, by=by, random_id=random_ids
        ),
        "read_by_admin": st.just(ev.ReadByAdmin()),
        "read_by_user": st.just(ev.ReadByUser()),
        "start_by_message": st.builds(
            ev.StartByMessage,
            message_id=st.integers(1, 5),
            type=st.sampled_from(list(ConversationType)),
            reply_type=st.sampled_from(list(ReplyType)),
            sender=operators,
            body=bodies,
            body_json=body_json,
            recipient_type=st.sampled_from(list(RecipientType)),
            status=st.sampled_from(list(MessageStatus)),
            sended_time=st.one_of(st.none(), _times()),
        ),
        "update_status": st.builds(ev.UpdateStatus, status=st.sampled_from(list(MessageStatus))),
        "bot_take_over": st.builds(
            ev.BotTakeOver, assistant_type=st.sampled_from(list(AssistantType))
        ),
        "bot_hand_off": st.builds(ev.BotHandOff, admin_id=assignees, by=st.one_of(st.none(), by)),
        "remove": st.just(ev.Remove()),
    }


def steps() -> st.SearchStrategy[timedelta]:
    """How far the clock moves between two events: often not at all, up to ten minutes."""
    return st.one_of(
        st.just(timedelta(0)),
        st.integers(1, 600 * 10**6).map(lambda us: timedelta(microseconds=us)),
    )


def store_change(
    parts: list[Part], change: rules.Change, real_ids: list[int], now: datetime
) -> None:
    """Store `change` in `parts` the way the repository does: real ids, read marks, erasure."""
    assert all(p.id < 0 for p in change.parts), "new parts carry provisional ids"
    change.with_ids(real_ids)
    parts.extend(change.parts)
    if change.mark_read is rules.MarkRead.USER_PARTS_BY_ADMIN:
        for p in parts:
            if p.type is PartType.REPLY_USER:
                p.read = True
    elif change.mark_read is rules.MarkRead.ADMIN_PARTS_BY_USER:
        for p in parts:
            if p.type not in HIDDEN_FROM_USER and p.type is not PartType.REPLY_USER:
                p.read = True
    if change.erase:
        for p in parts:
            p.body, p.body_json, p.attachments, p.removed = "", None, (), now


def assert_effects(
    before: ConversationState, after: ConversationState, event: ev.Event, new: list[Part]
) -> None:
    """Event-specific rows of the spec's event table, for events the rules accepted."""
    assert after.replied or not before.replied, "replied never goes back to false"
    assert after.created == before.created
    match event:
        case ev.UserReply():
            assert [p.type for p in new] == [PartType.REPLY_USER]
            assert after.admin_unread_count == before.admin_unread_count + 1
            assert after.not_answered_admin_replies == before.not_answered_admin_replies + 1
            assert after.replied
            assert not after.closed
            assert after.delayed_until is None
            assert after.important
            if before.closed:
                assert new[0].part_group == new[0].id, "a reply to a closed conversation"
            if before.replies_count == 0:
                assert after.read, "the user's reply is the first message"
        case ev.AdminReply():
            assert [p.type for p in new] == [PartType.REPLY_ADMIN]
            assert after.user_unread_count == before.user_unread_count + 1
            assert after.admin_unread_count == 0
            assert after.not_answered_admin_replies == 0
            if event.author.kind is AuthorKind.ADMIN:
                assert after.last_admin_id == event.author.id
        case ev.ContentPart():
            assert [p.type for p in new] == [event.type]
            assert after.replies_count == before.replies_count
        case ev.ReadByAdmin():
            assert after.admin_unread_count == 0
            assert not new
        case ev.ReadByUser():
            assert after.user_unread_count == 0
            assert not new
            assert after.read == bool(before.replies_count), "the first message is read"
        case ev.Close():
            assert after.closed
            assert [p.type for p in new] == [PartType.CLOSED]
        case ev.Reopen():
            assert not after.closed
            assert [p.type for p in new] == [PartType.OPENED]
        case ev.Assign():
            assert after.assignee_id == event.admin_id
            assert [(p.type, p.assignee_id) for p in new] == [(PartType.ASSIGNED, event.admin_id)]
            if before.assistant_type is not None:
                assert after.assistant_type is None
                assert after.replied
        case ev.Delay():
            assert after.delayed_until == event.until
            assert [p.type for p in new] == [PartType.DELAYED]
        case ev.AddTag():
            assert after.tags == (*before.tags, event.tag)
            assert [(p.type, p.tag) for p in new] == [(PartType.TAG_ADDED, event.tag)]
        case ev.RemoveTag():
            assert event.tag not in after.tags
            assert [(p.type, p.tag) for p in new] == [(PartType.TAG_DELETED, event.tag)]
        case ev.ChangeChannel():
            assert after.channel_id == event.channel_id
            assert [p.type for p in new] == [PartType.CHANNEL_CHANGED]
        case ev.UpdateStatus():
            assert after.status is event.status
            assert not new
        case ev.BotHandOff():
            assert after.assistant_type is None
            if event.admin_id is not None:
                assert after.assignee_id == event.admin_id
            if before.assistant_type is not None:
                assert after.replied, "a bot hands the conversation to the operators"
        case ev.Remove():
            assert after.removed is not None
            assert not new
            for name in recompute.DERIVED_FIELDS:
                assert getattr(after, name) == getattr(before, name), "counters keep their values"
    if before.read:
        assert after.read, "read never goes back to false"
    elif not isinstance(event, ev.UserReply | ev.ReadByUser):
        assert not after.read, "only the user reads the first message"
    if not isinstance(event, ev.UserReply | ev.AdminReply | ev.StartByMessage):
        # Only replies move the reply counters and last_update.
        assert after.replies_count == before.replies_count
        assert after.last_update == before.last_update


# --- reach ----------------------------------------------------------------------------

EVENT_KINDS = (
    ev.UserReply,
    ev.AdminReply,
    ev.ContentPart,
    ev.Assign,
    ev.Close,
    ev.Reopen,
    ev.Delay,
    ev.AddTag,
    ev.RemoveTag,
    ev.ChangeChannel,
    ev.ReadByAdmin,
    ev.ReadByUser,
    ev.StartByMessage,
    ev.UpdateStatus,
    ev.BotTakeOver,
    ev.BotHandOff,
    ev.Remove,
)

# The transitions a run of the rules' machines must reach: every kind of event accepted, and
# the interplays between fields the spec's event table names.
SPECIAL_TRANSITIONS = (
    "a user reply clears a snooze",
    "a user reply reopens a closed conversation",
    "a note is stored",
    "an operator reply reads the user's replies",
    "an assignment ends a bot's turn",
    "a bot hands the conversation off",
    "a snooze is cleared",
    "an event on a removed conversation is refused",
    "the user reads an operator's first message",
    "the user writes the first message",
)
REQUIRED_TRANSITIONS = (
    *(f"{kind.__name__}: changed" for kind in EVENT_KINDS),
    *SPECIAL_TRANSITIONS,
)


def transitions(
    before: ConversationState,
    event: ev.Event,
    change: rules.Change | None,
    error: DomainError | None,
) -> list[str]:
    """What applying `event` to `before` did, as the labels `REQUIRED_TRANSITIONS` uses."""
    kind = type(event).__name__
    if isinstance(error, ConversationRemoved):
        return ["an event on a removed conversation is refused"]
    if error is not None:
        return [f"{kind}: refused ({type(error).__name__})"]
    assert change is not None
    if not change.changed:
        return [f"{kind}: no change"]
    found = [f"{kind}: changed"]
    match event:
        case ev.UserReply() if before.delayed_until is not None:
            found.append("a user reply clears a snooze")
        case ev.ContentPart(type=PartType.NOTE):
            found.append("a note is stored")
        case ev.Assign() if before.assistant_type is not None:
            found.append("an assignment ends a bot's turn")
        case ev.BotHandOff() if before.assistant_type is not None:
            found.append("a bot hands the conversation off")
        case ev.Delay(until=None):
            found.append("a snooze is cleared")
    if isinstance(event, ev.ReadByUser) and not before.read and change.state.read:
        found.append("the user reads an operator's first message")
    if isinstance(event, ev.UserReply) and before.replies_count == 0:
        found.append("the user writes the first message")
    if isinstance(event, ev.UserReply) and before.closed:
        found.append("a user reply reopens a closed conversation")
    if isinstance(event, ev.AdminReply) and change.mark_read is rules.MarkRead.USER_PARTS_BY_ADMIN:
        found.append("an operator reply reads the user's replies")
    return found


# --- the machine ----------------------------------------------------------------------

PURE_IDS = Ids(user=10, admins=(1, 2, 3), channels=(100, 101), sender=50)
_PURE = event_strategies(PURE_IDS)


def _group(*names: str) -> st.SearchStrategy[ev.Event]:
    return st.one_of([_PURE[name] for name in names])


def _later() -> st.SearchStrategy[timedelta]:
    """A snooze's length: a minute to a day."""
    return st.integers(60, 86_400).map(lambda seconds: timedelta(seconds=seconds))


class ConversationRules(RuleBasedStateMachine):
    """Conversations kept in memory; every rule applies one event at a later time.

    A removal ends a conversation: the machine checks that it refuses every later event and
    goes on with a new conversation, so that no step is spent on a removed one.
    """

    reach = Reach("rules", REQUIRED_TRANSITIONS)

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

    @initialize(first=st.one_of(_PURE["user_reply"], _PURE["start_by_message"]))
    def start(self, first: ev.Event) -> None:
        self.apply(first, timedelta(0))

    def apply(self, event: ev.Event, step: timedelta) -> None:
        self.now += step
        before = copy.deepcopy(self.state)
        parts_before = copy.deepcopy(self.parts)
        try:
            change = rules.apply(self.state, event, self.now)
        except DomainError as error:
            for label in transitions(before, event, None, error):
                self.reach.hit(label)
            assert self.state == before, "a refused event changes nothing"
            assert self.parts == parts_before
            return
        assert self.state == before, "apply never mutates its input"
        for label in transitions(before, event, change, None):
            self.reach.hit(label)
        if not change.changed:
            assert change.state == before
            assert not change.parts
            assert change.mark_read is None
            return
        real_ids = list(range(self.next_id, self.next_id + len(change.parts)))
        self.next_id += len(change.parts)
        store_change(self.parts, change, real_ids, self.now)
        groups = {before.part_group, *(p.id for p in change.parts)}
        assert all(p.part_group in groups for p in change.parts)
        assert_effects(before, change.state, event, change.parts)
        self.state = change.state

    @rule(event=_group("user_reply", "user_reply", "admin_reply", "content_part"), step=steps())
    def reply(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @rule(event=_group("assign", "close", "reopen", "delay", "change_channel"), step=steps())
    def workflow(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @rule(
        until=st.one_of(_later(), st.none()),
        by=st.sampled_from([Author(AuthorKind.ADMIN, 1), Author.system()]),
        step=steps(),
    )
    def snooze(self, until: timedelta | None, by: Author, step: timedelta) -> None:
        """A snooze into the future (or none: wake up), as the inbox's buttons send it."""
        target = None if until is None else self.now + step + until
        self.apply(ev.Delay(until=target, by=by), step)

    @precondition(lambda self: self.state.delayed_until is not None or self.state.closed)
    @rule(event=user_replies(), step=steps())
    def user_writes_back(self, event: ev.UserReply, step: timedelta) -> None:
        """The user writes to a snoozed or closed conversation."""
        self.apply(event, step)

    @rule(event=_group("add_tag", "remove_tag"), step=steps())
    def tag(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @rule(event=_group("read_by_admin", "read_by_user"), step=steps())
    def read(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @rule(
        event=_group("update_status", "bot_take_over", "bot_hand_off", "start_by_message"),
        step=steps(),
    )
    def message_and_bots(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @precondition(lambda self: self.state.assistant_type is not None)
    @rule(event=_group("assign", "bot_hand_off"), step=steps())
    def operators_take_over_from_a_bot(self, event: ev.Event, step: timedelta) -> None:
        self.apply(event, step)

    @precondition(lambda self: self.state.parts_count >= 6)
    @rule(
        step=steps(),
        later=st.one_of(*_PURE.values()),
        first=st.one_of(_PURE["user_reply"], _PURE["start_by_message"]),
    )
    def remove(self, step: timedelta, later: ev.Event, first: ev.Event) -> None:
        self.apply(ev.Remove(), step)
        assert self.state.removed is not None
        assert all(p.body == "" and p.body_json is None and not p.attachments for p in self.parts)
        assert_invariants(self.state, self.parts)
        self.apply(later, timedelta(0))  # refused (a second removal: no change)
        assert self.state.removed is not None
        self.new_conversation()
        self.apply(first, timedelta(0))

    @invariant()
    def spec_invariants(self) -> None:
        assert_invariants(self.state, self.parts)


def test_random_events_keep_the_invariants() -> None:
    ConversationRules.reach = Reach("rules", REQUIRED_TRANSITIONS)
    run_state_machine_as_test(
        ConversationRules,
        settings=settings(max_examples=100, stateful_step_count=40, deadline=None),
    )
    ConversationRules.reach.assert_reached()
