"""Writing realtime messages straight to a WebSocket's transport.

Each change goes to every operator socket of an app: hundreds of sends per reply. Through
ASGI, each send wakes the socket's task and passes four wrappers and the server's
per-socket framing, which cost more than the write itself. When the server is uvicorn with
its default WebSocket protocol, the hub instead frames a message once and hands those bytes to
every idle socket's transport, in the hub's own loop turn (see `Client.deliver`).

Whatever is not idle (a socket still replaying, a full socket buffer, a closing
connection, another server) takes the ASGI path, so order and flow control are as before.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

# Where `KeepServerSend` leaves the server's own `send` in a WebSocket's scope.
SERVER_SEND_SCOPE_KEY = "threadline.server_send"
# Above this many unsent bytes a socket takes the ASGI path, which waits for the client to
# read (and drops it when its queue overflows); the server's own high-water mark.
WRITE_BUFFER_LIMIT = 64 * 1024
_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed text frame (RFC 6455 5.2; a server never masks, and
    permessage-deflate leaves an uncompressed message as it is)."""
    size = len(payload)
    if size < 126:
        head = bytes((_TEXT_FIN, size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", _TEXT_FIN, 126, size)
    else:
        head = struct.pack("!BBQ", _TEXT_FIN, 127, size)
    return head + payload


class DirectSocket:
    """The transport under an open connection of uvicorn's `websockets-sansio` protocol
    (its default since 0.35)."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def writable(self) -> bool:
        """Open (handshake written, no close sent or received, no HTTP answer instead),
        not paused by flow control, and reading what it is sent."""
        protocol = self._protocol
        transport = self._transport
        return (
            protocol.handshake_complete
            and not protocol.close_sent
            and not protocol.disconnected
            and protocol.initial_response is None
            and protocol.writable.is_set()
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= WRITE_BUFFER_LIMIT
        )

    def write(self, frame: bytes) -> None:
        self._transport.write(frame)


def direct_socket(scope: Scope) -> DirectSocket | None:
    """The connection's transport when the server is one whose framing we know, else None."""
    send = scope.get(SERVER_SEND_SCOPE_KEY)
    protocol = getattr(send, "__self__", None)
    if protocol is None:
        return None
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import (
            WebSocketsSansIOProtocol,
        )
    except ImportError:  # another server: the ASGI path
        return None
    if type(protocol) is not WebSocketsSansIOProtocol or protocol.transport is None:
        return None
    return DirectSocket(protocol)


class KeepServerSend:
    """Pure ASGI middleware: keeps the server's `send` of a WebSocket connection in its
    scope, before any wrapper replaces it. HTTP passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND_SCOPE_KEY] = send
        await self.app(scope, receive, send)
