"""The chat widget's visitors: their sessions, and the engine's calls made as one user.

A visitor acts as exactly one user of one app. Its session token (`tlw_...`, stored as a
hash like API tokens) is issued for an anonymous visitor, who becomes a new user, or for
the site's own user id signed by the site: the hex HMAC-SHA256 of the id with the app's
widget secret. Every call checks that the conversation is the visitor's own; another
user's or another app's is answered exactly like a missing one. A visitor sees the user's
projection only: the parts a user may see, none of the operators' fields.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from threadline.api.common import written_part
from threadline.api.errors import AuthenticationFailed
from threadline.api.present import Presenter
from threadline.api.schemas import unix_seconds
from threadline.apps import service as apps
from threadline.apps.service import hash_token, utcnow
from threadline.attachments import service as files
from threadline.audit import repository as audit
from threadline.conversations import queries as conv_q
from threadline.conversations import service as conversations
from threadline.conversations.service import Outcome
from threadline.core import events as ev
from threadline.core.access import Actor
from threadline.core.enums import HIDDEN_FROM_USER, PartType, SentVia
from threadline.core.errors import InvalidParameter, NotFound
from threadline.core.model import Attachment, ConversationState, Part
from threadline.db.engine import Database
from threadline.events.realtime import Realtime
from threadline.users import service as users
from threadline.widget import repository as repo

SESSION_PREFIX = "tlw_"
# A visitor's session is used on every page view; idle this long, it ends (the visitor
# starts afresh). Its last use is written at most this often, not on every request.
TOUCH_EVERY = timedelta(hours=1)


class WidgetSessionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    # Days a visitor's session lasts without being used.
    widget_session_days: float = Field(30.0, gt=0, le=3650, allow_inf_nan=False)


@cache
def session_idle_limit() -> timedelta:
    return timedelta(days=WidgetSessionSettings().widget_session_days)


# 256-bit secrets: the HMAC key and the session tokens cannot be guessed.
SECRET_BYTES = 32
MAX_SITE_USER_ID_CHARS = users.MAX_SITE_USER_ID_CHARS
# The conversations a visitor's list shows, and the parts one conversation's history
# loads: a chat window shows the recent ones.
MAX_CONVERSATIONS = 20
MAX_HISTORY_PARTS = 200
# A typing preview (the hub cuts it shorter still).
MAX_DRAFT_CHARS = 65_536

# What a visitor sees of a part and of a conversation (the user's projection).
_PART_FIELDS = (
    "id",
    "conversation",
    "created",
    "type",
    "body",
    "body_html",
    "body_json",
    "from",
    "read",
    "attachments",
    "random_id",
)


@dataclass(frozen=True, slots=True)
class Visitor:
    session_id: int
    app_id: int
    user_id: int


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    visitor: Visitor
    app_name: str


def sign(secret: str, site_user_id: str) -> str:
    """The `user_hash` a site computes for its user id (hex HMAC-SHA256)."""
    return hmac.new(secret.encode(), site_user_id.encode(), hashlib.sha256).hexdigest()


async def widget_secret(db: Database, app_id: int) -> str:
    """The app's widget secret, made on first use."""
    async with db.read() as conn:
        found = await repo.app_widget(conn, app_id)
    if found is None:
        raise NotFound("app", app_id)
    if found.secret:
        return found.secret
    async with db.write() as conn:
        return await repo.set_secret_once(conn, app_id, secrets.token_hex(SECRET_BYTES))


async def rotate_widget_secret(db: Database, app_id: int, actor: Actor) -> str:
    """A new widget secret: `user_hash` values signed with the old one stop working, and
    the sessions of signed-in site users end (anonymous visitors keep theirs). The rotation
    is in the audit log under `actor`."""
    secret = secrets.token_hex(SECRET_BYTES)
    async with db.write() as conn:
        if await repo.app_widget(conn, app_id) is None:
            raise NotFound("app", app_id)
        await repo.rotate_secret(conn, app_id, secret)
        await repo.end_signed_sessions(conn, app_id)
        await audit.record(conn, app_id, actor, "widget_secret.rotate", "app", app_id, utcnow())
    return secret


