"""Files in the widget: a visitor sends one (starting a conversation or replying), within
the settings' size limit and types, and fetches the files of the parts it sees with its
own token; an operator's note's file, another visitor's and another app's stay out of reach.
Bodies reach the visitor with `body_html`, as the inbox shows them."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.api.helpers import error, ok
from tests.conftest import World
from tests.widget.test_widget_api import API, session, visitor
from threadline.api.config import ApiSettings

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def stored_files(app: FastAPI) -> list[Path]:
    root: Path = app.state.api_settings.data_dir / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_a_visitor_sends_files_and_fetches_the_ones_it_sees(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    s = await session(app, world.app_id)
    async with visitor(app, s["token"]) as v:
        first = ok(
            await v.post(
                f"{API}/conversations",
                data={"body": "", "random_id": "5"},
                files={"file": ("shot.png", PNG, "image/png")},
            )
        )
        cid = first["conversation"]["id"]
        (mine,) = first["part"]["attachments"]
        assert mine["filename"] == "shot.png"
        assert (
            mine["url"]
            == f"http://threadline.test{API}/conversations/{cid}/attachments/{mine['id']}"
        )
        got = await v.get(mine["url"])
        assert got.status_code == 200
        assert got.content == PNG
        assert got.headers["content-type"] == "image/png"
        assert got.headers["content-disposition"].startswith("inline;")
        assert got.headers["access-control-allow-origin"] == "*"
        # A retry stores nothing more.
        again = ok(
            await v.post(
                f"{API}/conversations",
                data={"body": "", "random_id": "5"},
                files={"file": ("shot.png", PNG, "image/png")},
            )
        )
        assert again["part"]["id"] == first["part"]["id"]
        assert len(stored_files(app)) == 1
        # The operators see it in the conversation (it was tied to the new conversation).
        theirs = ok(await api.get(f"/conversations/{cid}/parts"))
        assert [a["id"] for p in theirs for a in p["attachments"]] == [mine["id"]]

        reply = ok(
            await v.post(
                f"{API}/conversations/{cid}/reply",
                data={"body": "the log", "random_id": "6"},
                files={"file": ("log.txt", b"line 1\n", "text/plain")},
            )
        )
        (log,) = reply["part"]["attachments"]
        got = await v.get(log["url"])
        assert got.content == b"line 1\n"
        assert got.headers["content-disposition"].startswith("attachment;")

        # An operator's reply with a file: the visitor fetches it; a note's file it never sees.
        ok(
            await api.post(
                f"/conversations/{cid}/reply",
                data={"body": "<b>Here</b> https://help.test"},
                files={"attachment": ("guide.pdf", b"%PDF-1.4", "application/pdf")},
            )
        )
        secret = ok(
            await api.post(
                f"/conversations/{cid}/reply",
                data={"body": "internal", "type": "note"},
                files={"attachment": ("internal.txt", b"secret", "text/plain")},
            )
        )
        history = ok(await v.get(f"{API}/conversations/{cid}"))
        (shown,) = [p for p in history["parts"] if p["type"] == "reply_admin"]
        assert shown["body_html"] == (
            '<b>Here</b> <a href="https://help.test" target="_blank" '
            'rel="noopener noreferrer">https://help.test</a>'
        )
        (guide,) = shown["attachments"]
        assert (await v.get(guide["url"])).content == b"%PDF-1.4"
        note_file = secret["attachments"][0]["id"]
        error(await v.get(f"{API}/conversations/{cid}/attachments/{note_file}"), 404, "NotFound")

    # Another visitor, and a file id of another conversation, are answered as missing.
    other = await session(app, world.app_id)
    async with visitor(app, other["token"]) as o:
        error(await o.get(mine["url"]), 404, "NotFound")
        own = ok(await o.post(f"{API}/conversations", json={"body": "hi"}))
        own_id = own["conversation"]["id"]
        error(
            await o.get(f"{API}/conversations/{own_id}/attachments/{mine['id']}"), 404, "NotFound"
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://threadline.test"
    ) as nobody:
        error(await nobody.get(mine["url"]), 401, "AuthenticationFailed")


async def test_a_refused_file_is_said_plainly_and_leaves_nothing(
    app: FastAPI, world: World
) -> None:
    s = await session(app, world.app_id)
    settings: ApiSettings = app.state.api_settings
    app.state.api_settings = settings.model_copy(
        update={"attachment_max_bytes": 2048, "attachment_types": ("image/*", "text/plain")}
    )
    async with visitor(app, s["token"]) as v:
        cid = ok(await v.post(f"{API}/conversations", json={"body": "hi"}))["conversation"]["id"]
        url = f"{API}/conversations/{cid}/reply"
        big = error(
            await v.post(url, files={"file": ("big.png", b"x" * 2049, "image/png")}),
            400,
            "BadRequest",
        )
        assert big == "file: the file is larger than the limit of 2 KB"
        kind = error(
            await v.post(url, files={"file": ("run.exe", b"MZ", "application/x-msdownload")}),
            400,
            "BadRequest",
        )
        assert kind == "file: files of type application/x-msdownload are not accepted"
        error(
            await v.post(
                f"{API}/conversations/{cid + 1000}/reply",
                files={"file": ("a.txt", b"hi", "text/plain")},
            ),
            404,
            "NotFound",
        )
        history = ok(await v.get(f"{API}/conversations/{cid}"))
        assert len(history["parts"]) == 1
    assert stored_files(app) == []
