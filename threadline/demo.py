"""Demo data: one app with operators, channels, users and conversations in every state.

Every conversation is written through the conversation engine (`conversations.service`),
event by event with its own timestamp, so the data is exactly what real traffic would leave
behind and `threadline check` finds nothing to repair. The first conversations walk through
every scenario once, so even a small `count` covers each state the spec names; the rest are
drawn by weight.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import select

from threadline import demo_bulk as bulk_path
from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core import rules
from threadline.core.access import Role
from threadline.core.enums import (
    AssistantType,
    AuthorKind,
    ConversationType,
    MessageStatus,
    PartType,
    RecipientType,
    ReplyType,
    SentVia,
)
from threadline.core.model import Author, ConversationState, Part
from threadline.db.engine import Database
from threadline.db.schema import channels as channels_t

DEMO_OPERATOR_EMAIL = "operator@example.com"
DEMO_OPERATOR_NAME = "Olivia Bennett"
DEFAULT_CONVERSATIONS = 300
# The conversations start over this many past days and end this long before now, so
# that no event of the last conversation (a few hours long at most) lies in the future.
HISTORY = timedelta(days=28)
HISTORY_END = timedelta(hours=6)

FIRST_NAMES = (
    "Emma", "Liam", "Sofia", "Noah", "Mia", "Lucas", "Amelia", "Mateo", "Chloe", "Ethan",
    "Hannah", "Arjun", "Yuki", "Omar", "Lena", "Diego", "Priya", "Jonas", "Aisha", "Tomás",
    "Grace", "Felix", "Nora", "Ivan", "Zoe", "Kenji", "Maya", "Leo", "Elif", "Samuel",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Garcia", "Müller", "Rossi", "Kowalski", "Johnson", "Nguyen", "Silva", "Novak",
    "Kim", "Brown", "Dubois", "Jensen", "Patel", "Schmidt", "Lopez", "Ivanova", "Tanaka",
    "Wilson", "Hansen", "Moreau", "Costa", "Clarke", "Fischer", "Reyes",
)  # fmt: skip
MAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "icloud.com", "fastmail.com")
CITIES = ("Berlin", "Lisbon", "Austin", "Toronto", "Warsaw", "Melbourne", "Osaka", "Madrid")
PLANS = ("free", "starter", "pro", "business")
OPERATORS = (
    ("Daniel Okafor", "daniel@example.com"),
    ("Marta Lindqvist", "marta@example.com"),
    ("Sam Carter", "sam@example.com"),
)
CHANNELS = ("Support", "Sales", "Billing")


@dataclass(frozen=True, slots=True)
class Topic:
    """A short support dialogue: lines alternate user, operator, user, ... from the user."""

    tag: str
    channel: str
    lines: tuple[str, ...]
    note: str
    article: str


TOPICS = (
    Topic(
        "billing",
        "Billing",
        (
            "Hi, I think I was charged twice for my March invoice.",
            "Hi {first}, sorry about that! Let me look at your account.",
            "Thanks. Both charges are $49, on March 3rd.",
            "You're right, the second one is a duplicate. I've refunded it; the money should "
            "be back in 3-5 business days.",
            "Great, thank you for the quick help!",
            "You're welcome! Anything else I can do for you?",
        ),
        "Duplicate charge from the payment retry bug, refunded in Stripe.",
        "Understanding your invoice",
    ),
    Topic(
        "login",
        "Support",
        (
            "I can't log in, it says my password is wrong but I just reset it.",
            "Hi {first}! Could you try the reset link once more? Old links stop working once "
            "a newer one is sent.",
            "That worked, I'm in. The first e-mail took ages to arrive though.",
            "Glad it works now! Our mail provider had delays this morning, sorry for that.",
        ),
        "Second report of slow reset e-mails today, checking with the mail provider.",
        "How to reset your password",
    ),
    Topic(
        "shipping",
        "Support",
        (
            "Hello, my order #{order} still says 'processing' after a week.",
            "Hi {first}, let me check with the warehouse.",
            "Any news? I need it before the weekend.",
            "It left the warehouse this morning: tracking number 1Z{order}999. It should arrive "
            "on Friday.",
            "Perfect, thanks!",
        ),
        "Warehouse backlog after the holiday; order shipped with express upgrade.",
        "Shipping times and tracking",
    ),
    Topic(
        "pricing",
        "Sales",
        (
            "Do you have a discount for teams of 20 people?",
            "Hi {first}! Yes, from 10 seats the Business plan is 20% off with yearly billing.",
            "Sounds good. Can we pay by bank transfer?",
            "Absolutely, I'll send you a quote with our bank details today.",
            "Great, please send it to my work e-mail.",
        ),
        "Lead: 20 seats, yearly. Send the quote by end of day.",
        "Plans and pricing",
    ),
    Topic(
        "api",
        "Support",
        (
            "Our webhook endpoint gets 401 responses since yesterday's deploy.",
            "Hi {first}, did you rotate the API token during the deploy?",
            "We did... and forgot to update the signing secret. Fixed now, sorry!",
            "No problem, happens to everyone. Deliveries will be retried automatically.",
        ),
        "Customer rotated the token, not a bug on our side.",
        "Webhooks: signatures and retries",
    ),
    Topic(
        "bug",
        "Support",
        (
            "Exporting to CSV gives me an empty file.",
            "Hi {first}, thanks for the report! Which browser are you using?",
            "Firefox 128 on Windows.",
            "We reproduced it and a fix ships tomorrow. Meanwhile the export works in Chrome.",
            "OK, I'll use Chrome until then.",
        ),
        "Bug: CSV export empty on Firefox, fix in tomorrow's release.",
        "Exporting your data",
    ),
    Topic(
        "cancellation",
        "Billing",
        (
            "How do I cancel my subscription?",
            "Hi {first}, sorry to see you go! May I ask what made you decide to cancel?",
            "We're a small team and don't use it enough right now.",
            "Understood. Would pausing the account for 3 months at no cost help?",
            "Oh, that would be perfect actually.",
            "Done, your account is paused until the end of the quarter.",
        ),
        "Offered a pause instead of cancelling, accepted.",
        "Pausing or cancelling your subscription",
    ),
    Topic(
        "feature",
        "Sales",
        (
            "Is there a dark mode? My eyes would thank you.",
            "Hi {first}! Not yet, but it's on our roadmap for this quarter.",
            "Nice, please let me know when it's out.",
            "Will do, I've added you to the list of people to notify.",
        ),
        "Feature request: dark mode (+1).",
        "What's new this month",
    ),
)


@dataclass(frozen=True, slots=True)
class Starter:
    """An outbound message that opens a conversation."""

    type: ConversationType
    reply_type: ReplyType
    recipient_type: RecipientType
    sent_via: SentVia
    body: str
    answer: str
    statuses: tuple[MessageStatus, ...]


_DELIVERED = (MessageStatus.SENT, MessageStatus.DELIVERED)
_EMAIL_ENDS = (
    MessageStatus.DELIVERED,
    MessageStatus.ACCEPTED,
    MessageStatus.BOUNCED,
    MessageStatus.COMPLAINED,
    MessageStatus.DROPPED,
    MessageStatus.ERROR,
)

STARTERS = (
    Starter(
        ConversationType.EMAIL,
        ReplyType.EMAIL,
        RecipientType.ALL,
        SentVia.MESSAGE_AUTO,
        "Your trial ends in 3 days\n\nHi {first}, your trial ends soon. Reply to this e-mail "
        "if you have any questions about our plans.",
        "Can I extend the trial by a week? We haven't finished testing.",
        _EMAIL_ENDS,
    ),
    Starter(
        ConversationType.INCOMING_EMAIL,
        ReplyType.EMAIL,
        RecipientType.ALL,
        SentVia.EMAIL_ADMIN,
        "Re: your invoice #{order}\n\nHi {first}, attached is the corrected invoice.",
        "Thanks, the VAT number is right now.",
        (MessageStatus.DELIVERED, MessageStatus.SENT),
    ),
    Starter(
        ConversationType.POPUP_SMALL,
        ReplyType.TEXT,
        RecipientType.WEB,
        SentVia.MESSAGE_AUTO,
        "Need a hand choosing a plan? We're online.",
        "Yes, what's the difference between Starter and Pro?",
        _DELIVERED,
    ),
    Starter(
        ConversationType.POPUP_BIG,
        ReplyType.EMAIL,
        RecipientType.WEB,
        SentVia.MESSAGE_AUTO,
        "Get 10% off your first order: leave your e-mail and we'll send the code.",
        "{email}",
        _DELIVERED,
    ),
    Starter(
        ConversationType.BLOCK_POPUP_SMALL,
        ReplyType.BUTTON,
        RecipientType.WEB,
        SentVia.MESSAGE_AUTO,
        "Was this page helpful?",
        "No, I still can't find the API limits.",
        _DELIVERED,
    ),
    Starter(
        ConversationType.BLOCK_POPUP_BIG,
        ReplyType.PHONE,
        RecipientType.WEB,
        SentVia.MESSAGE_AUTO,
        "Want a call back? Leave your number and a sales manager will ring you within an hour.",
        "{phone}",
        _DELIVERED,
    ),
    Starter(
        ConversationType.POPUP_CHAT,
        ReplyType.TEXT,
        RecipientType.ALL,
        SentVia.MESSAGE_MANUAL,
        "Hi {first}, I noticed you've been looking at the integrations page. Any questions?",
        "Actually yes, do you integrate with Shopify?",
        _DELIVERED,
    ),
    Starter(
        ConversationType.LEAD_BOT,
        ReplyType.BUTTON,
        RecipientType.WEB,
        SentVia.MESSAGE_CHAT_BOT,
        "Hi! What brings you here today? [Pricing] [Support] [Just browsing]",
        "Pricing",
        _DELIVERED,
    ),
    Starter(
        ConversationType.ROUTING_BOT,
        ReplyType.BUTTON,
        RecipientType.ALL,
        SentVia.MESSAGE_CHAT_BOT,
        "Which team do you need? [Sales] [Billing] [Technical support]",
        "Technical support",
        _DELIVERED,
    ),
    Starter(
        ConversationType.PUSH,
        ReplyType.PUSH,
        RecipientType.WEB,
        SentVia.MESSAGE_AUTO,
        "Your order #{order} has shipped! Tap to track it.",
        "When will it arrive exactly?",
        (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.ERROR),
    ),
    Starter(
        ConversationType.SDK_PUSH,
        ReplyType.NO,
        RecipientType.SDK,
        SentVia.MESSAGE_AUTO,
        "New in the app: offline mode. Update to try it.",
        "",
        (MessageStatus.SENT, MessageStatus.DELIVERED),
    ),
)

BOT_QUESTIONS = (
    "What's your e-mail, so we can get back to you?",
    "How many people are on your team?",
    "Which product are you asking about?",
)
_BOT = Author(AuthorKind.BOT)
_SYSTEM = Author.system()


@dataclass(slots=True)
class DemoResult:
    app_id: int
    token: str
    operator_email: str
    operator_password: str
    conversations: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Person:
    id: int
    first: str
    email: str
    phone: str


class _Thread:
    """One conversation being written: its own clock moves forward with every event."""

    def __init__(self, demo: _Demo, start: datetime) -> None:
        self.demo = demo
        self.now = start
        self.id = 0
        self.user = demo.rng.choice(demo.users)
        self.topic = demo.rng.choice(TOPICS)
        self.admin = demo.rng.choice(demo.admins)
        self.order = demo.rng.randint(10_000, 99_999)

    def text(self, template: str) -> str:
        return template.format(
            first=self.user.first, email=self.user.email, phone=self.user.phone, order=self.order
        )

    @property
    def operator(self) -> Author:
        return Author(AuthorKind.ADMIN, self.admin)

    async def user_starts(
        self,
        *,
        in_topic_channel: bool = True,
        external_service: str | None = None,
        external_id: str | None = None,
    ) -> None:
        """The user writes first, with the topic's opening line."""
        outcome = await service.start_by_user(
            self.demo.db,
            self.demo.app_id,
            self.user.id,
            ev.UserReply(body=self.text(self.topic.lines[0])),
            channel_id=self.demo.channels[self.topic.channel] if in_topic_channel else None,
            external_service=external_service,
            external_id=external_id,
            now=self.now,
        )
        self.id = outcome.state.id

    async def by_message(self, starter: Starter, sender: Author) -> None:
        started = await service.start_by_message(
            self.demo.db,
            self.demo.app_id,
            self.user.id,
            body=self.text(starter.body),
            sender=sender,
            type_=starter.type,
            reply_type=starter.reply_type,
            recipient_type=starter.recipient_type,
            status=MessageStatus.CREATED,
            sent_via=starter.sent_via,
            now=self.now,
        )
        self.id = started.outcome.state.id
        # Delivery goes created -> rendered -> sent -> its final status; a message that was
        # dropped or failed never got sent.
        final = self.demo.rng.choice(starter.statuses)
        if final in (MessageStatus.DROPPED, MessageStatus.ERROR):
            path = [MessageStatus.RENDERED, final]
        else:
            path = [MessageStatus.RENDERED, MessageStatus.SENT]
            if final is not MessageStatus.SENT:
                path.append(final)
        for status in path:
            await self.do(ev.UpdateStatus(status), gap=(0, 1))

    async def do(self, *events: ev.Event, gap: tuple[int, int] = (1, 20)) -> None:
        """Perform `events` a few minutes (`gap`, from-to) later, never past the present."""
        step = timedelta(minutes=self.demo.rng.randint(*gap), seconds=self.demo.rng.random())
        self.now = min(self.now + step, self.demo.latest)
        await service.perform(self.demo.db, self.demo.app_id, self.id, *events, now=self.now)

    async def dialogue(self, lines: int) -> None:
        """Play the topic's lines [1:lines): line 0 is the one that started the conversation."""
        for index in range(1, min(lines, len(self.topic.lines))):
            body = self.text(self.topic.lines[index])
            if index % 2 == 0:
                await self.do(ev.UserReply(body=body))
            else:
                await self.do(ev.AdminReply(author=self.operator, body=body))


