"""Random event sequences through the real storage, on SQLite and on PostgreSQL.

A hypothesis state machine drives `service.start_by_user`, `start_by_message` and `perform`
against a real `Database`, with several conversations, two users, two admins, two channels
and references into a second app (always refused). The expected outcome of every call is
computed with the pure rules on an in-memory copy of each conversation; after every step
each stored conversation and its parts must equal that copy and satisfy the spec's
invariants, and `service.check` must find no drift at the end of every run.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from tests.conftest import build_world
from tests.reach import Reach
from tests.test_rules_properties import (
    BASE,
    EVENT_KINDS,
    Ids,
    assert_invariants,
    event_strategies,
    steps,
    store_change,
    user_replies,
)
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.conversations import service
from threadline.conversations.repository import ConversationRepository, state_from_row
from threadline.core import events as ev
from threadline.core import rules
from threadline.core.enums import (
    AssistantType,
    AuthorKind,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
)
from threadline.core.errors import ConversationRemoved, DomainError, NotFound
from threadline.core.idempotency import IdempotencyKeyReused
from threadline.core.model import Author, ConversationState, Part
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts, conversations, messages

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    """The ids of one app and of a foreign one, created once per backend."""

    app_id: int
    default_channel_id: int
    foreign_app_id: int
    foreign_user_id: int
    ids: Ids


async def _setup(url: str) -> Setup:
    db = Database(url)
    try:
        world = await build_world(db)
        async with db.read() as conn:
            foreign_app = await AppRepository(conn).app(world.foreign_app_id)
        assert foreign_app is not None
        ids = Ids(
            user=world.user_id,
            admins=(world.admin_id, world.other_admin_id),
            channels=(world.default_channel_id, world.channel_id),
            sender=world.sender_id,
            foreign_admins=(world.foreign_admin_id,),
            foreign_channels=(world.foreign_channel_id,),
            foreign_senders=(foreign_app["default_sender_id"],),
        )
        return Setup(
            app_id=world.app_id,
            default_channel_id=world.default_channel_id,
            foreign_app_id=world.foreign_app_id,
            foreign_user_id=world.foreign_user_id,
            ids=ids,
        )
    finally:
        await db.dispose()


def _foreign_author(ids: Ids, author: Author | None) -> bool:
    if author is None:
        return False
    if author.kind is AuthorKind.ADMIN:
        return author.id not in ids.admins
    if author.kind is AuthorKind.SENDER:
        return author.id != ids.sender
    return False


def names_foreign(ids: Ids, event: ev.Event) -> bool:
    """Does the event name an admin, sender or channel that is not the app's own?"""
    if any(_foreign_author(ids, getattr(event, a, None)) for a in ("author", "by", "sender")):
        return True
    admin_id = getattr(event, "admin_id", None)
    if admin_id is not None and admin_id not in ids.admins:
        return True
    return isinstance(event, ev.ChangeChannel) and event.channel_id in ids.foreign_channels


def without_random_id(event: ev.Event) -> ev.Event:
    if getattr(event, "random_id", None) is None:
        return event
    return dataclasses.replace(event, random_id=None)  # type: ignore[type-var]


@dataclasses.dataclass(slots=True)
class Model:
    """What one stored conversation must look like."""

    state: ConversationState
    parts: list[Part]

    def part_with_key(self, key: tuple[str, int]) -> Part | None:
        found = [p for p in self.parts if (p.random_kind, p.random_id) == key]
        assert len(found) <= 1
        return found[0] if found else None


def _files(part_or_event: Any) -> list[tuple[str, int, str]]:
    return [(a.filename, a.size, a.mime_type) for a in part_or_event.attachments]


def true_retry(first: Part, event: ev.Event) -> bool:
    """Whether `event`, sent again with the key that stored `first`, asks for that same part
    (issue 17: a key reused with other content is refused, a true retry answers the part).
    Written from that rule: the same kind of part by the same author with the same body,
    structured body and files; an assignment to the same admin; the same tag."""
    match event:
        case ev.UserReply() | ev.AdminReply() | ev.ContentPart():
            kind = {ev.UserReply: PartType.REPLY_USER, ev.AdminReply: PartType.REPLY_ADMIN}
            same_kind = first.type is kind.get(type(event), getattr(event, "type", None))
            same_author = isinstance(event, ev.UserReply) or first.author == event.author
            return (
                same_kind
                and same_author
                and first.body == event.body
                and (first.body_json or None) == (event.body_json or None)
                and _files(first) == _files(event)
            )
        case ev.Assign():
            return first.assignee_id == event.admin_id
        case ev.AddTag() | ev.RemoveTag():
            return first.tag == event.tag
    return True


