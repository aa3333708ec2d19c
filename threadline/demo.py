"""Demo data: one app with operators, channels, users and conversations in every state.

Every conversation is written through the conversation engine (`conversations.service`),
event by event with its own timestamp, so the data is exactly what real traffic would leave
behind and `threadline check` finds nothing to repair. The first conversations walk through
every scenario once, so even a small `count` covers each state the spec names; the rest are
drawn by weight.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from threadline.apps import service as apps
from threadline.apps.repository import AppRepository
from threadline.conversations import service
from threadline.core import events as ev
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
from threadline.core.model import Author
from threadline.db.engine import Database

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
) -> DemoResult:
    """Create a demo app in the (migrated) database and fill it with `conversations`."""
    if conversations < 0:
        raise ValueError("the number of conversations must not be negative")
    rng = random.Random(seed)
    password = password or secrets.token_urlsafe(9)
    present = now or datetime.now(UTC)
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