# Each scenario writes one conversation and leaves it in the state it is named after.
Scenario = Callable[[_Thread], Awaitable[None]]


async def _waiting(t: _Thread) -> None:
    """Open, unassigned, not answered yet: at the top of the inbox."""
    await t.user_starts()


async def _answered_open(t: _Thread) -> None:
    """Open and assigned, the operator answered and the user has read it."""
    await t.user_starts()
    await t.do(ev.Assign(t.admin, by=t.operator), ev.ReadByAdmin())
    await t.dialogue(2)
    await t.do(ev.ReadByUser(), gap=(1, 5))


async def _user_waiting_again(t: _Thread) -> None:
    """Open and assigned; the user answered last, unread by the operators."""
    await t.user_starts()
    await t.do(ev.Assign(t.admin, by=t.operator))
    await t.dialogue(3)


async def _closed(t: _Thread) -> None:
    """The whole dialogue, then closed by the operator."""
    await t.user_starts()
    await t.do(ev.Assign(t.admin, by=t.operator))
    await t.dialogue(len(t.topic.lines))
    await t.do(ev.ReadByUser(), ev.ReadByAdmin(), gap=(1, 30))
    await t.do(ev.Close(by=t.operator), gap=(1, 10))


async def _reopened_by_user(t: _Thread) -> None:
    """Closed, then the user wrote again: reopened, in a new part group."""
    await _closed(t)
    await t.do(ev.UserReply(body="Sorry, one more question: will this show on my next bill?"))


