"""The per-process realtime hub: one reader of the event log, many clients.

The hub keeps a cursor on the event log. When woken (a local commit, a bus message, a
timer; at most once per `gather` seconds) it reads the final events after its cursor once,
loads their parts once, and hands them to every client: written straight to the socket of
an idle WebSocket client (one write for the batch, see threadline/events/direct.py), else
put in the client's bounded queue. A client whose queue is full is dropped (it reconnects
with its last tag and catches up from the log) rather than slowing the others.

A client that connects with a tag first receives, from the log, every event after that
tag up to the hub's cursor at the moment it registered, then the live events; the event
ids tell which were already sent, so none is sent twice and none is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from threadline.api.schemas import unix_seconds
from threadline.events import repository as log_store
from threadline.events.bus import Bus, Message
from threadline.events.channels import PING, TYPING, Channel
from threadline.events.direct import DirectSocket, text_frame
from threadline.events.present import dump, render, user_projection

log = logging.getLogger("threadline.events.hub")

# Events read per query, by the hub and by a client catching up.
READ_BATCH = 500
# The drafts shown to other people: a preview, as typing indicators show (also keeps a
# bus message well under PostgreSQL's NOTIFY limit).
MAX_TYPING_CHARS = 1000


@dataclass(slots=True)
class Item:
    """What a client queue holds: a rendered log event, or a typing notice."""

    id: int | None
    app_id: int
    user_id: int
    type: str
    created: datetime
    body: dict[str, Any]
    # Serialised bodies, per (user projection, id_as_string), shared by every client.
    cache: dict[tuple[bool, bool], bytes | None] = field(default_factory=dict)
    # Whole messages of a log event, per (channel name, id_as_string): every client of a
    # channel sends the same bytes, serialised once.
    messages: dict[tuple[str, bool], bytes] = field(default_factory=dict)
    # A log event's (tag, message) pairs per kind of client (`Client.kind`): most clients
    # of a deployment subscribe to the same few channel sets.
    per_kind: dict[tuple[tuple[str, ...], bool], list[tuple[str | None, bytes]]] = field(
        default_factory=dict
    )

    def body_json(self, projected: bool, id_as_string: bool) -> bytes | None:
        key = (projected, id_as_string)
        if key not in self.cache:
            if self.id is None:  # typing
                typing = self.body
                if projected and typing["from"]["kind"] != "user":
                    typing = {**typing, "body": None}  # a user sees that, not what, we type
                self.cache[key] = orjson.dumps(_typing_ids(typing, id_as_string))
            else:
                body = user_projection(self.body) if projected else self.body
                self.cache[key] = None if body is None else dump(body, id_as_string)
        return self.cache[key]


# Frames written to the clients of an app on the same channels: (app, `Client.kind`) to
# (the frames of a batch's events as one payload, how many frames).
SharedKey = tuple[int, tuple[tuple[str, ...], bool]]
Written = tuple[bytes, int]


def _typing_ids(body: dict[str, Any], id_as_string: bool) -> dict[str, Any]:
    if not id_as_string:
        return body
    author = body["from"]
    return {
        **body,
        "conversation": str(body["conversation"]),
        "user": str(body["user"]),
        "from": {**author, "id": None if author["id"] is None else str(author["id"])},
    }


def _seconds(value: datetime) -> int:
    """A message's `time`: whole Unix seconds, as the vendor's realtime messages carry it
    (the order of messages is their `tag`'s)."""
    return int(unix_seconds(value))


class _Signal(enum.Enum):
    # Queued by a client's heartbeat timer: nothing was sent for a heartbeat period.
    HEARTBEAT = enum.auto()


Queued = Item | _Signal | None


class Mailbox:
    """A client's bounded FIFO with one reader: what asyncio.Queue does, for less CPU (the
    hub puts every event into hundreds of these)."""

    __slots__ = ("_items", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        self._items: deque[Queued] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Queued, *, force: bool = False) -> bool:
        """Append `item` unless the mailbox is full (`force`: even then); False if not."""
        if not force and len(self._items) >= self._limit:
            return False
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def get(self) -> Queued:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def parked(self) -> bool:
        """Empty, with its reader waiting: whatever it took out was handled."""
        waiter = self._waiter
        return not self._items and waiter is not None and not waiter.done()

    def qsize(self) -> int:
        return len(self._items)


class Client:
    """One connection: its channels, its queue, and the last event id it was sent."""

    def __init__(
        self, app_id: int, channels: list[Channel], *, id_as_string: bool, queue_size: int
    ) -> None:
        self.app_id = app_id
        self.channels = channels
        self.id_as_string = id_as_string
        self.queue = Mailbox(queue_size)
        self.kind = (tuple(c.name for c in channels), id_as_string)
        self.user_ids = {c.user_id for c in channels if c.user_id is not None}
        self.wants_all = any(c.user_id is None and c.kind not in (PING,) for c in channels)
        self.dropped = False
        self.closed = False
        # The token the stream was opened with; `revoked` once it stopped being valid.
        self.token: str | None = None
        self.revoked = False
        # The connection's transport, when the hub may write to it itself (`deliver`).
        self.direct: DirectSocket | None = None
        self.sent_directly = 0
        self.last_id = 0
        self.start = 0
        # Heartbeats: one timer per client that fires once per period, rather than a
        # timeout armed and cancelled around every wait (which cost more than the send).
        self.active = 0.0  # the event loop's time of the last message handed out
        self._beat: asyncio.TimerHandle | None = None
        self._heartbeat = 0.0

    def interested(self, item: Item) -> bool:
        return item.app_id == self.app_id and (self.wants_all or item.user_id in self.user_ids)

    def offer(self, item: Item) -> bool:
        """Queue `item`; False when the queue is full (the client is then dropped)."""
        if not self.queue.put(item):
            self.dropped = True
            return False
        return True

    def deliver(self, items: list[Item], shared: dict[SharedKey, Written] | None = None) -> bool:
        """Send `items` (in id order) now when the client is idle and its socket takes
        writes directly, in one write, else queue them for the client's stream; False when
        the queue is full.

        `shared`: what was written to the clients of a kind that received these same items
        (every client of an app on the same channels): framed once, written to each.
        """
        direct = self.direct
        if direct is None or not self.queue.parked() or not direct.writable():
            return all(self.offer(item) for item in items)
        first, last = items[0].id, items[-1].id
        if shared is not None and first is not None and last is not None and first > self.last_id:
            key = (self.app_id, self.kind)
            written = shared.get(key)
            if written is None:
                written = shared[key] = self._framed(items)
            self.last_id = last
        else:
            fresh = [item for item in items if item.id is None or item.id > self.last_id]
            written = self._framed(fresh)
            self.last_id = max([self.last_id, *(item.id for item in fresh if item.id)])
        payload, count = written
        if count:
            direct.write(payload)
            self.sent_directly += count
            self.active = asyncio.get_running_loop().time()
        return True

    def _framed(self, items: list[Item]) -> Written:
        frames = [frame for item in items for frame in self.frames(item)]
        return b"".join(frames), len(frames)

    def frames(self, item: Item) -> list[bytes]:
        # Framed once per batch and kind of client: `deliver`'s `shared` keeps the result.
        return [text_frame(message) for _tag, message in self.messages(item)]

    def close(self) -> None:
        """End the client's stream once what is queued was sent."""
        self.closed = True
        self.direct = None
        self.stop_heartbeat()
        self.queue.put(None, force=True)

    def start_heartbeat(self, period: float) -> None:
        loop = asyncio.get_running_loop()
        self._heartbeat = period
        self.active = loop.time()
        self.stop_heartbeat()
        self._beat = loop.call_at(self.active + period, self._beat_due)

    def stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def _beat_due(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Timers may fire a little early (millisecond resolution): allow for it.
        if now - self.active >= self._heartbeat - 0.002:
            self.active = now
            self.queue.put(_Signal.HEARTBEAT)  # a full queue is no idle client: no beat
        self._beat = loop.call_at(self.active + self._heartbeat, self._beat_due)

    def messages(self, item: Item) -> list[tuple[str | None, bytes]]:
        """The (tag, JSON message) pairs `item` makes for this client: one per channel."""
        if item.id is None:
            return self._messages(item)
        out = item.per_kind.get(self.kind)
        if out is None:
            out = item.per_kind[self.kind] = self._messages(item)
        return out

    def _messages(self, item: Item) -> list[tuple[str | None, bytes]]:
        out: list[tuple[str | None, bytes]] = []
        for channel in self.channels:
            if channel.kind == PING or channel.app_id != item.app_id:
                continue
            if item.id is None:
                if channel.kind != TYPING:
                    continue
            elif not channel.carries(item.type, item.body):
                continue
            projected = channel.user_id is not None
            if projected and channel.user_id != item.user_id:
                continue
            if item.id is None:  # typing: not in the log, so it does not move the tag
                body = item.body_json(projected, self.id_as_string)
                if body is not None:
                    out.append((None, self._message(channel, item, body, self.tag)))
                continue
            key = (channel.name, self.id_as_string)
            message = item.messages.get(key)
            if message is None:
                body = item.body_json(projected, self.id_as_string)
                if body is None:
                    continue
                message = item.messages[key] = self._message(channel, item, body, str(item.id))
            out.append((str(item.id), message))
        return out

    @property
    def tag(self) -> str | None:
        return str(self.last_id) if self.last_id else None

    def _message(self, channel: Channel, item: Item, body: bytes, tag: str | None) -> bytes:
        ident: int | str | None = item.id
        if ident is None:
            ident = uuid.uuid4().hex
        elif self.id_as_string:
            ident = str(ident)
        return orjson.dumps(
            {
                "id": ident,
                "channel": channel.name,
                "message": orjson.Fragment(body),
                "tag": tag,
                "time": _seconds(item.created),
            }
        )

    def ping(self) -> bytes | None:
        if not any(c.kind == PING for c in self.channels):
            return None
        now = datetime.now(UTC)
        return orjson.dumps(
            {"id": None, "channel": PING, "message": {}, "tag": self.tag, "time": _seconds(now)}
        )


class Hub:
    def __init__(
        self,
        db: Any,
        *,
        poll_interval: float = 1.0,
        queue_size: int = 1000,
        base_url: str = "",
        gather: float = 0.0,
    ) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.gather = gather
        self._last_read = 0.0
        self.queue_size = queue_size
        self.base_url = base_url
        self.position = 0
        self.clients: set[Client] = set()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        # The cursor starts at "now"; it is set again on the first client's arrival, so a
        # database that is away (or not set up yet) when the server starts is no failure.
        try:
            async with self.db.read() as conn:
                self.position = await log_store.head(conn)
        except Exception as exc:
            log.warning("realtime hub: the event log is not readable yet (%s)", exc)
        self._task = asyncio.create_task(self._run(), name="realtime-hub")

    async def stop(self) -> None:
        self._stopping = True
        for client in list(self.clients):
            client.close()
        self.clients.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    def on_bus(self, message: Message) -> None:
        kind = message.get("kind")
        if kind == "log":
            self.wake()
        elif kind == "typing":
            self._typing(message)

    # -- the reader ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        retry = 0.0
        failing = False
        while True:
            timeout = retry or (self.poll_interval if self.clients else None)
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if not self.clients:
                # Nobody to deliver to: no read (a first subscriber reads the log's head).
                self._wake.clear()
                retry = 0.0
                continue
            # At most one read per `gather` seconds: the first event after a quiet spell
            # goes out at once, those of a busy spell together.
            wait = self._last_read + self.gather - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake.clear()
            self._last_read = loop.time()
            try:
                async with self._lock:
                    pending = await self._catch_up()
                # Final events are held back by an older transaction still running: look
                # again soon (it may be one that publishes nothing when it ends).
                retry = min(max(retry * 2, 0.01), 0.5) if pending else 0.0
                failing = False
            except Exception as exc:  # the database is away: keep the clients, try again
                if not failing:
                    log.warning("realtime hub: reading the event log failed (%s)", exc)
                failing = True
                retry = 1.0

    async def _catch_up(self) -> bool:
        """Deliver every final event after the cursor; True when some are held back."""
        while True:
            async with self.db.read() as conn:
                if not self.clients:
                    self.position = max(self.position, await log_store.head(conn))
                    return False
                batch = await log_store.read_after(conn, self.position, READ_BATCH)
                apps = {c.app_id for c in self.clients}
                wanted = [e for e in batch.events if e.app_id in apps]
                rendered = await render(conn, wanted, self.base_url) if wanted else []
            self._dispatch(
                [_item(stored, body) for stored, body in zip(wanted, rendered, strict=True)]
            )
            self.position = max(self.position, batch.position)
            if batch.complete:
                return batch.pending

    def _dispatch(self, items: list[Item]) -> None:
        of_app: dict[int, list[Item]] = {}
        for item in items:
            of_app.setdefault(item.app_id, []).append(item)
        shared: dict[SharedKey, Written] = {}
        for client in list(self.clients):
            mine = of_app.get(client.app_id)
            if mine is None:
                continue
            if not client.wants_all:
                mine = [item for item in mine if client.interested(item)]
                if not mine:
                    continue
            if not client.deliver(mine, shared if client.wants_all else None):
                log.warning("realtime client too slow: dropped")
                self.clients.discard(client)
                client.close()

    def _typing(self, message: Message) -> None:
        try:
            item = Item(
                id=None,
                app_id=int(message["app"]),
                user_id=int(message["user"]),
                type=TYPING,
                created=datetime.fromtimestamp(float(message["time"]), UTC),
                body={
                    "type": TYPING,
                    "conversation": int(message["conversation"]),
                    "user": int(message["user"]),
                    "from": message["from"],
                    "body": message.get("body"),
                },
            )
        except (KeyError, TypeError, ValueError):
            log.warning("bus: ignored a malformed typing message")
            return
        self._dispatch([item])

    # -- clients --------------------------------------------------------------------------

    async def subscribe(
        self, app_id: int, channels: list[Channel], *, after: int | None, id_as_string: bool
    ) -> Client:
        """Register a client; it gets every event after `after` (None: from now on)."""
        client = Client(app_id, channels, id_as_string=id_as_string, queue_size=self.queue_size)
        async with self._lock:
            await self._catch_up()
            client.start = self.position
            self.clients.add(client)
        client.last_id = client.start if after is None else after
        return client

    def revoke(self, client: Client) -> None:
        """End a client whose token is no longer valid."""
        client.revoked = True
        self.clients.discard(client)
        client.close()

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)
        client.direct = None
        client.stop_heartbeat()

    async def stream(
        self, client: Client, heartbeat: float, *, replay: bool
    ) -> AsyncGenerator[tuple[str | None, bytes], None]:
        """The client's messages as (tag, JSON): first the missed events, then live ones.

        Yields `(None, b"")` when nothing was sent for `heartbeat` seconds.
        """
        loop = asyncio.get_running_loop()
        client.start_heartbeat(heartbeat)
        try:
            if replay:
                async for missed in self._replay(client):
                    for message in client.messages(missed):
                        client.active = loop.time()
                        yield message
                    client.last_id = max(client.last_id, missed.id or 0)
            while True:
                item = await client.queue.get()
                if item is None:
                    return
                if item is _Signal.HEARTBEAT:
                    yield None, b""
                    continue
                if item.id is not None:
                    if item.id <= client.last_id:
                        continue  # already sent while catching up
                    client.last_id = item.id
                for message in client.messages(item):
                    client.active = loop.time()
                    yield message
        finally:
            client.stop_heartbeat()

    async def _replay(self, client: Client) -> AsyncIterator[Item]:
        position = client.last_id
        while True:
            async with self.db.read() as conn:
                batch = await log_store.read_after(conn, position, READ_BATCH, client.app_id)
                wanted = [e for e in batch.events if client.interested(_probe(e))]
                rendered = await render(conn, wanted, self.base_url) if wanted else []
            for stored, body in zip(wanted, rendered, strict=True):
                yield _item(stored, body)
            position = batch.position
            # Complete: every final event below this read's horizon was read, and that
            # horizon is past the hub's cursor when the client registered (horizons only
            # grow); from there on the queue has the events.
            if batch.complete:
                return

    def publish_typing(
        self,
        bus: Bus,
        *,
        app_id: int,
        conversation_id: int,
        user_id: int,
        author: dict[str, Any],
        body: str,
    ) -> None:
        bus.publish(
            {
                "kind": "typing",
                "app": app_id,
                "conversation": conversation_id,
                "user": user_id,
                "from": author,
                "body": body[:MAX_TYPING_CHARS],
                "time": datetime.now(UTC).timestamp(),
            }
        )


def _item(stored: log_store.StoredEvent, body: dict[str, Any]) -> Item:
    return Item(stored.id, stored.app_id, stored.user_id, stored.type, stored.created, body)


def _probe(stored: log_store.StoredEvent) -> Item:
    return Item(stored.id, stored.app_id, stored.user_id, stored.type, stored.created, {})
