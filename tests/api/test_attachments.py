"""Files on reply (`attachment`) and startconversation (`file`): limits, storage, serving."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from tests.api.conftest import client_for
from tests.api.helpers import error, foreign_conversation, ok, started
from tests.conftest import World
from threadline.api.config import ApiSettings
from threadline.apps.repository import AppRepository
from threadline.apps.service import ALL_SCOPES, issue_token, utcnow
from threadline.attachments import service as files
from threadline.attachments.storage import LocalStorage
from threadline.db.engine import Database
from threadline.db.schema import attachments

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def stored_files(app: FastAPI) -> list[Path]:
    root: Path = app.state.api_settings.data_dir / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_reply_with_an_attachment(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            data={
                "body": "",
                "from_admin": str(world.admin_id),
                "attachment_file_name": "shot.png",
            },
            files={"attachment": ("ignored.bin", PNG, "image/png")},
        )
    )
    (attachment,) = part["attachments"]
    assert attachment["type"] == "file"
    assert attachment["filename"] == "shot.png"
    assert attachment["mime_type"] == "image/png"
    assert attachment["size"] == len(PNG)
    assert attachment["url"] == f"http://threadline.test/ext/attachments/{attachment['id']}"
    r = await api.get(attachment["url"])
    assert r.status_code == 200
    assert r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].startswith("inline;")
    assert r.headers["x-content-type-options"] == "nosniff"
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert parts[0]["attachments"] == [attachment]
    assert len(stored_files(app)) == 1
    as_text = ok(await api.get(f"/conversations/{cid}/parts", params={"id_as_string": 1}))
    assert as_text[0]["attachments"][0]["id"] == str(attachment["id"])


async def test_download_needs_a_token_of_the_same_app(
    app: FastAPI, api: httpx.AsyncClient, anon: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply", files={"attachment": ("a.txt", b"hello", "text/plain")}
        )
    )
    url = part["attachments"][0]["url"]
    error(await anon.get(url), 401, "AuthenticationFailed")
    r = await anon.get(url, params={"auth_token": world.token})
    assert r.content == b"hello"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''a.txt"
    async with app_db.write() as conn:
        repo = AppRepository(conn)
        reader = await issue_token(repo, world.app_id, "r", ["conversations-read"], utcnow())
        others = [
            await issue_token(repo, world.app_id, s, [s], utcnow())
            for s in ("user-read", "conversations-write", "as-user", "messages-manual-send-one")
        ]
        foreign = await issue_token(
            AppRepository(conn), world.foreign_app_id, "f", list(ALL_SCOPES), utcnow()
        )
    async with client_for(app, reader) as client:
        assert (await client.get(url)).content == b"hello"
    for token in others:  # a file is part of a conversation (maybe of a note): read scope
        async with client_for(app, token) as client:
            error(await client.get(url), 403, "PermissionDenied")
    async with client_for(app, foreign) as client:
        error(await client.get(url), 404, "NotFound")
    error(await api.get("/ext/attachments/987654"), 404, "NotFound")
    error(await api.get("/ext/attachments/x"), 400, "BadRequest")


async def test_file_names_are_cleaned_and_types_guessed(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            files={"attachment": ("../../etc/report.pdf", b"%PDF-1.4", "application/octet-stream")},
        )
    )
    (attachment,) = part["attachments"]
    assert attachment["filename"] == "report.pdf"
    assert attachment["mime_type"] == "application/pdf"


async def test_refused_files_leave_nothing(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    settings: ApiSettings = app.state.api_settings
    app.state.api_settings = settings.model_copy(update={"attachment_max_bytes": 10})
    message = error(
        await api.post(url, files={"attachment": ("big.txt", b"x" * 11, "text/plain")}),
        400,
        "BadRequest",
    )
    assert message.startswith("attachment")
    ok(await api.post(url, files={"attachment": ("small.txt", b"x" * 10, "text/plain")}))
    app.state.api_settings = settings
    error(
        await api.post(url, files={"attachment": ("run.exe", b"MZ", "application/x-msdownload")}),
        400,
        "BadRequest",
    )
    error(
        await api.post(url, files={"attachment": ("empty.txt", b"", "text/plain")}),
        400,
        "BadRequest",
    )
    error(await api.post(url, data={"attachment": "not a file"}), 400, "BadRequest")
    # refused by the engine after the file was stored: the file goes too
    error(
        await api.post(
            url, data={"from_admin": "999999"}, files={"attachment": ("a.txt", b"hi", "text/plain")}
        ),
        404,
        "NotFound",
    )
    theirs = await foreign_conversation(app_db, world)
    error(
        await api.post(
            f"/conversations/{theirs}/reply", files={"attachment": ("a.txt", b"hi", "text/plain")}
        ),
        404,
        "NotFound",
    )
    assert len(stored_files(app)) == 1
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == 2


async def test_retried_reply_keeps_one_file(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    send = {"data": {"random_id": "31"}, "files": {"attachment": ("a.txt", b"hi", "text/plain")}}
    first = ok(await api.post(url, **send))
    assert ok(await api.post(url, **send)) == first
    assert len(stored_files(app)) == 1


async def test_start_conversation_with_a_file(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    url = f"/users/{world.user_id}/startconversation"
    sent = {
        "data": {"filename": "photo.jpg", "random_id": "12"},
        "files": {"file": ("x", b"\xff\xd8\xff", "image/jpeg")},
    }
    cid = ok(await api.post(url, **sent))["id"]
    assert ok(await api.post(url, **sent))["id"] == cid
    c = ok(await api.get(f"/conversations/{cid}"))
    (attachment,) = c["reply_last"]["attachments"]
    assert attachment["filename"] == "photo.jpg"
    assert c["reply_last"]["body"] == ""
    assert len(stored_files(app)) == 1
    error(
        await api.post(
            url,
            data={"filename": "x.exe"},
            files={"file": ("x.exe", b"MZ", "application/x-msdownload")},
        ),
        400,
        "BadRequest",
    )
    error(
        await api.post(
            "/users/987654/startconversation",
            data={"filename": "a.txt"},
            files={"file": ("a.txt", b"hi", "text/plain")},
        ),
        404,
        "NotFound",
    )
    assert len(stored_files(app)) == 1


async def test_erasure_deletes_the_files(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply", files={"attachment": ("a.txt", b"secret", "text/plain")}
        )
    )
    url = part["attachments"][0]["url"]
    ok(
        await api.post(
            f"/users/{world.user_id}/startconversation",
            data={"filename": "b.txt"},
            files={"file": ("b.txt", b"secret", "text/plain")},
        )
    )
    assert len(stored_files(app)) == 2
    ok(await api.delete(f"/ext/users/{world.user_id}"))
    assert stored_files(app) == []
    error(await api.get(url), 404, "NotFound")
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert all(p["attachments"] == [] for p in parts)


async def attachment_rows(db: Database) -> int:
    async with db.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(attachments)) or 0)


@contextlib.asynccontextmanager
async def refusing_inserts(db: Database, table: str) -> AsyncIterator[None]:
    """The database itself refuses every insert into `table` (a trigger), until the end."""
    async with db.write() as conn:
        if db.is_sqlite:
            await conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}"
                    " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    f"CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
                )
            )
            await conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table}"
                    f" FOR EACH ROW EXECUTE FUNCTION refuse_{table}()"
                )
            )
    try:
        yield
    finally:
        async with db.write() as conn:
            if db.is_sqlite:
                await conn.execute(text(f"DROP TRIGGER refuse_{table}"))
            else:
                await conn.execute(text(f"DROP TRIGGER refuse_{table} ON {table}"))
                await conn.execute(text(f"DROP FUNCTION refuse_{table}()"))


async def test_a_failed_start_with_a_file_leaves_no_file_and_no_row(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """The file is stored before the conversation is written; when that write fails, the
    file and its row go with it."""
    url = f"/users/{world.user_id}/startconversation"
    sent = {"data": {"filename": "a.txt"}, "files": {"file": ("a.txt", b"hello", "text/plain")}}
    async with (
        refusing_inserts(app_db, "conversations"),
        client_for(app, world.token, raise_app_exceptions=False) as client,
    ):
        error(await client.post(url, **sent), 500, "InternalError")
    assert stored_files(app) == []
    assert await attachment_rows(app_db) == 0
    assert ok(await api.get(f"/users/{world.user_id}/conversations")) == []
    # Once the database accepts it again, the same request starts the conversation.
    ok(await api.post(url, **sent))
    assert len(stored_files(app)) == 1


async def test_a_failed_row_insert_deletes_the_saved_bytes(
    app_db: Database, world: World, tmp_path: Path
) -> None:
    """The bytes are saved before the row; when the database refuses the row, the bytes go."""
    storage = LocalStorage(tmp_path / "files")
    async with refusing_inserts(app_db, "attachments"):
        with pytest.raises(DBAPIError, match="refused by the test"):
            await files.store(
                app_db,
                storage,
                world.app_id,
                data=b"hello",
                filename="a.txt",
                mime_type="text/plain",
                conversation_id=None,
            )
    assert [p for p in (tmp_path / "files").rglob("*") if p.is_file()] == []
    assert await attachment_rows(app_db) == 0