async def _reopened_by_operator(t: _Thread) -> None:
    """Closed, then reopened by an operator to follow up."""
    await _closed(t)
    await t.do(ev.Reopen(by=t.operator), gap=(60, 600))
    follow_up = "Hi {first}, just checking in: is everything working fine since?"
    await t.do(ev.AdminReply(author=t.operator, body=t.text(follow_up)), gap=(0, 2))


async def _delayed(t: _Thread) -> None:
    """Snoozed until a day in the coming week: out of the open inbox until then."""
    await t.user_starts()
    await t.dialogue(2)
    await t.do(ev.ContentPart(PartType.NOTE, t.operator, body="Waiting for the team, snoozing."))
    until = t.demo.present + timedelta(
        days=t.demo.rng.randint(1, 7), hours=t.demo.rng.randint(0, 8)
    )
    await t.do(ev.Delay(until, by=t.operator), gap=(0, 2))


async def _delay_passed(t: _Thread) -> None:
    """Snoozed for an hour long ago: back in the open inbox with no write needed."""
    await t.user_starts()
    await t.dialogue(2)
    await t.do(ev.Delay(t.now + timedelta(hours=1), by=t.operator), gap=(0, 2))


async def _tagged(t: _Thread) -> None:
    """Tagged by topic; a wrong tag added and removed again."""
    await t.user_starts()
    await t.do(ev.AddTag(t.topic.tag, by=t.operator), ev.AddTag("urgent", by=t.operator))
    await t.dialogue(4)
    await t.do(ev.RemoveTag("urgent", by=t.operator), ev.AddTag("vip", by=t.operator))


