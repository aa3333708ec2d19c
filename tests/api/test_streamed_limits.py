"""Size limits on streamed request bodies, against a real server over TCP.

The other API tests run the app in process (httpx's ASGI transport hands the body over at
once, with its length), so a body sent in chunks without a Content-Length never reaches
the limits' streaming checks there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from tests.api.helpers import error, ok, started
from tests.events.live import serve
from threadline.api.params import MAX_PLAIN_BODY_BYTES

CHUNK = 64 * 1024


async def chunks(total: int, head: bytes = b"") -> AsyncIterator[bytes]:
    """`total` bytes in chunks, no Content-Length: the server reads them as they come."""
    yield head
    sent = len(head)
    while sent < total:
        piece = b"x" * min(CHUNK, total - sent)
        sent += len(piece)
        yield piece


async def test_a_streamed_body_over_the_limit_is_refused_and_writes_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async with serve(db_url, tmp_path) as live:
        cid = await started(live.db, live.world)
        url = f"/conversations/{cid}/reply"
        async with live.client() as client:
            headers = {"Content-Type": "application/json"}
            too_big = chunks(MAX_PLAIN_BODY_BYTES + CHUNK, b'{"body": "')
            r = await client.post(url, content=too_big, headers=headers)
            assert "content-length" not in r.request.headers  # sent chunked
            message = error(r, 400, "BadRequest")
            assert "too large" in message
            assert ok(await client.get(f"/conversations/{cid}"))["parts_count"] == 1
            # Under the limit, the same way of sending is read to its end and accepted.
            body = b'{"body": "' + b"y" * 1000 + b'"}'

            async def small() -> AsyncIterator[bytes]:
                yield body[:500]
                yield body[500:]

            part = ok(await client.post(url, content=small(), headers=headers))
            assert part["body"] == "y" * 1000


async def test_a_streamed_file_over_the_limit_is_refused_and_nothing_is_stored(
    db_url: str, tmp_path: Path
) -> None:
    async with serve(db_url, tmp_path) as live:
        live.app.state.api_settings = live.app.state.api_settings.model_copy(
            update={"attachment_max_bytes": 256 * 1024}
        )
        cid = await started(live.db, live.world)
        url = f"/conversations/{cid}/reply"
        boundary = "threadline-test-boundary"
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

        def multipart(size: int) -> AsyncIterator[bytes]:
            async def parts() -> AsyncIterator[bytes]:
                yield (
                    f"--{boundary}\r\n"
                    'Content-Disposition: form-data; name="attachment"; filename="a.txt"\r\n'
                    "Content-Type: text/plain\r\n\r\n"
                ).encode()
                async for chunk in chunks(size):
                    yield chunk
                yield f"\r\n--{boundary}--\r\n".encode()

            return parts()

        async with live.client() as client:
            r = await client.post(url, content=multipart(256 * 1024 + 1), headers=headers)
            assert "content-length" not in r.request.headers  # sent chunked
            assert "larger than" in error(r, 400, "BadRequest")
            assert ok(await client.get(f"/conversations/{cid}"))["parts_count"] == 1
            root = tmp_path / "data" / "attachments"
            assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]
            part = ok(await client.post(url, content=multipart(1000), headers=headers))
            assert part["attachments"][0]["size"] == 1000