async def open_session(
    db: Database, app_id: int, *, site_user_id: str | None, user_hash: str | None
) -> Session:
    """A new session: for the signed site user id (created on first contact), or for a new
    anonymous user when no id is given."""
    async with db.read() as conn:
        found = await repo.app_widget(conn, app_id)
    if found is None:
        raise NotFound("app", app_id)
    if site_user_id is None:
        if user_hash is not None:
            raise InvalidParameter("user_id", "is required with user_hash")
        user_id = await apps.create_user(db, app_id)
    else:
        if len(site_user_id) > MAX_SITE_USER_ID_CHARS or not site_user_id.strip():
            raise InvalidParameter("user_id", f"has 1-{MAX_SITE_USER_ID_CHARS} characters")
        if user_hash is None:
            raise InvalidParameter("user_hash", "is required with user_id")
        expected = sign(await widget_secret(db, app_id), site_user_id)
        if not hmac.compare_digest(expected, user_hash.strip().lower()):
            raise AuthenticationFailed("user_hash: not the signature of this user_id")
        user_id = await users.resolve_or_create(db, app_id, site_user_id)
    token = SESSION_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    async with db.write() as conn:
        session_id = await repo.create_session(conn, app_id, user_id, hash_token(token), utcnow())
    return Session(token, Visitor(session_id, app_id, user_id), found.name)


async def authenticate(db: Database, token: str) -> Visitor | None:
    """The visitor a session token stands for, or None."""
    if not token.startswith(SESSION_PREFIX):
        return None
    now = utcnow()
    async with db.read() as conn:
        row = await repo.session_by_hash(conn, hash_token(token), now - session_idle_limit())
    if row is None:
        return None
    if now - row.last_used >= TOUCH_EVERY:
        async with db.write() as conn:
            await repo.touch_session(conn, row.id, now)
    return Visitor(row.id, row.app_id, row.user_id)


async def _own(db: Database, visitor: Visitor, conversation_id: int) -> ConversationState:
    state = await conversations.get_conversation(db, visitor.app_id, conversation_id)
    if state.user_id != visitor.user_id or state.removed is not None:
        raise NotFound("conversation", conversation_id)
    return state


async def conversation_of(db: Database, visitor: Visitor, conversation_id: int) -> None:
    """NotFound unless the conversation is the visitor's own."""
    await _own(db, visitor, conversation_id)


def conversation_out(state: ConversationState) -> dict[str, Any]:
    """The conversation as its user sees it: no tags, assignee, channel or operators' counts.

    Times are whole Unix seconds, as in the vendor's API (the widget orders parts by id and
    conversations as listed, never by time)."""
    return {
        "id": state.id,
        "created": unix_seconds(state.created),
        "last_update": unix_seconds(state.last_update),
        "closed": state.closed,
        "replies_count": state.replies_count,
        "user_unread_count": state.user_unread_count,
        "reply_last_type": state.reply_last_type.value if state.reply_last_type else None,
    }


def _visible(parts: list[Part]) -> list[Part]:
    return [p for p in parts if p.type not in HIDDEN_FROM_USER]


async def _parts_out(
    db: Database, visitor: Visitor, parts: list[Part], base_url: str
) -> list[dict[str, Any]]:
    async with db.read() as conn:
        presented = await Presenter(conn, visitor.app_id, base_url).parts(_visible(parts))
    out = []
    for part in presented:
        view = {key: part[key] for key in _PART_FIELDS}
        author = view["from"]
        if isinstance(author, dict) and "email_name" in author:
            # The app's e-mail address is the operators' business, not a visitor's.
            view["from"] = {k: v for k, v in author.items() if k != "email_name"}
        created: datetime = part["created"]
        view["created"] = unix_seconds(created)
        # A visitor fetches a file through the widget's API, with the visitor's token.
        view["attachments"] = [
            {**a, "url": attachment_path(base_url, part["conversation"], a["id"])}
            for a in part["attachments"]
        ]
        out.append(view)
    return out


def attachment_path(base_url: str, conversation_id: int, attachment_id: int) -> str:
    return (
        f"{base_url.rstrip('/')}/widget/api/conversations/{conversation_id}"
        f"/attachments/{attachment_id}"
    )


async def visible_file(
    db: Database, visitor: Visitor, conversation_id: int, attachment_id: int
) -> files.StoredFile:
    """A file of the visitor's own conversation, carried by a part the visitor sees (a
    note's file is the operators' alone) among the parts the widget loads; else NotFound,
    as for a file that does not exist."""
    await _own(db, visitor, conversation_id)
    stored = await files.find(db, visitor.app_id, attachment_id)
    if stored.conversation_id != conversation_id:
        raise NotFound("attachment", attachment_id)
    async with db.read() as conn:
        page = await conv_q.parts_page(
            conn, conversation_id, conv_q.PageRequest(count=MAX_HISTORY_PARTS)
        )
    for part in _visible(page.parts):
        if any(a.id == attachment_id for a in part.attachments):
            return stored
    raise NotFound("attachment", attachment_id)