async def _noted(t: _Thread) -> None:
    """Internal notes between operators, invisible to the user."""
    await t.user_starts()
    await t.do(ev.ContentPart(PartType.NOTE, t.operator, body=t.topic.note))
    other = Author(AuthorKind.ADMIN, t.demo.rng.choice(t.demo.admins))
    await t.do(ev.ContentPart(PartType.NOTE, other, body="Thanks, I'll take it from here."))
    await t.dialogue(3)


async def _article(t: _Thread) -> None:
    """The operator answers with a knowledge-base article."""
    await t.user_starts()
    slug = t.topic.article.lower().replace(" ", "-").replace(":", "").replace("'", "")
    await t.do(
        ev.ContentPart(
            PartType.ARTICLE,
            t.operator,
            body=t.topic.article,
            body_json={"title": t.topic.article, "url": f"https://help.example.com/{slug}"},
        )
    )
    await t.do(ev.ReadByUser(), ev.UserReply(body="That article answered it, thanks!"))
    await t.do(ev.Close(by=t.operator), gap=(5, 60))


async def _channel_moved(t: _Thread) -> None:
    """Started in the default inbox, moved to its topic's channel, then assigned."""
    await t.user_starts(in_topic_channel=False)
    await t.do(
        ev.ChangeChannel(t.demo.channels[t.topic.channel], by=t.operator),
        ev.Assign(t.admin, by=t.operator),
    )
    await t.dialogue(2)


async def _reassigned(t: _Thread) -> None:
    """Assigned, handed to a colleague, then unassigned back to the team."""
    await t.user_starts()
    await t.do(ev.Assign(t.admin, by=t.operator))
    await t.dialogue(2)
    colleague = next(a for a in t.demo.admins if a != t.admin)
    await t.do(ev.Assign(colleague, by=t.operator))
    await t.do(ev.Assign(None, by=Author(AuthorKind.ADMIN, colleague)))


async def _messenger(t: _Thread) -> None:
    """Through a messenger integration, with a bot managing it."""
    service_name = t.demo.rng.choice(("telegram", "whatsapp", "facebook", "viber", "instagram"))
    await t.user_starts(
        external_service=service_name, external_id=f"{service_name}-{t.demo.rng.randint(1, 10**9)}"
    )
    if service_name in ("telegram", "facebook"):
        assistant = AssistantType(f"{service_name}_bot")
        await t.do(ev.BotTakeOver(assistant), gap=(0, 1))
        await t.do(
            ev.ContentPart(
                PartType.AUTO_REPLY,
                _BOT,
                body="Thanks for your message! An operator will answer shortly.",
                sent_via=SentVia.INTEGRATIONS,
            ),
            gap=(0, 1),
        )
    else:
        await t.dialogue(3)


