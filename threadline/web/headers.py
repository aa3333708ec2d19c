"""Security headers on every HTML answer.

Pages that set their own (the inbox sets a strict Content-Security-Policy) keep theirs;
any other HTML answer (the API's /docs, the demo site, error pages) gets at least these:
no MIME sniffing, no referrer, no framing by other sites, no plugins, no <base> rewriting.
The baseline policy does not restrict scripts, so /docs can still load its viewer.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTML_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_ENCODED = [
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in HTML_HEADERS.items()
]


class HtmlSecurityHeaders:
    """Pure ASGI (streams and WebSockets pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                kind = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if kind.lower().startswith(b"text/html"):
                    headers += [(n, v) for n, v in _ENCODED if n not in names]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)