def attempt(fn: Callable[..., T], *args: Any) -> tuple[T | None, DomainError | None]:
    """Call `fn`; a refusal is returned, not raised."""
    try:
        return fn(*args), None
    except DomainError as exc:
        return None, exc


def _same_error(raised: DomainError | None, expected: DomainError) -> None:
    """The service refused the call exactly as the rules do."""
    assert raised is not None, f"the rules refuse this: {expected}"
    assert type(raised) is type(expected), (raised, expected)
    assert str(raised) == str(expected)


# The kinds of event the follow-up rule writes, each after what makes it change something.
FOLLOW_UPS = (
    "delay",
    "remove_tag",
    "update_status",
    "user_reply",
    "bot_hand_off",
    "admin_reply",
    "note",
    "add_tag",
    "assign",
    "reopen",
    "close",
    "read_by_admin",
    "change_channel",
    "bot_take_over",
    "remove",
    "read_by_user",
)

# Starting conversations stops at this many live ones: later steps write to them.
MAX_CONVERSATIONS = 5


class StorageMachine(RuleBasedStateMachine):
    """Several conversations of one app, written through the service, checked against a model."""

    url: ClassVar[str]
    setup: ClassVar[Setup]
    reach: ClassVar[Reach]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.db = Database(self.url, pool_size=2)
        self.ids = self.setup.ids
        self.now = BASE
        self.models: dict[int, Model] = {}
        self.order: list[int] = []
        self.started: dict[tuple[int, int], int] = {}  # (user, random_id) -> conversation
        # (conversation or "start", key...) -> the first event sent with that idempotency key
        self.first_sent: dict[tuple[object, ...], Any] = {}
        self.messages_made = 0
        # Fresh users per run: start_by_user's random_id is unique per user, whatever the run.
        self.users = tuple(
            self.run(apps.create_user(self.db, self.setup.app_id, props={"$name": f"U{i}"}))
            for i in range(2)
        )
        self.base_counts = self.run(self.load())[2]

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            assert self.run(service.check(self.db)) == []
        finally:
            self.run(self.db.dispose())
            self.loop.close()

    async def load(self) -> tuple[dict[int, ConversationState], dict[int, list[Part]], list[int]]:
        """This run's conversations and parts, and the row counts of the whole database."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(conversations).where(conversations.c.id.in_(self.order))
            )
            states = {s.id: s for s in map(state_from_row, rows)}
            parts = await ConversationRepository(conn).parts_of_many(self.order)
            counts = select(
                *(
                    select(func.count()).select_from(t).scalar_subquery()
                    for t in (conversations, conversation_parts, messages)
                )
            )
            return states, parts, list((await conn.execute(counts)).one())

    def tick(self, step: timedelta) -> datetime:
        self.now += step
        return self.now

    def call(self, coro: Any) -> tuple[Any, DomainError | None]:
        try:
            return self.run(coro), None
        except DomainError as exc:
            return None, exc

    def pick(self, which: int) -> int:
        """One of this run's conversations that are not removed (any, when all are)."""
        live = [cid for cid in self.order if self.models[cid].state.removed is None]
        choices = live or self.order
        return choices[which % len(choices)]

    def removed(self) -> list[int]:
        return [cid for cid in self.order if self.models[cid].state.removed is not None]

    # --- starting conversations ---------------------------------------------------------

    def start_user(
        self,
        user: int | None,
        reply: ev.UserReply,
        channel: int | None,
        external: bool,
        now: datetime,
    ) -> None:
        user_id = self.setup.foreign_user_id if user is None else self.users[user]
        if reply.random_id:  # a key used before resends its first reply: a true retry
            reply = self.first_sent.setdefault(("start", user_id, reply.random_id), reply)
        external_service, external_id = ("telegram", "chat-42") if external else (None, None)
        outcome, error = self.call(
            service.start_by_user(
                self.db,
                self.setup.app_id,
                user_id,
                reply,
                channel_id=channel,
                external_service=external_service,
                external_id=external_id,
                now=now,
            )
        )
        if user is None or channel in self.ids.foreign_channels:
            self.reach.hit("start_by_user: foreign reference")
            assert isinstance(error, NotFound), error
            return
        started_key = (user_id, reply.random_id) if reply.random_id else None
        if started_key in self.started:
            model = self.models[self.started[started_key]]
            stored = model.part_with_key(("reply", reply.random_id or 0))
            # A key a message's start used (its part carries no key) is reused here too.
            if stored is None or not true_retry(stored, reply):
                self.reach.hit("start_by_user: key reused")
                assert isinstance(error, IdempotencyKeyReused), error
                return
            self.reach.hit("start_by_user: retry")
            assert error is None
            assert outcome.duplicate
            assert outcome.state == model.state
            assert outcome.parts == [model.part_with_key(("reply", reply.random_id or 0))]
            return
        expected = rules.new_conversation(
            conversation_id=outcome.state.id if outcome else 0,
            app_id=self.setup.app_id,
            user_id=user_id,
            now=now,
            channel_id=channel or self.setup.default_channel_id,
        )
        expected.external_service, expected.external_id = external_service, external_id
        expected.start_random_id = reply.random_id or None
        change, refused = attempt(rules.apply, expected, reply, now)
        if refused is not None:
            self.reach.hit("start_by_user: refused")
            _same_error(error, refused)
            return
        self.reach.hit("start_by_user: started")
        assert change is not None
        assert error is None, error
        assert not outcome.duplicate
        self.adopt(change, outcome.parts, now)
        assert outcome.state == change.state
        if started_key:
            self.started[started_key] = outcome.state.id

    def adopt(self, change: rules.Change, stored: list[Part], now: datetime) -> None:
        """A new conversation the service created: the model takes the expected change."""
        model = Model(change.state, [])
        store_change(model.parts, change, [p.id for p in stored], now)
        assert stored == model.parts
        self.models[change.state.id] = model
        self.order.append(change.state.id)

    @initialize(
        reply=st.builds(ev.UserReply, body=st.sampled_from(["Hi", "Is anyone there?"])),
        random_id=st.sampled_from([None, 1]),
    )
    def first_conversation(self, reply: ev.UserReply, random_id: int | None) -> None:
        reply = dataclasses.replace(reply, random_id=random_id)
        before = len(self.models)
        self.start_user(0, reply, None, False, self.now)
        assert len(self.models) == before + 1

    @initialize(type_=st.sampled_from(list(ConversationType)), sender=st.integers(0, 2))
    def a_message_starts_one(self, type_: ConversationType, sender: int) -> None:
        """Every run also writes to a conversation that a message started."""
        self.start_by_message(
            None,
            1,
            sender,
            3,
            "Welcome!",
            type_,
            ReplyType.TEXT,
            RecipientType.ALL,
            MessageStatus.SENT,
            None,
            0,
            timedelta(0),
        )

    @precondition(lambda self: len(self.order) - len(self.removed()) < MAX_CONVERSATIONS)
    @rule(
        user=st.sampled_from([0, 1, None]),
        reply=user_replies(),
        channel=st.integers(0, 3),
        external=st.booleans(),
        step=steps(),
    )
    def start_by_user(
        self, user: int | None, reply: ev.UserReply, channel: int, external: bool, step: timedelta
    ) -> None:
        channels = (None, *self.ids.channels, *self.ids.foreign_channels)
        self.start_user(user, reply, channels[channel], external, self.tick(step))

    @precondition(lambda self: len(self.order) - len(self.removed()) < MAX_CONVERSATIONS)
    @rule(
        defect=st.sampled_from([None, None, None, None, "user", "sender", "channel", "body"]),
        user=st.sampled_from([0, 1]),
        sender=st.integers(0, 2),
        foreign_sender=st.integers(3, 5),
        body=st.sampled_from(["Welcome!", "Need help?"]),
        type_=st.sampled_from(list(ConversationType)),
        reply_type=st.sampled_from(list(ReplyType)),
        recipient_type=st.sampled_from(list(RecipientType)),
        status=st.sampled_from(list(MessageStatus)),
        sended_earlier=st.one_of(st.none(), st.integers(0, 3600)),
        channel=st.integers(0, 2),
        step=steps(),
    )
    def start_by_message(
        self,
        defect: str | None,
        user: int | None,
        sender: int,
        foreign_sender: int,
        body: str,
        type_: ConversationType,
        reply_type: ReplyType,
        recipient_type: RecipientType,
        status: MessageStatus,
        sended_earlier: int | None,
        channel: int,
        step: timedelta,
    ) -> None:
        """A valid message, or one with exactly one defect (each must be refused on its own)."""
        if defect == "user":
            user = None
        elif defect == "sender":
            sender = foreign_sender
        elif defect == "channel":
            channel = 3
        elif defect == "body":
            body = ""
        now = self.tick(step)
        ids = self.ids
        author = (
            Author(AuthorKind.SENDER, ids.sender),
            Author(AuthorKind.ADMIN, ids.admins[0]),
            Author(AuthorKind.BOT, 1),
            Author(AuthorKind.ADMIN, ids.foreign_admins[0]),
            Author(AuthorKind.SENDER, ids.foreign_senders[0]),
            Author(AuthorKind.USER, self.users[0]),
        )[sender]
        channel_id = (None, *ids.channels, *ids.foreign_channels)[channel]
        user_id = self.setup.foreign_user_id if user is None else self.users[user]
        sended_time = None if sended_earlier is None else now - timedelta(seconds=sended_earlier)
        result, error = self.call(
            service.start_by_message(
                self.db,
                self.setup.app_id,
                user_id,
                body=body,
                sender=author,
                type_=type_,
                reply_type=reply_type,
                recipient_type=recipient_type,
                status=status,
                sended_time=sended_time,
                channel_id=channel_id,
                now=now,
            )
        )
        if _foreign_author(ids, author) or user is None or channel_id in ids.foreign_channels:
            self.reach.hit("start_by_message: foreign reference")
            assert isinstance(error, NotFound), error
            return
        expected = rules.new_conversation(
            conversation_id=result.outcome.state.id if result else 0,
            app_id=self.setup.app_id,
            user_id=user_id,
            now=now,
            channel_id=channel_id or self.setup.default_channel_id,
        )
        event = ev.StartByMessage(
            message_id=result.message_id if result else 0,
            type=type_,
            reply_type=reply_type,
            sender=author,
            body=body,
            recipient_type=recipient_type,
            status=status,
            sended_time=sended_time,
        )
        change, refused = attempt(rules.apply, expected, event, now)
        if refused is not None:
            self.reach.hit("start_by_message: refused")
            _same_error(error, refused)
            return
        self.reach.hit("start_by_message: started")
        assert change is not None
        assert error is None, error
        self.adopt(change, result.outcome.parts, now)
        assert result.outcome.state == change.state
        self.messages_made += 1

    # --- events on existing conversations -----------------------------------------------

    def perform_events(
        self, which: int, events: list[ev.Event], step: timedelta, cid: int | None = None
    ) -> None:
        """Apply `events` in one `perform` call and compare with the model's prediction."""
        cid = self.pick(which) if cid is None else cid
        # A key used before on this conversation resends its first event: a true retry (the
        # same key with other content is refused, tests/api/test_idempotency_key_reused.py).
        events = [
            self.first_sent.setdefault((cid, *k), e) if k else e
            for e, k in ((e, service.idempotency_key(e)) for e in events)
        ]
        model = self.models[cid]
        now = self.tick(step)
        outcome, error = self.call(
            service.perform(self.db, self.setup.app_id, cid, *events, now=now)
        )
        kinds = "+".join(type(e).__name__ for e in events) if len(events) == 1 else "two events"
        if any(names_foreign(self.ids, e) for e in events):
            self.reach.hit(f"{kinds}: foreign reference")
            assert isinstance(error, NotFound), error
            return
        keys = [k for k in map(service.idempotency_key, events) if k is not None]
        first = model.part_with_key(keys[-1]) if keys else None
        if first is not None:
            keyed = [e for e in events if service.idempotency_key(e) == keys[-1]][-1]
            if not true_retry(first, keyed):
                self.reach.hit(f"{kinds}: key reused")
                assert isinstance(error, IdempotencyKeyReused), error
                return
            self.reach.hit(f"{kinds}: retry")
            assert error is None, error
            assert outcome.duplicate, "a retried write creates nothing"
            assert outcome.state == model.state
            assert outcome.parts == [first]
            return
        real_ids = iter([p.id for p in outcome.parts] if outcome else itertools.count(10**12))
        state, parts, created, changed = model.state, copy.deepcopy(model.parts), [], False

        def replay() -> None:
            nonlocal state, changed
            for event in events:
                change = rules.apply(state, event, now)
                if change.changed:
                    store_change(parts, change, [next(real_ids) for _ in change.parts], now)
                    # As inserted: a later event of the same call may mark them read in
                    # storage, but the outcome reports the parts the way they were created.
                    created.extend(copy.deepcopy(change.parts))
                    state, changed = change.state, True

        _, refused = attempt(replay)
        if refused is not None:
            removed = isinstance(refused, ConversationRemoved)
            self.reach.hit("removed conversation refuses" if removed else f"{kinds}: refused")
            _same_error(error, refused)
            return
        self.reach.hit(f"{kinds}: {'changed' if changed else 'no change'}")
        assert error is None, error
        assert not outcome.duplicate
        assert next(real_ids, None) is None, "the service stored more parts than expected"
        assert outcome.state == state
        assert outcome.parts == created
        model.state, model.parts = state, parts

    @rule(which=st.integers(0, 100), focus=st.integers(0, len(FOLLOW_UPS) - 1), step=steps())
    def follow_up(self, which: int, focus: int, step: timedelta) -> None:
        """Valid events of three kinds, each after what makes it change the conversation
        (a tag before its removal, a bot before its hand-off, ...).

        Random events (the `perform` rules) cover refusals and odd values; this rule makes
        sure that every kind of event is also stored, in every run, on every database.
        """
        for k in range(3):
            kind = FOLLOW_UPS[(focus + 5 * k) % len(FOLLOW_UPS)]
            self.follow_up_one(which + k, kind, step)

    def follow_up_one(self, which: int, kind: str, step: timedelta) -> None:
        cid = self.pick(which)
        if kind == "update_status":  # a conversation a message started
            started = [c for c in self.order if self.models[c].state.message_id is not None]
            live = [c for c in started if self.models[c].state.removed is None]
            if not live:
                return
            cid = live[which % len(live)]
        admin = Author(AuthorKind.ADMIN, self.ids.admins[which % 2])

        def state() -> ConversationState:
            return self.models[cid].state

        def perform(event: ev.Event) -> None:
            self.perform_events(which, [event], step, cid=cid)

        if kind == "remove_tag" and not state().tags:
            perform(ev.AddTag(tag="later", by=admin))
        if kind == "bot_hand_off" and state().assistant_type is None:
            perform(ev.BotTakeOver(assistant_type=AssistantType.ROUTING_BOT))
        if kind == "reopen" and not state().closed:
            perform(ev.Close(by=admin))
        if kind == "read_by_admin" and not state().admin_unread_count:
            perform(ev.UserReply(body="Hello?"))
        s = state()
        others = [a for a in self.ids.admins if a != s.assignee_id]
        statuses = [m for m in MessageStatus if m is not s.status]
        channels = [c for c in self.ids.channels if c != s.channel_id]
        bots = [b for b in AssistantType if b is not s.assistant_type]
        event: ev.Event = {
            "delay": lambda: ev.Delay(until=self.now + step + timedelta(hours=1), by=admin),
            "remove_tag": lambda: ev.RemoveTag(tag=s.tags[0] if s.tags else "x", by=admin),
            "update_status": lambda: ev.UpdateStatus(status=statuses[which % len(statuses)]),
            "user_reply": lambda: ev.UserReply(body="Back again"),
            "bot_hand_off": lambda: ev.BotHandOff(admin_id=others[0], by=admin),
            "admin_reply": lambda: ev.AdminReply(author=admin, body="We are on it"),
            "note": lambda: ev.ContentPart(type=PartType.NOTE, author=admin, body="Call back"),
            "add_tag": lambda: ev.AddTag(tag=("vip", "billing", "bug")[which % 3], by=admin),
            "assign": lambda: ev.Assign(admin_id=others[0], by=admin),
            "reopen": lambda: ev.Reopen(by=admin),
            "close": lambda: ev.Close(by=admin),
            "read_by_admin": lambda: ev.ReadByAdmin(),
            "change_channel": lambda: ev.ChangeChannel(channel_id=channels[0], by=admin),
            "bot_take_over": lambda: ev.BotTakeOver(assistant_type=bots[which % len(bots)]),
            "remove": lambda: ev.Remove(),
            "read_by_user": lambda: ev.ReadByUser(),
        }[kind]()
        perform(event)

    @rule(which=st.integers(0, 100), step=steps())
    def foreign_app_is_refused(self, which: int, step: timedelta) -> None:
        cid = self.pick(which)
        now = self.tick(step)
        _, error = self.call(
            service.perform(self.db, self.setup.foreign_app_id, cid, ev.ReadByAdmin(), now=now)
        )
        assert isinstance(error, NotFound)
        _, error = self.call(service.get_conversation(self.db, self.setup.foreign_app_id, cid))
        assert isinstance(error, NotFound)
        _, error = self.call(service.get_parts(self.db, self.setup.foreign_app_id, cid))
        assert isinstance(error, NotFound)

    # --- checks -------------------------------------------------------------------------

    @invariant()
    def storage_matches_model(self) -> None:
        states, parts, counts = self.run(self.load())
        assert sorted(states) == sorted(self.models)
        for cid, model in self.models.items():
            assert states[cid] == model.state
            assert parts[cid] == model.parts
            assert_invariants(states[cid], parts[cid])
        conv_count, part_count, message_count = counts
        base_conv, base_parts, base_messages = self.base_counts
        assert conv_count == base_conv + len(self.models), "a refused start leaves no row"
        assert part_count == base_parts + sum(len(m.parts) for m in self.models.values())
        assert message_count == base_messages + self.messages_made