async def _bot_managed(t: _Thread) -> None:
    """A lead bot opened it and still manages it: the user is answering its questions."""
    starter = t.demo.rng.choice([s for s in STARTERS if s.type is ConversationType.LEAD_BOT])
    await t.by_message(starter, _BOT)
    await t.do(ev.BotTakeOver(AssistantType.LEAD_BOT), gap=(0, 1))
    await t.do(ev.UserReply(body=t.text(starter.answer)))
    question = t.demo.rng.choice(BOT_QUESTIONS)
    await t.do(ev.ContentPart(PartType.CHAT_BOT_USER, _BOT, body=question), gap=(0, 1))


async def _handed_off(t: _Thread) -> None:
    """A routing bot asked its questions, then handed the user to an operator."""
    starter = t.demo.rng.choice([s for s in STARTERS if s.type is ConversationType.ROUTING_BOT])
    await t.by_message(starter, _BOT)
    await t.do(ev.BotTakeOver(AssistantType.ROUTING_BOT), gap=(0, 1))
    await t.do(ev.UserReply(body=t.text(starter.answer)))
    await t.do(
        ev.ContentPart(PartType.CHAT_BOT_ADMIN, _BOT, body="Connecting you to an operator..."),
        gap=(0, 1),
    )
    await t.do(ev.BotHandOff(admin_id=t.admin, by=_BOT), gap=(0, 1))
    await t.do(ev.UserReply(body=t.text(t.topic.lines[0])), gap=(0, 2))
    await t.dialogue(3)


def _message_scenario(starter: Starter, *, answered: bool) -> Scenario:
    async def scenario(t: _Thread) -> None:
        sender = (
            t.operator
            if starter.sent_via in (SentVia.MESSAGE_MANUAL, SentVia.EMAIL_ADMIN)
            else Author(AuthorKind.SENDER, t.demo.sender_id)
        )
        await t.by_message(starter, sender)
        if answered and starter.answer and starter.reply_type is not ReplyType.NO:
            await t.do(ev.ReadByUser(), ev.UserReply(body=t.text(starter.answer)), gap=(5, 240))
            if t.demo.rng.random() < 0.6:
                reply = "Thanks {first}! Let me check that for you."
                await t.do(ev.AdminReply(author=t.operator, body=t.text(reply)))

    scenario.__name__ = f"message_{starter.type.value}" + ("" if answered else "_unanswered")
    return scenario


async def _removed(t: _Thread) -> None:
    """Erased on the user's request (GDPR): bodies gone, counters kept."""
    await t.user_starts()
    await t.dialogue(3)
    await t.do(ev.Remove(), gap=(60, 600))


_CONVERSATION_SCENARIOS: tuple[tuple[Scenario, int], ...] = (
    (_waiting, 12),
    (_answered_open, 14),
    (_user_waiting_again, 10),
    (_closed, 30),
    (_reopened_by_user, 3),
    (_reopened_by_operator, 2),
    (_delayed, 6),
    (_delay_passed, 2),
    (_tagged, 10),
    (_noted, 6),
    (_article, 5),
    (_channel_moved, 4),
    (_reassigned, 3),
    (_messenger, 6),
    (_bot_managed, 5),
    (_handed_off, 5),
    (_removed, 2),
)
SCENARIOS: tuple[tuple[Scenario, int], ...] = (
    *_CONVERSATION_SCENARIOS,
    *((_message_scenario(s, answered=True), 2) for s in STARTERS),
    *((_message_scenario(s, answered=False), 1) for s in STARTERS),
)


def scenario_name(scenario: Scenario) -> str:
    return getattr(scenario, "__name__", "scenario").lstrip("_")


class _Demo:
    """The demo app's ids and the random source every scenario draws from."""

    def __init__(self, db: Database, rng: random.Random, present: datetime) -> None:
        self.db = db
        self.rng = rng
        self.present = present
        self.latest = present - timedelta(seconds=1)
        self.app_id = 0
        self.sender_id = 0
        self.admins: list[int] = []
        self.channels: dict[str, int] = {}
        self.users: list[_Person] = []

    async def create_people(self, users: int, password: str) -> str:
        created = await apps.create_app(self.db, "Acme Demo")
        self.app_id, self.sender_id = created.app_id, created.default_sender_id
        self.channels = {
            name: await apps.create_channel(self.db, self.app_id, name) for name in CHANNELS
        }
        self.admins.append(
            await apps.create_admin(
                self.db,
                self.app_id,
                DEMO_OPERATOR_NAME,
                email=DEMO_OPERATOR_EMAIL,
                password=password,
                role=Role.OWNER,  # the demo's login shows every part of the inbox
            )
        )
        for name, email in OPERATORS:
            self.admins.append(await apps.create_admin(self.db, self.app_id, name, email=email))
        # One transaction for every user: signed up at some point before the history starts.
        async with self.db.write() as conn:
            repo = AppRepository(conn)
            for index in range(users):
                first = self.rng.choice(FIRST_NAMES)
                last = self.rng.choice(LAST_NAMES)
                email = f"{first}.{last}{self.rng.randint(1, 99)}@{self.rng.choice(MAIL_DOMAINS)}"
                email = email.lower().replace("ü", "u").replace("á", "a")
                phone = f"+1 555 {self.rng.randint(100, 999)} {self.rng.randint(1000, 9999)}"
                props: dict[str, Any] = {
                    "$name": f"{first} {last}",
                    "$email": email,
                    "$phone": phone,
                    "$city": self.rng.choice(CITIES),
                    "plan": self.rng.choice(PLANS),
                }
                signed_up = self.present - HISTORY - timedelta(days=self.rng.randint(1, 365))
                ident = await repo.create_user(self.app_id, f"demo-{index + 1}", props, signed_up)
                self.users.append(_Person(ident, first, email, phone))
        return created.token


