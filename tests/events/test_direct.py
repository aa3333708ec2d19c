"""Messages written straight to the WebSocket transport (threadline/events/direct.py).

The frames parse as the RFC says at every length boundary; on a live uvicorn server an idle
client is written to directly, in order, with the same bytes the ASGI path sends; a client
that stops reading moves to the ASGI path, is dropped when its queue overflows, and
resumes with its last tag without a gap or a duplicate, while the other client gets
everything.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from tests.api.helpers import admin
from tests.events.live import WAIT, Live, connect, receive, receive_many, serve
from threadline.conversations import service
from threadline.core import events as ev
from threadline.events.direct import direct_socket, text_frame
from threadline.events.hub import Client


def parsed(frame: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(frame)
    reader.feed_eof()
    parser = reader.read_exact
    gen = Frame.parse(parser, mask=False)
    try:
        next(gen)
    except StopIteration as done:
        result: Frame = done.value
        assert reader.at_eof()
        return result
    raise AssertionError("the frame is incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frames_at_the_length_boundaries(size: int) -> None:
    payload = b"x" * size
    frame = parsed(text_frame(payload))
    assert (frame.fin, frame.opcode, frame.rsv1, frame.data) == (True, Opcode.TEXT, False, payload)


@given(st.text())
def test_text_frames_carry_any_text(text: str) -> None:
    payload = text.encode()
    frame = parsed(text_frame(payload))
    assert frame.opcode == Opcode.TEXT
    assert bytes(frame.data).decode() == text


def test_no_direct_socket_without_the_servers_own_send() -> None:
    assert direct_socket({"type": "websocket"}) is None

    async def wrapped(message: Any) -> None:  # a send that is not uvicorn's protocol
        return None

    assert direct_socket({"type": "websocket", "threadline.server_send": wrapped}) is None


def hub_clients(live: Live) -> set[Client]:
    clients: set[Client] = live.app.state.realtime.hub.clients
    return clients


async def test_an_idle_client_is_written_to_directly_in_order(live: Live) -> None:
    w = live.world
    channel = f"conversation_reply.{w.app_id}"
    async with connect(live.ws_url(channel)) as ws:
        (client,) = hub_clients(live)
        assert client.direct is not None
        started = await service.start_by_user(live.db, w.app_id, w.user_id, ev.UserReply(body="0"))
        for i in range(1, 30):
            await service.perform(
                live.db, w.app_id, started.state.id, ev.AdminReply(author=admin(w), body=str(i))
            )
        got = await receive_many(ws, 30)
        assert [m["message"]["part"]["body"] for m in got] == [str(i) for i in range(30)]
        tags = [int(m["tag"]) for m in got]
        assert tags == sorted(set(tags))
        assert client.sent_directly >= 25  # the hub wrote them, not the client's task


async def test_a_client_that_stops_reading_is_dropped_and_resumes_without_a_gap(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREADLINE_REALTIME_QUEUE_SIZE", "4")
    monkeypatch.setenv("THREADLINE_REALTIME_HEARTBEAT_SECONDS", "60")
    total = 160
    body = "y" * 60_000  # the loopback buffers fill after a few megabytes
    async with serve(db_url, tmp_path) as live:
        w = live.world
        url = live.ws_url(f"conversation_reply.{w.app_id}")
        # max_queue=1: the stalled client's library stops reading the socket at once.
        async with (
            connect(url, max_queue=1, max_size=None) as stalled,
            connect(url, max_size=None) as reader,
        ):
            received: list[dict[str, Any]] = []

            async def read_all() -> None:
                while len(received) < total:
                    received.append(await receive(reader))

            reading = asyncio.create_task(read_all())
            started = await service.start_by_user(
                live.db, w.app_id, w.user_id, ev.UserReply(body=f"0 {body}")
            )
            for i in range(1, total):
                await service.perform(
                    live.db,
                    w.app_id,
                    started.state.id,
                    ev.AdminReply(author=admin(w), body=f"{i} {body}"),
                )
                await asyncio.sleep(0)
            await asyncio.wait_for(reading, WAIT * 3)
            assert [int(m["message"]["part"]["body"].split()[0]) for m in received] == list(
                range(total)
            )
            # The stalled one: what reached it before the drop, then the close (1013).
            seen: list[dict[str, Any]] = []
            while True:
                try:
                    seen.append(orjson.loads(await asyncio.wait_for(stalled.recv(), WAIT)))
                except Exception:
                    break
            assert stalled.close_code == 1013
        assert 0 < len(seen) < total
        numbers = [int(m["message"]["part"]["body"].split()[0]) for m in seen]
        assert numbers == list(range(len(seen)))
        async with connect(
            live.ws_url(f"conversation_reply.{w.app_id}", tag=seen[-1]["tag"]), max_size=None
        ) as again:
            rest = [await receive(again) for _ in range(total - len(seen))]
        numbers += [int(m["message"]["part"]["body"].split()[0]) for m in rest]
        assert numbers == list(range(total))
