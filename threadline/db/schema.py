"""The tables, as SQLAlchemy Core. Alembic migrations create them; this file is their shape.

Derived conversation fields are plain stored columns, written in the same transaction as
the part that changes them, so reading a conversation never scans its parts.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from threadline.db.types import BigId, UTCDateTime

# Named constraints are required by Alembic's batch mode on SQLite.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")


def _id() -> Column[int]:
    return Column("id", BigId, primary_key=True, autoincrement=True)


def _app_id() -> Column[int]:
    return Column("app_id", BigId, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False)


def _creation_key(table: str) -> tuple[Column[int], Column[str], Index]:
    """The client's idempotency key (`random_id`) of the request that created the row: a
    retry finds the row instead of creating a second one. Unique per app; rows created
    without a key hold NULL, which both databases treat as distinct in a unique index.
    `random_digest` fingerprints that request's content (threadline.core.idempotency), so
    a key reused for other content is told from a retry."""
    return (
        Column("random_id", BigInteger, nullable=True),
        Column("random_digest", String(64), nullable=True),
        Index(f"uq_{table}_app_id_random_id", "app_id", "random_id", unique=True),
    )


apps = Table(
    "apps",
    metadata,
    _id(),
    Column("name", String(255), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("default_channel_id", BigId, nullable=True),
    Column("default_sender_id", BigId, nullable=True),
    # The chat widget's HMAC-SHA256 key for signed user ids (threadline.widget); made on
    # first use, so apps created before the widget get one too.
    Column("widget_secret", String(64), nullable=True),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    _id(),
    _app_id(),
    Column("name", String(255), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("revoked", UTCDateTime, nullable=True),
    # Inbox sessions end then; NULL: the token lasts until revoked (integrations' tokens).
    Column("expires", UTCDateTime, nullable=True),
    *_creation_key("api_tokens"),
    # Who issued the token (threadline.core.access): the admin whose role it acts with and
    # whose removal ends it, NULL for the command line (it acts as an owner); the token that
    # issued it through the API, if any. An inbox session is issued by its own admin.
    Column("issuer_admin_id", BigId, nullable=True),
    Column("issuer_token_id", BigId, nullable=True),
    Column("session", Boolean, nullable=False, server_default=text("false")),
)

admins = Table(
    "admins",
    metadata,
    _id(),
    _app_id(),
    Column("name", String(255), nullable=False),
    Column("email", String(320), nullable=True),
    Column("avatar", String(1024), nullable=True),
    Column("password_hash", String(255), nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("removed", UTCDateTime, nullable=True),
    # owner, administrator or operator (threadline.core.access.Role).
    Column("role", String(16), nullable=False, server_default="operator"),
    # The second factor (threadline.core.totp): the confirmed secret (null: none), one
    # shown at enrolment and not yet confirmed, and the time step of the last code used.
    Column("totp_secret", String(64), nullable=True),
    Column("totp_pending", String(64), nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
    Index("uq_admins_app_id_email", "app_id", "email", unique=True),
    *_creation_key("admins"),
)

senders = Table(
    "senders",
    metadata,
    _id(),
    _app_id(),
    Column("name", String(255), nullable=False),
    Column("avatar", String(1024), nullable=True),
)

channels = Table(
    "channels",
    metadata,
    _id(),
    _app_id(),
    Column("name", String(255), nullable=False),
    # One of the vendor's channel types (threadline.core.enums.ChannelType).
    Column("type", String(32), nullable=False, server_default="manual"),
    Column("avatar", String(1024), nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("removed", UTCDateTime, nullable=True),
    *_creation_key("channels"),
)

users = Table(
    "users",
    metadata,
    _id(),
    _app_id(),
    # The site's own id for its user; unique per app when given.
    Column("user_id", String(255), nullable=True),
    Column("props", Json, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("removed", UTCDateTime, nullable=True),
    Index("uq_users_app_id_user_id", "app_id", "user_id", unique=True),
)

messages = Table(
    "messages",
    metadata,
    _id(),
    _app_id(),
    Column("type", String(32), nullable=False),
    Column("reply_type", String(16), nullable=False),
    Column("recipient_type", String(8), nullable=False),
    Column("sender_id", BigId, nullable=True),
    Column("admin_id", BigId, nullable=True),
    Column("body", Text, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)

conversations = Table(
    "conversations",
    metadata,
    _id(),
    _app_id(),
    Column("user_id", BigId, ForeignKey("users.id"), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("sended_time", UTCDateTime, nullable=False),
    Column("last_update", UTCDateTime, nullable=False),
    Column("type", String(32), nullable=True),
    Column("reply_type", String(16), nullable=True),
    Column("recipient_type", String(8), nullable=False),
    Column("message_id", BigId, ForeignKey("messages.id"), nullable=True),
    Column("status", String(16), nullable=True),
    Column("external_service", String(64), nullable=True),
    Column("external_id", String(255), nullable=True),
    Column("channel_id", BigId, ForeignKey("channels.id"), nullable=True),
    Column("assignee_id", BigId, ForeignKey("admins.id"), nullable=True),
    Column("assistant_type", String(32), nullable=True),
    Column("removed", UTCDateTime, nullable=True),
    Column("replied", Boolean, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("delayed_until", UTCDateTime, nullable=True),
    Column("tags", Json, nullable=False),
    Column("part_group", BigInteger, nullable=True),
    Column("parts_count", Integer, nullable=False),
    Column("replies_count", Integer, nullable=False),
    Column("admin_unread_count", Integer, nullable=False),
    Column("user_unread_count", Integer, nullable=False),
    Column("not_answered_admin_replies", Integer, nullable=False),
    Column("reply_last_id", BigInteger, nullable=True),
    Column("reply_last_type", String(16), nullable=True),
    Column("part_last_id", BigInteger, nullable=True),
    Column("important_part_last_id", BigInteger, nullable=True),
    Column("last_user_reply_time", UTCDateTime, nullable=True),
    Column("last_admin_id", BigId, nullable=True),
    Column("important", Boolean, nullable=False),
    Column("read", Boolean, nullable=False, server_default=text("false")),
    Column("clicked", Boolean, nullable=False, server_default=text("false")),
    Column("unsubscribed", Boolean, nullable=False, server_default=text("false")),
    # Idempotency key of the request that created the conversation (startconversation).
    Column("start_random_id", BigInteger, nullable=True),
    Index("ix_conversations_app_last_update", "app_id", "last_update", "id"),
    Index("ix_conversations_user", "user_id", "last_update", "id"),
    Index("uq_conversations_user_start_random_id", "user_id", "start_random_id", unique=True),
)

conversation_parts = Table(
    "conversation_parts",
    metadata,
    _id(),
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created", UTCDateTime, nullable=False),
    Column("edited", UTCDateTime, nullable=True),
    Column("removed", UTCDateTime, nullable=True),
    # NULL means the part opens its group: the group id is the part's own id.
    Column("part_group", BigInteger, nullable=True),
    Column("type", String(24), nullable=False),
    Column("author_kind", String(8), nullable=False),
    Column("author_id", BigInteger, nullable=True),
    # The name a bot's part was written under (`bot_name` of a reply); NULL otherwise.
    Column("bot_name", String(255), nullable=True),
    Column("sent_via", String(24), nullable=False),
    Column("body", Text, nullable=False),
    Column("body_json", Json, nullable=True),
    Column("read", Boolean, nullable=False),
    Column("attachments", Json, nullable=True),
    Column("random_id", BigInteger, nullable=True),
    Column("random_kind", String(16), nullable=True),
    Column("external_id", String(255), nullable=True),
    Column("tag", String(255), nullable=True),
    Column("assignee_id", BigInteger, nullable=True),
    # The page the part was written on, and the actions offered to the user with it (a JSON
    # array of objects), as the client sent them.
    Column("referrer", Text, nullable=True),
    Column("actions", Json, nullable=True),
    Index("ix_conversation_parts_conversation", "conversation_id", "id"),
    # Idempotency: a retried write with the same random_id cannot insert a second part.
    Index(
        "uq_conversation_parts_random",
        "conversation_id",
        "random_kind",
        "random_id",
        unique=True,
    ),
)

# Files sent with parts. The bytes live in a storage (a directory by default), not here;
# `conversation_id` is set once the part that carries the file is stored.
attachments = Table(
    "attachments",
    metadata,
    _id(),
    _app_id(),
    Column("conversation_id", BigId, nullable=True),
    Column("filename", String(255), nullable=False),
    Column("mime_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("storage_key", String(255), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("removed", UTCDateTime, nullable=True),
    Index("ix_attachments_conversation", "conversation_id"),
)

# The event log: every committed change of a conversation, in commit-safe order. `id` is the
# cursor. On PostgreSQL it is (transaction id << 16) + the event's index in its transaction,
# so that readers can serve exactly the events below the oldest running transaction (see
# threadline/events/repository.py); on SQLite, whose writes are serialised, it is an
# AUTOINCREMENT rowid (never reused, even after pruning). No foreign keys: a log is not a
# relation, and the write path stays one cheap insert.
events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=False),
    Column("app_id", BigInteger, nullable=False),
    Column("conversation_id", BigInteger, nullable=False),
    # The conversation's user: routes the event to the user's own realtime channels.
    Column("user_id", BigInteger, nullable=False),
    Column("type", String(40), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("data", Json, nullable=False),
    Index("ix_events_app_id", "app_id", "id"),
    sqlite_autoincrement=True,
)


# ---------------------------------------------------------------------------
# The operators' inbox (threadline.inbox): views, their counts, search.

# A conversation is in the inbox when it is replied and not removed. The view indexes are
# partial on exactly this expression, and the inbox queries repeat it word for word (SQLite
# uses a partial index only when the query's WHERE holds the index's terms).
IN_INBOX = and_(conversations.c.replied.is_(True), conversations.c.removed.is_(None))
_OPEN_SNOOZED = and_(
    IN_INBOX, conversations.c.closed.is_(False), conversations.c.delayed_until.is_not(None)
)


def _inbox_index(name: str, *columns: str, where: object = IN_INBOX) -> Index:
    return Index(
        name,
        *(conversations.c[c] for c in columns),
        sqlite_where=where,
        postgresql_where=where,
    )


# One index per leading filter, each sorted by (last_update, id) within a status and
# carrying the other filter columns, so a view walks one index in order and tests the
# remaining filters on index entries.
_inbox_index(
    "ix_inbox_status",
    "app_id", "closed", "last_update", "id", "assignee_id", "channel_id", "important",
    "delayed_until",
)  # fmt: skip
_inbox_index(
    "ix_inbox_assignee",
    "app_id", "assignee_id", "closed", "last_update", "id", "channel_id", "important",
    "delayed_until",
)  # fmt: skip
_inbox_index(
    "ix_inbox_channel",
    "app_id", "channel_id", "closed", "last_update", "id", "assignee_id", "important",
    "delayed_until",
)  # fmt: skip
# Snoozed conversations by the end of their snooze: "delayed now" is a range of it.
_inbox_index(
    "ix_inbox_snoozed",
    "app_id", "delayed_until", "channel_id", "assignee_id", "important",
    where=_OPEN_SNOOZED,
)  # fmt: skip

# One row per tag of a conversation, carrying a copy of the conversation's view columns
# (written in the same transaction as the conversation), so that a tag view is one index
# walk in `last_update` order and tags are never looked for inside the JSON column.
conversation_tags = Table(
    "conversation_tags",
    metadata,
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("tag", String(255), primary_key=True),
    _app_id(),
    # The conversation is in the inbox: replied and not removed.
    Column("inbox", Boolean, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("delayed_until", UTCDateTime, nullable=True),
    Column("channel_id", BigInteger, nullable=True),
    Column("assignee_id", BigInteger, nullable=True),
    Column("important", Boolean, nullable=False),
    Column("last_update", UTCDateTime, nullable=False),
)
TAG_IN_INBOX = conversation_tags.c.inbox.is_(True)
_TAG_OPEN_SNOOZED = and_(
    TAG_IN_INBOX,
    conversation_tags.c.closed.is_(False),
    conversation_tags.c.delayed_until.is_not(None),
)
Index(
    "ix_conversation_tags_view",
    *(
        conversation_tags.c[c]
        for c in (
            "app_id", "tag", "closed", "last_update", "conversation_id", "assignee_id",
            "channel_id", "important", "delayed_until",
        )
    ),
    sqlite_where=TAG_IN_INBOX,
    postgresql_where=TAG_IN_INBOX,
)  # fmt: skip
Index(
    "ix_conversation_tags_snoozed",
    *(
        conversation_tags.c[c]
        for c in ("app_id", "delayed_until", "tag", "channel_id", "assignee_id", "important")
    ),
    sqlite_where=_TAG_OPEN_SNOOZED,
    postgresql_where=_TAG_OPEN_SNOOZED,
)

# Search indexes are created by hand per dialect (threadline/db/migrations, revisions 0005
# and 0010): PostgreSQL GIN indexes on part bodies and the word list with its trigger,
# SQLite FTS5 tables (and their shadow tables). Schema comparisons leave them out.
SEARCH_OBJECTS = (
    "ix_conversation_parts_words",
    "ix_conversation_parts_trigram",
    "parts_words",
    "parts_trigram",
    "search_words",
)


def include_object(
    _obj: object, name: str | None, _type: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's filter: everything but the hand-written search objects."""
    return not (reflected and compare_to is None and (name or "").startswith(SEARCH_OBJECTS))