async def fill(
    db: Database,
    *,
    conversations: int = DEFAULT_CONVERSATIONS,
    password: str | None = None,
    seed: int | None = None,
    now: datetime | None = None,
    on_progress: Callable[[], None] | None = None,
    bulk: bool | None = None,
) -> DemoResult:
    """Create a demo app in the (migrated) database and fill it with `conversations`.

    `bulk`: compute the conversations in memory and load them by batch (see
    `threadline.demo_bulk`); by default from `BULK_FROM` conversations on.
    """
    if conversations < 0:
        raise ValueError("the number of conversations must not be negative")
    rng = random.Random(seed)
    password = password or secrets.token_urlsafe(9)
    present = now or datetime.now(UTC)
    if bulk or (bulk is None and conversations >= bulk_path.BULK_FROM):
        return await _fill_bulk(db, conversations, password, rng, present, on_progress)
    demo = _Demo(db, rng, present)
    token = await demo.create_people(max(8, conversations * 2 // 3), password)
    result = DemoResult(demo.app_id, token, DEMO_OPERATOR_EMAIL, password)

    scenarios = [s for s, _ in SCENARIOS]
    weights = [w for _, w in SCENARIOS]
    first = present - HISTORY
    step = (HISTORY - HISTORY_END) / max(conversations, 1)
    for index in range(conversations):
        # Every scenario once first, so that a small demo still shows every state.
        if index < len(scenarios):
            scenario = scenarios[index]
        else:
            scenario = rng.choices(scenarios, weights)[0]
        start = first + step * index + step * rng.random() * 0.5
        await scenario(_Thread(demo, start))
        result.conversations += 1
        result.scenarios[scenario_name(scenario)] += 1
        if on_progress is not None:
            on_progress()
    return result


# ---------------------------------------------------------------------------
# The bulk path: the same scenarios, computed in memory and loaded by batch
# (see threadline.demo_bulk). Batches are independent: each has its own random source
# (from the seed and its number) and its own blocks of ids, so worker processes compute
# and load them in parallel.


class _BulkDemo(_Demo):
    """The demo app at scale: more operators, channels and tags."""

    def __init__(self, db: Database, rng: random.Random, present: datetime) -> None:
        super().__init__(db, rng, present)
        self.default_channel = 0
        self.extra_channels: list[int] = []
        self.vocabulary = bulk_path.vocabulary()
        self.batch = bulk_path.Batch(postgres=not db.is_sqlite if db is not None else True)
        self.conversation_ids = bulk_path.IdBlock(0)
        self.part_ids = bulk_path.IdBlock(0)
        self.message_ids = bulk_path.IdBlock(0)

    async def create_people(self, users: int, password: str) -> str:
        created = await apps.create_app(self.db, "Acme Demo")
        self.app_id, self.sender_id = created.app_id, created.default_sender_id
        self.default_channel = created.default_channel_id
        self.channels = {
            name: await apps.create_channel(self.db, self.app_id, name) for name in CHANNELS
        }
        self.admins.append(
            await apps.create_admin(
                self.db, self.app_id, DEMO_OPERATOR_NAME, email=DEMO_OPERATOR_EMAIL,
                password=password, role=Role.OWNER,
            )
        )  # fmt: skip
        for name, email in OPERATORS:
            self.admins.append(await apps.create_admin(self.db, self.app_id, name, email=email))
        more_admins, extra = await bulk_path.create_organisation(self.db, self.app_id)
        self.admins.extend(more_admins)
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(channels_t.c.id).where(
                    channels_t.c.app_id == self.app_id, channels_t.c.name.in_(extra)
                )
            )
            self.extra_channels = sorted(int(r.id) for r in rows)
        people: list[_Person] = []

        def make(index: int) -> tuple[str, dict[str, Any], datetime]:
            first = self.rng.choice(FIRST_NAMES)
            last = self.rng.choice(LAST_NAMES)
            email = f"{first}.{last}{self.rng.randint(1, 99)}@{self.rng.choice(MAIL_DOMAINS)}"
            email = email.lower().replace("ü", "u").replace("á", "a")
            phone = f"+1 555 {self.rng.randint(100, 999)} {self.rng.randint(1000, 9999)}"
            people.append(_Person(0, first, email, phone))
            props = {
                "$name": f"{first} {last}", "$email": email, "$phone": phone,
                "$city": self.rng.choice(CITIES), "plan": self.rng.choice(PLANS),
            }  # fmt: skip
            signed_up = self.present - HISTORY - timedelta(days=self.rng.randint(1, 365))
            return f"demo-{index + 1}", props, signed_up

        ids = await bulk_path.load_people(self.db, self.app_id, users, make)
        for person, ident in zip(people, ids, strict=True):
            person.id = ident
        self.users = people
        return created.token

    def channel_for(self, topic: Topic) -> int:
        """Mostly the topic's channel; now and then one of the other teams'."""
        if self.extra_channels and self.rng.random() < 0.35:
            index = min(int(self.rng.expovariate(0.35)), len(self.extra_channels) - 1)
            return self.extra_channels[index]
        return self.channels[topic.channel]

    def extra_tag(self) -> str:
        tags = bulk_path.EXTRA_TAGS
        return tags[min(int(self.rng.expovariate(0.15)), len(tags) - 1)]


# The longest back-and-forth added to a bulk demo conversation (parts).
LONGEST_TAIL = 60


class _BulkThread(_Thread):
    """One scenario's conversation, computed with the pure rules instead of stored."""

    demo: _BulkDemo

    def __init__(self, demo: _BulkDemo, start: datetime) -> None:
        super().__init__(demo, start)
        self.state: ConversationState | None = None
        self.parts: list[Part] = []

    def text(self, template: str) -> str:
        line = super().text(template)
        if self.demo.rng.random() < 0.5:
            line = f"{line} {self.demo.vocabulary.sentence(self.demo.rng)}"
        return line

    def _apply(self, state: ConversationState, *events: ev.Event) -> None:
        self.state = bulk_path.apply_events(state, self.parts, events, self.now, self.demo.part_ids)
        self.id = self.state.id

    def _new(self, channel_id: int) -> ConversationState:
        d = self.demo
        return rules.new_conversation(
            conversation_id=d.conversation_ids.take(), app_id=d.app_id, user_id=self.user.id,
            now=self.now, channel_id=channel_id,
        )  # fmt: skip

    async def user_starts(
        self,
        *,
        in_topic_channel: bool = True,
        external_service: str | None = None,
        external_id: str | None = None,
    ) -> None:
        d = self.demo
        state = self._new(d.channel_for(self.topic) if in_topic_channel else d.default_channel)
        state.external_service = external_service
        state.external_id = external_id
        self._apply(state, ev.UserReply(body=self.text(self.topic.lines[0])))

    async def by_message(self, starter: Starter, sender: Author) -> None:
        d = self.demo
        message_id = d.message_ids.take()
        body = self.text(starter.body)
        d.batch.messages.append(
            (
                message_id, d.app_id, starter.type.value, starter.reply_type.value,
                starter.recipient_type.value,
                sender.id if sender.kind is AuthorKind.SENDER else None,
                sender.id if sender.kind is AuthorKind.ADMIN else None, body, self.now,
            )
        )  # fmt: skip
        start = ev.StartByMessage(
            message_id=message_id, type=starter.type, reply_type=starter.reply_type,
            sender=sender, body=body, body_json=None, recipient_type=starter.recipient_type,
            status=MessageStatus.CREATED, sended_time=None, sent_via=starter.sent_via,
        )  # fmt: skip
        self._apply(self._new(d.default_channel), start)
        # Delivery statuses leave no part: only the last one shows, so only it is applied.
        path = bulk_path.status_path(d.rng, starter.statuses)
        await self.do(ev.UpdateStatus(path[-1]), gap=(0, len(path)))

    async def do(self, *events: ev.Event, gap: tuple[int, int] = (1, 20)) -> None:
        assert self.state is not None
        rng = self.demo.rng
        step = timedelta(minutes=rng.randint(*gap), seconds=rng.random())
        self.now = min(self.now + step, self.demo.latest)
        self._apply(self.state, *events)

    async def dialogue(self, lines: int) -> None:
        await super().dialogue(lines)
        rng = self.demo.rng
        if rng.random() < 0.06:
            # Now and then a long back-and-forth: conversation lengths are skewed.
            for index in range(min(LONGEST_TAIL, int(rng.paretovariate(1.5) * 3))):
                body = self.demo.vocabulary.sentence(rng)
                if index % 2 == 0:
                    await self.do(ev.UserReply(body=body), gap=(0, 10))
                else:
                    await self.do(ev.AdminReply(author=self.operator, body=body), gap=(0, 10))

    async def finish(self) -> None:
        """More tags on some conversations, from a longer list."""
        if self.state is None or self.state.removed is not None:
            return
        if self.demo.rng.random() < 0.3:
            await self.do(ev.AddTag(self.demo.extra_tag(), by=self.operator, strict=False))


@dataclass(slots=True)
class _BulkPlan:
    """What every batch needs to know; sent once to each worker process."""

    seed: int
    present: datetime
    conversations: int
    app_id: int
    sender_id: int
    default_channel: int
    channels: dict[str, int]
    extra_channels: list[int]
    admins: list[int]
    users: list[_Person]
    blocks: bulk_path.Blocks
    postgres: bool
    url: str


async def _compute_batch(plan: _BulkPlan, number: int) -> bulk_path.Batch:
    """Batch `number`: its conversations, computed in memory."""
    rng = random.Random(plan.seed * 1_000_003 + number)
    demo = _BulkDemo(cast(Database, None), rng, plan.present)
    demo.app_id, demo.sender_id = plan.app_id, plan.sender_id
    demo.default_channel, demo.channels = plan.default_channel, plan.channels
    demo.extra_channels, demo.admins, demo.users = plan.extra_channels, plan.admins, plan.users
    demo.conversation_ids = bulk_path.IdBlock(plan.blocks.conversations(number))
    demo.part_ids = bulk_path.IdBlock(plan.blocks.parts(number))
    demo.message_ids = bulk_path.IdBlock(plan.blocks.messages(number))
    batch = demo.batch = bulk_path.Batch(plan.postgres, plan.present)
    scenarios = [s for s, _ in SCENARIOS]
    weights = [w for _, w in SCENARIOS]
    first = plan.present - HISTORY
    step = (HISTORY - HISTORY_END) / max(plan.conversations, 1)
    begin = number * plan.blocks.size
    for index in range(begin, min(plan.conversations, begin + plan.blocks.size)):
        # Every scenario once first, so that a small demo still shows every state.
        scenario = (
            scenarios[index] if index < len(scenarios) else rng.choices(scenarios, weights)[0]
        )
        thread = _BulkThread(demo, first + step * index + step * rng.random() * 0.5)
        await scenario(thread)
        await thread.finish()
        assert thread.state is not None
        batch.add(thread.state, thread.parts)
        batch.scenarios[scenario_name(scenario)] += 1
    bulk_path.check_block(plan.blocks, number, demo.part_ids.next, demo.message_ids.next)
    return batch


_worker_plan: _BulkPlan | None = None


def _worker_start(plan: _BulkPlan) -> None:
    global _worker_plan
    _worker_plan = plan


def _worker_batch(number: int) -> bulk_path.BatchSummary:
    """In a worker process: compute batch `number` and load it into PostgreSQL."""
    plan = _worker_plan
    assert plan is not None

    async def work() -> bulk_path.BatchSummary:
        batch = await _compute_batch(plan, number)
        await bulk_path.copy_batch(plan.url, batch)
        return batch.summary()

    return asyncio.run(work())


async def _fill_bulk(
    db: Database,
    conversations: int,
    password: str,
    rng: random.Random,
    present: datetime,
    on_progress: Callable[[], None] | None,
) -> DemoResult:
    demo = _BulkDemo(db, rng, present)
    token = await demo.create_people(max(8, conversations * 2 // 3), password)
    result = DemoResult(demo.app_id, token, DEMO_OPERATOR_EMAIL, password)
    batches = -(-conversations // bulk_path.BATCH)  # rounded up
    plan = _BulkPlan(
        seed=rng.randrange(2**31), present=present, conversations=conversations,
        app_id=demo.app_id, sender_id=demo.sender_id, default_channel=demo.default_channel,
        channels=demo.channels, extra_channels=demo.extra_channels, admins=demo.admins,
        users=demo.users, blocks=await bulk_path.take_blocks(db, batches, bulk_path.BATCH),
        postgres=not db.is_sqlite, url=db.url,
    )  # fmt: skip
    summaries: list[bulk_path.BatchSummary] = []

    def done(summary: bulk_path.BatchSummary) -> None:
        summaries.append(summary)
        result.conversations += summary.conversations
        result.scenarios.update(summary.scenarios)
        for _ in range(summary.conversations if on_progress is not None else 0):
            assert on_progress is not None
            on_progress()

    aside = await bulk_path.set_aside(db)
    try:
        workers = bulk_path.workers_for(db, conversations)
        if workers <= 1:
            for number in range(batches):
                batch = await _compute_batch(plan, number)
                async with db.write() as conn:
                    await batch.store(conn)
                done(batch.summary())
        else:
            with ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start, initargs=(plan,),
            ) as pool:  # fmt: skip
                loop = asyncio.get_running_loop()
                pending = [loop.run_in_executor(pool, _worker_batch, n) for n in range(batches)]
                for finished in asyncio.as_completed(pending):
                    done(await finished)
        await bulk_path.finish(db, plan.app_id, plan.blocks, summaries, plan.present)
    finally:
        await bulk_path.restore(db, aside)
    await bulk_path.analyze(db)
    return result
