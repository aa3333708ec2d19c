"""A small app with a random history, written through the engine, and brute-force answers.

`Scene` drives conversations with random events on a virtual clock (every write carries
its own `now`); `reference_*` compute what every view, count and search must answer from
the stored conversation rows alone, in plain Python.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from threadline.apps import service as apps
from threadline.conversations import service
from threadline.conversations.repository import part_from_row, state_from_row
from threadline.core import events as ev
from threadline.core.enums import AssistantType, AuthorKind, PartType
from threadline.core.errors import DomainError
from threadline.core.model import Author, ConversationState, Part
from threadline.db.engine import Database
from threadline.db.schema import conversation_parts, conversations
from threadline.inbox.counts import Counts
from threadline.inbox.views import STATUSES, Status, View

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TAGS = ("billing", "vip", "bug", "urgent")
WORDS = (
    "invoice", "refund", "password", "shipping", "order", "thanks", "hello", "export",
    "webhook", "discount", "ok", "no", "it", "a",
)  # fmt: skip


@dataclass
class Scene:
    db: Database
    rng: random.Random
    app_id: int = 0
    admins: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    conversations: list[int] = field(default_factory=list)
    now: datetime = START
    foreign_app_id: int = 0
    foreign_conversation: int = 0

    async def setup(self, conversations: int) -> None:
        app = await apps.create_app(self.db, "Acme")
        self.app_id = app.app_id
        self.channels = [app.default_channel_id]
        for name in ("Sales", "Billing"):
            self.channels.append(await apps.create_channel(self.db, self.app_id, name))
        for name in ("Ann", "Bob", "Cy"):
            self.admins.append(await apps.create_admin(self.db, self.app_id, name))
        for i in range(4):
            self.users.append(await apps.create_user(self.db, self.app_id, site_user_id=f"u{i}"))
        foreign = await apps.create_app(self.db, "Other")
        self.foreign_app_id = foreign.app_id
        user = await apps.create_user(self.db, foreign.app_id, site_user_id="x")
        outcome = await service.start_by_user(
            self.db, foreign.app_id, user, ev.UserReply(body="invoice refund hello"), now=self.now
        )
        self.foreign_conversation = outcome.state.id
        for _ in range(conversations):
            await self.start()

    def tick(self, seconds: int = 7) -> datetime:
        self.now += timedelta(seconds=seconds, microseconds=self.rng.randint(0, 999_999))
        return self.now

    def text(self) -> str:
        words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 6))]
        if self.rng.random() < 0.3:
            words.insert(0, self.rng.choice(WORDS).capitalize() + ",")
        return " ".join(words) + self.rng.choice((".", "!", "?", ""))

    def admin(self) -> Author:
        return Author(AuthorKind.ADMIN, self.rng.choice(self.admins))

    async def start(self) -> int:
        user = self.rng.choice(self.users)
        channel = self.rng.choice(self.channels)
        if self.rng.random() < 0.8:
            outcome = await service.start_by_user(
                self.db, self.app_id, user, ev.UserReply(body=self.text()),
                channel_id=channel, now=self.tick(),
            )  # fmt: skip
            ident = outcome.state.id
        else:
            started = await service.start_by_message(
                self.db, self.app_id, user, body=self.text(), sender=self.admin(),
                channel_id=channel, now=self.tick(),
            )  # fmt: skip
            ident = started.outcome.state.id
        self.conversations.append(ident)
        return ident

    def random_event(self) -> ev.Event:
        r = self.rng
        by = self.admin()
        choice = r.randrange(15)
        if choice == 0:
            return ev.UserReply(body=self.text())
        if choice == 1:
            return ev.AdminReply(author=by, body=self.text())
        if choice == 2:
            return ev.ContentPart(PartType.NOTE, by, body=self.text())
        if choice == 3:
            return ev.Assign(r.choice([None, *self.admins]), by)
        if choice == 4:
            return ev.Close(by)
        if choice == 5:
            return ev.Reopen(by)
        if choice == 6:
            # Snoozes that end soon, so that moving the clock ends some of them.
            return ev.Delay(self.now + timedelta(seconds=r.randint(30, 3000)), by)
        if choice == 7:
            return ev.Delay(None, by)
        if choice == 8:
            return ev.AddTag(r.choice(TAGS), by, strict=False)
        if choice == 9:
            return ev.RemoveTag(r.choice(TAGS), by, strict=False)
        if choice == 10:
            return ev.ChangeChannel(r.choice([None, *self.channels]), by)
        if choice == 11:
            return ev.ReadByAdmin()
        if choice == 12:
            return ev.BotTakeOver(r.choice(list(AssistantType)))
        if choice == 13:
            return ev.BotHandOff(admin_id=r.choice([None, *self.admins]), by=by)
        return ev.Remove() if r.random() < 0.2 else ev.UserReply(body=self.text())

    async def step(self) -> None:
        """One random write: usually an event on an existing conversation."""
        if self.rng.random() < 0.05:
            await self.start()
            return
        ident = self.rng.choice(self.conversations)
        event = self.random_event()
        # A refused event (e.g. on a removed conversation) changes nothing.
        with contextlib.suppress(DomainError):
            await service.perform(self.db, self.app_id, ident, event, now=self.tick())

    async def states(self) -> list[ConversationState]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(conversations).where(conversations.c.app_id == self.app_id)
            )
            return [state_from_row(r) for r in rows]

    async def parts(self) -> dict[int, list[Part]]:
        found: dict[int, list[Part]] = {}
        async with self.db.read() as conn:
            query = (
                select(conversation_parts)
                .join(conversations, conversations.c.id == conversation_parts.c.conversation_id)
                .where(conversations.c.app_id == self.app_id)
                .order_by(conversation_parts.c.id)
            )
            for row in await conn.execute(query):
                part = part_from_row(row)
                found.setdefault(part.conversation_id, []).append(part)
        return found


def status_of(state: ConversationState, now: datetime) -> Status:
    if state.closed:
        return "closed"
    if state.delayed_until is not None and now < state.delayed_until:
        return "delayed"
    return "open"


def in_inbox(state: ConversationState) -> bool:
    return state.replied and state.removed is None


def in_view(state: ConversationState, view: View, now: datetime) -> bool:
    return (
        in_inbox(state)
        and (view.status is None or status_of(state, now) == view.status)
        and (view.assignee is None or (state.assignee_id or 0) == view.assignee)
        and (view.channel is None or (state.channel_id or 0) == view.channel)
        and (view.tag is None or view.tag in state.tags)
        and (view.important is None or state.important == view.important)
    )


def newest_first(states: list[ConversationState]) -> list[int]:
    return [s.id for s in sorted(states, key=lambda s: (s.last_update, s.id), reverse=True)]


def reference_page(states: list[ConversationState], view: View, now: datetime) -> list[int]:
    return newest_first([s for s in states if in_view(s, view, now)])


def reference_counts(states: list[ConversationState], view: View, now: datetime) -> Counts:
    inbox = [s for s in states if in_inbox(s)]
    statuses = {
        status: sum(
            1 for s in inbox if in_view(s, View(status, view.assignee, view.channel, view.tag,
                                                view.important), now)
        )
        for status in STATUSES
    }  # fmt: skip
    mine = [s for s in inbox if view.status is None or status_of(s, now) == view.status]
    assignees = Counter(s.assignee_id for s in mine if s.assignee_id)
    channels = Counter(s.channel_id or 0 for s in mine)
    tags = Counter(t for s in mine for t in s.tags)
    return Counts(
        view=sum(1 for s in inbox if in_view(s, view, now)),
        statuses=statuses,
        total=len(mine),
        unassigned=sum(1 for s in mine if s.assignee_id is None),
        important=sum(1 for s in mine if s.important),
        assignees=dict(sorted(assignees.items())),
        channels=dict(sorted(channels.items())),
        tags=dict(sorted(tags.items())),
    )


TERM = re.compile(r"[^\W_]+")


def part_matches(body: str, terms: list[str]) -> bool:
    """A term of 3+ characters matches inside words; a shorter one only a whole word."""
    lowered = body.lower()
    words = set(TERM.findall(lowered))
    return all((t in lowered) if len(t) >= 3 else (t in words) for t in terms)


SEARCHABLE = frozenset(t for t in PartType) - frozenset(
    {
        PartType.ASSIGNED, PartType.CLOSED, PartType.OPENED, PartType.DELAYED,
        PartType.TAG_ADDED, PartType.TAG_DELETED, PartType.CHANNEL_CHANGED, PartType.SERVICE,
    }
)  # fmt: skip


def reference_search(
    states: list[ConversationState],
    parts: dict[int, list[Part]],
    q: str,
    view: View,
    now: datetime,
) -> list[tuple[int, int]]:
    """(conversation id, id of its newest matching part), newest conversation first."""
    terms = [t.lower() for t in TERM.findall(q)]
    found: dict[int, int] = {}
    for s in states:
        if not in_view(s, view, now):
            continue
        matching = [p.id for p in parts.get(s.id, []) if p.body and part_matches(p.body, terms)]
        if matching:
            found[s.id] = max(matching)
    order = newest_first([s for s in states if s.id in found])
    return [(i, found[i]) for i in order]