async def list_conversations(db: Database, visitor: Visitor) -> list[dict[str, Any]]:
    async with db.read() as conn:
        states = await repo.user_conversations(
            conn, visitor.app_id, visitor.user_id, MAX_CONVERSATIONS
        )
    return [conversation_out(s) for s in states]


async def conversation(
    db: Database, visitor: Visitor, conversation_id: int, base_url: str
) -> dict[str, Any]:
    """The conversation and its latest visible parts, oldest first."""
    state = await _own(db, visitor, conversation_id)
    async with db.read() as conn:
        page = await conv_q.parts_page(
            conn, conversation_id, conv_q.PageRequest(count=MAX_HISTORY_PARTS)
        )
    parts = list(reversed(page.parts))
    return {
        **conversation_out(state),
        "parts": await _parts_out(db, visitor, parts, base_url),
        "more_before": page.next_before is not None,
    }


def _reply(body: str, random_id: int | None, attachment: Attachment | None) -> ev.UserReply:
    return ev.UserReply(
        body=body,
        attachments=(attachment,) if attachment is not None else (),
        sent_via=SentVia.WEB_USER,
        random_id=random_id,
    )


async def _written(
    db: Database, visitor: Visitor, outcome: Outcome, base_url: str
) -> dict[str, Any]:
    part = written_part(outcome, PartType.REPLY_USER)
    assert part is not None, "a user reply always writes its part"
    (out,) = await _parts_out(db, visitor, [part], base_url)
    return {"conversation": conversation_out(outcome.state), "part": out}


async def start(
    db: Database, visitor: Visitor, body: str, random_id: int | None, base_url: str
) -> dict[str, Any]:
    """The visitor writes first: a new conversation (a retry with `random_id` starts none)."""
    _, out = await start_with(db, visitor, body, random_id, base_url, None)
    return out


async def start_with(
    db: Database,
    visitor: Visitor,
    body: str,
    random_id: int | None,
    base_url: str,
    attachment: Attachment | None,
) -> tuple[Outcome, dict[str, Any]]:
    """`start`, with a file, and the engine's outcome (the caller ties the file to it)."""
    outcome = await conversations.start_by_user(
        db, visitor.app_id, visitor.user_id, _reply(body, random_id, attachment)
    )
    return outcome, await _written(db, visitor, outcome, base_url)


async def reply(
    db: Database,
    visitor: Visitor,
    conversation_id: int,
    body: str,
    random_id: int | None,
    base_url: str,
) -> dict[str, Any]:
    """A reply; it reopens a closed conversation and ends a snooze (the engine's rules)."""
    _, out = await reply_with(db, visitor, conversation_id, body, random_id, base_url, None)
    return out


async def reply_with(
    db: Database,
    visitor: Visitor,
    conversation_id: int,
    body: str,
    random_id: int | None,
    base_url: str,
    attachment: Attachment | None,
) -> tuple[Outcome, dict[str, Any]]:
    """`reply`, with a file, and the engine's outcome."""
    await _own(db, visitor, conversation_id)
    outcome = await conversations.perform(
        db, visitor.app_id, conversation_id, _reply(body, random_id, attachment)
    )
    return outcome, await _written(db, visitor, outcome, base_url)


async def mark_read(db: Database, visitor: Visitor, conversation_id: int) -> dict[str, Any]:
    """The visitor has seen the operators' parts."""
    await _own(db, visitor, conversation_id)
    outcome = await conversations.perform(db, visitor.app_id, conversation_id, ev.ReadByUser())
    return conversation_out(outcome.state)


async def typing(
    db: Database, realtime: Realtime, visitor: Visitor, conversation_id: int, draft: str
) -> None:
    """Streamed to the conversation's typing channels, never stored."""
    state = await _own(db, visitor, conversation_id)
    realtime.typing(
        app_id=visitor.app_id,
        conversation_id=conversation_id,
        user_id=state.user_id,
        author={"kind": "user", "id": state.user_id},
        body=draft,
    )