def machine_for(url: str, setup: Setup) -> type[StorageMachine]:
    """The machine bound to one database; its event strategies name that database's ids."""
    strategies = event_strategies(setup.ids)
    # Replies (what most writes are) count three times; removal ends a conversation's
    # useful life: single events leave it out, pairs include it rarely.
    replies = ["user_reply", "admin_reply", "content_part"] * 2
    singles = [strategies[n] for n in [*strategies, *replies] if n != "remove"]
    one_event = st.one_of(singles)
    any_event = st.one_of(singles * 2 + [strategies["remove"]])

    class Machine(StorageMachine):
        @rule(
            which=st.integers(0, 100),
            events=st.lists(one_event, min_size=1, max_size=8),
            step=steps(),
        )
        def perform(self, which: int, events: list[ev.Event], step: timedelta) -> None:
            """A burst of writes to one conversation, one `perform` call each."""
            cid = self.pick(which)
            for event in events:
                self.perform_events(which, [event], step, cid=cid)

        @rule(which=st.integers(0, 100), first=any_event, second=any_event, step=steps())
        def perform_two_at_once(
            self, which: int, first: ev.Event, second: ev.Event, step: timedelta
        ) -> None:
            """Two events in one transaction: both happen, or (one refused) neither."""
            self.perform_events(which, [without_random_id(first), without_random_id(second)], step)

        @precondition(lambda self: bool(self.removed()))
        @rule(which=st.integers(0, 100), event=any_event, step=steps())
        def perform_on_removed(self, which: int, event: ev.Event, step: timedelta) -> None:
            """A removed conversation refuses every event (a second removal: no change)."""
            removed = self.removed()
            cid = removed[which % len(removed)]
            self.perform_events(which, [event], step, cid=cid)

    Machine.url = url
    Machine.setup = setup
    return Machine


# What every run must reach, on each database: each event kind changing a stored
# conversation, both ways to start one, retries, refusals and removed conversations.
STORAGE_TRANSITIONS = (
    *(
        f"{kind.__name__}: changed"
        for kind in EVENT_KINDS
        if kind not in (ev.StartByMessage, ev.Remove)
    ),
    "two events: changed",
    "two events: refused",
    "removed conversation refuses",
    "start_by_user: started",
    "start_by_message: started",
    # Counted and reported, not guarded (a run of this size reaches them in most runs, not
    # all): retries of each kind, refusals of starts, foreign references of each kind.
)


def test_random_events_through_storage(db_url: str) -> None:
    setup = asyncio.run(_setup(db_url))
    machine = machine_for(db_url, setup)
    machine.reach = Reach(f"storage on {db_url.split(':')[0]}", STORAGE_TRANSITIONS)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    machine.reach.assert_reached()