# Exact inbox counts, kept by the write that changes a conversation (threadline.inbox.counts).
# `kind` 0: every inbox conversation once, by (closed, channel, assignee, important);
# 1: per tag, by closed; 2: per tag, by (closed, channel, assignee, important).
# A missing channel or assignee is 0. Each cell is split over `shard` rows (the
# conversation id modulo a small number) so that concurrent writes of one app do not
# queue on a single row; readers sum the shards.
inbox_counts = Table(
    "inbox_counts",
    metadata,
    Column(
        "app_id",
        BigId,
        ForeignKey("apps.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("kind", SmallInteger, primary_key=True, autoincrement=False),
    Column("tag", String(255), primary_key=True),
    Column("closed", Boolean, primary_key=True),
    Column("channel_id", BigInteger, primary_key=True, autoincrement=False),
    Column("assignee_id", BigInteger, primary_key=True, autoincrement=False),
    Column("important", Boolean, primary_key=True),
    Column("shard", SmallInteger, primary_key=True, autoincrement=False),
    Column("n", BigInteger, nullable=False),
)

# Webhooks: endpoints per app, and one delivery row per (event, endpoint). The event log is
# the transactional outbox: the worker turns log events into deliveries and moves its
# cursor (`webhook_state`) in one transaction, so each event is delivered at least once.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    _id(),
    _app_id(),
    Column("url", String(2048), nullable=False),
    # Log event types it receives; empty: every type.
    Column("events", Json, nullable=False),
    # `json` (the event as the events API shows it) or `vendor` (the vendor's chat webhook).
    Column("format", String(16), nullable=False),
    # The HMAC-SHA256 key, `whsec_<base64>` (the standard-webhooks form); shown by the
    # creation's answer only (and by a retry of that creation), never listed.
    Column("secret", String(128), nullable=False),
    # Sent as the `token` field of vendor-format deliveries.
    Column("token", String(64), nullable=False),
    # Only events after this log position are delivered (the head when it was created).
    Column("start_after", BigInteger, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("removed", UTCDateTime, nullable=True),
    Index("ix_webhook_endpoints_app", "app_id", "id"),
    *_creation_key("webhook_endpoints"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _id(),
    _app_id(),
    Column(
        "endpoint_id",
        BigId,
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("event_id", BigInteger, nullable=False),
    Column("conversation_id", BigInteger, nullable=False),
    # 1, 2, ... among the endpoint's deliveries of the conversation, in log order: sent with
    # each attempt, so a receiver can order them (a replayed dead letter comes after later
    # ones).
    Column("sequence", BigInteger, nullable=False),
    # `pending`, `delivered` or `dead` (every attempt failed; can be replayed).
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    # The receiver's HTTP status of the last attempt (null: no answer), and what went wrong.
    Column("last_status", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("latency_ms", Integer, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("uq_webhook_deliveries_endpoint_event", "endpoint_id", "event_id", unique=True),
    # The oldest pending delivery per (endpoint, conversation) is the next one to send.
    Index("ix_webhook_deliveries_order", "endpoint_id", "conversation_id", "status", "id"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index(
        "uq_webhook_deliveries_sequence", "endpoint_id", "conversation_id", "sequence", unique=True
    ),
)

# The worker's cursor in the event log (one row, key `deliveries`).
webhook_state = Table(
    "webhook_state",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

# Chat widget visitors: one row per session token (stored hashed), which acts as exactly
# one user of one app (threadline.widget).
widget_sessions = Table(
    "widget_sessions",
    metadata,
    _id(),
    _app_id(),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created", UTCDateTime, nullable=False),
    # When the session was last used (updated at most hourly); idle too long, it ends.
    Column("last_used", UTCDateTime, nullable=True),
    Index("ix_widget_sessions_user", "user_id"),
)

# Who created or removed tokens, admins and webhooks, changed roles, re-owned tokens, and
# when (threadline.audit). `actor_kind` is admin (an inbox session), token or cli.
audit_log = Table(
    "audit_log",
    metadata,
    _id(),
    _app_id(),
    Column("created", UTCDateTime, nullable=False),
    Column("actor_kind", String(8), nullable=False),
    Column("actor_admin_id", BigId, nullable=True),
    Column("actor_token_id", BigId, nullable=True),
    Column("action", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", BigId, nullable=True),
    Column("details", Json, nullable=False),
    Index("ix_audit_log_app_id_id", "app_id", "id"),
)

# Facts about this database: `id`, a random name made by migration 0015 that tells
# deployments sharing a Redis apart.
deployment = Table(
    "deployment",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("value", String(255), nullable=False),
)

# One-time links to set an admin's password (`threadline password reset`), stored hashed.
password_resets = Table(
    "password_resets",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    _app_id(),
    Column("admin_id", BigId, ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("expires", UTCDateTime, nullable=False),
    Column("used", UTCDateTime, nullable=True),
)

# Sign-in attempts per key (`address:<ip>`, `account:<e-mail>`): how many since the last
# success, and when the next one may be made (threadline.ui.service.LoginGuard).
sign_in_attempts = Table(
    "sign_in_attempts",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("next_allowed", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Index("ix_sign_in_attempts_updated", "updated"),
)

# The e-mail channel (threadline.channels.email).
# Addresses an app receives mail at besides `<app id>@<THREADLINE_MAIL_DOMAIN>` (e.g. a
# forwarded support@ box); an address belongs to one app.
email_addresses = Table(
    "email_addresses",
    metadata,
    _id(),
    _app_id(),
    Column("address", String(320), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Index("uq_email_addresses_address", "address", unique=True),
)

# The user an e-mail address belongs to, per app (lower-cased address).
email_contacts = Table(
    "email_contacts",
    metadata,
    _id(),
    _app_id(),
    Column("address", String(320), nullable=False),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Index("uq_email_contacts_app_id_address", "app_id", "address", unique=True),
)

# A conversation's reply address `reply+<reply_token>@<domain>`.
email_threads = Table(
    "email_threads",
    metadata,
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    _app_id(),
    Column("reply_token", String(32), nullable=False),
    Index("uq_email_threads_reply_token", "reply_token", unique=True),
)

# Every Message-ID received (or sent) in an app's conversations: threading by
# In-Reply-To/References, and one message is stored once (the unique index).
email_messages = Table(
    "email_messages",
    metadata,
    _id(),
    _app_id(),
    Column("message_id", String(998), nullable=False),
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("part_id", BigId, nullable=True),
    # `in` (received) or `out` (sent by Threadline)
    Column("direction", String(8), nullable=False),
    # what became of a received message: started, replied, auto_reply, ignored
    Column("outcome", String(16), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Index("uq_email_messages_app_id_message_id", "app_id", "message_id", unique=True),
)

# Each app's inbound key: mail to `<key>@<THREADLINE_MAIL_DOMAIN>` reaches the app. Random, so
# that no one reaches an app's inbox by guessing (an app's id is a small number).
email_app_keys = Table(
    "email_app_keys",
    metadata,
    Column("app_id", BigId, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(32), nullable=False),
    Index("uq_email_app_keys_key", "key", unique=True),
)

# The addresses that were on an e-mail conversation's messages (From, To, Cc), lower-cased,
# Threadline's own left out: a reply from one of them (a colleague the user copied) joins
# the conversation; one from anyone else starts a conversation of its own.
email_participants = Table(
    "email_participants",
    metadata,
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("address", String(320), primary_key=True),
    _app_id(),
)

# Inbound messages counted per (app, sender, limit) and fixed window, so that the per-sender
# limit holds across processes (threadline.channels.email.senders) when there is no Redis.
email_sender_counts = Table(
    "email_sender_counts",
    metadata,
    Column("key", String(400), primary_key=True),
    # the window's start, Unix seconds
    Column("window_start", BigInteger, primary_key=True),
    Column("hits", Integer, nullable=False),
    Column("expires", UTCDateTime, nullable=False),
    Index("ix_email_sender_counts_expires", "expires"),
)

# Operators' replies in e-mail conversations, sent by SMTP through the relay
# (threadline.channels.email.outbound): one row per part, queued by the outbox worker from
# the event log. `message_id` is fixed when queued, so every attempt carries the same one.
email_deliveries = Table(
    "email_deliveries",
    metadata,
    _id(),
    _app_id(),
    Column(
        "conversation_id",
        BigId,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("part_id", BigInteger, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("message_id", String(998), nullable=False),
    # `queued`, `sent`, `failed` or `bounced` (threadline.core.delivery).
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_attempt_at", UTCDateTime, nullable=True),
    # The relay's SMTP code and answer to the last attempt (null code: no answer; the
    # answer then says why), e.g. `250` `2.0.0 Ok: queued as 4Xz`, `550` `5.1.1 no such user`.
    Column("relay_code", Integer, nullable=True),
    Column("relay_answer", String(500), nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    Index("uq_email_deliveries_part_id", "part_id", unique=True),
    # The oldest queued reply of a conversation goes first (threading order).
    Index("ix_email_deliveries_order", "conversation_id", "status", "id"),
    Index("ix_email_deliveries_due", "status", "next_attempt_at"),
)

# Open realtime streams, one row per stream and per key it counts under (a token's digest,
# a client address), when the deployment counts them in the database (PostgreSQL without
# Redis: threadline.events.slots). Each is a lease its process renews; expired rows are a
# crashed process's and are dropped.
stream_slots = Table(
    "stream_slots",
    metadata,
    Column("slot", String(32), primary_key=True),
    Column("key", String(400), primary_key=True),
    Column("expires", UTCDateTime, nullable=False),
    Index("ix_stream_slots_key_expires", "key", "expires"),
)
