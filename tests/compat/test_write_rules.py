"""Documented rules of the writes and filters that the endpoint modules leave out: retries
by `random_id`, bounds of tags and file names, `startconversation`'s file, `sendmessage`'s
body, `settyping` by user id, the filters `assistant_type` and `include_no_tags`. Each in
every form a client may send it. See README.md for the list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.helpers import admin, assigned, error, ok, started
from tests.compat.forms import FORMS, READ_FORMS, send
from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AssistantType
from threadline.db.engine import Database

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def _snapshot(api: httpx.AsyncClient, cid: int) -> tuple[Any, Any]:
    """The conversation and its parts, to tell that a request changed nothing."""
    parts = ok(await api.get(f"/conversations/{cid}/parts", params={"paginate_count": 50}))
    return ok(await api.get(f"/conversations/{cid}")), parts


# ---------------------------------------------------------------------------
# random_id: "a retry changes nothing and answers the same"


@pytest.mark.parametrize("form", FORMS)
async def test_assign_close_and_tag_retries_change_nothing_and_answer_the_same(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}"
    # (write, its parameters, a write that moves the conversation on before the retry)
    cases: list[tuple[str, str, dict[str, Any], tuple[str, str, dict[str, Any]]]] = [
        ("POST", "assign", {"admin": world.other_admin_id}, ("POST", "assign", {"admin": 0})),
        ("POST", "close", {"from_admin": world.admin_id}, ("POST", "/ext/reopen", {})),
        ("POST", "tag", {"tag": "vip"}, ("DELETE", "tag", {"tag": "vip"})),
        ("DELETE", "tag", {"tag": "vip"}, ("POST", "tag", {"tag": "vip"})),
    ]
    for key, (method, write, params, (move, moved_by, move_params)) in enumerate(cases, 1):
        if method == "DELETE":
            ok(await api.post(f"{url}/tag", json={"tag": "vip"}))
        sent = {**params, "random_id": 1000 + key}
        first = ok(await send(api, method, f"{url}/{write}", sent, form))
        assert set(first) == {"id", "part_group"}, write
        assert ok(await send(api, method, f"{url}/{write}", sent, form)) == first, write
        if moved_by.startswith("/ext/"):
            ok(await api.request(move, f"/ext/conversations/{cid}/{moved_by[5:]}"))
        else:
            ok(await api.request(move, f"{url}/{moved_by}", json=move_params))
        before = await _snapshot(api, cid)
        assert ok(await send(api, method, f"{url}/{write}", sent, form)) == first, write
        assert await _snapshot(api, cid) == before, write


@pytest.mark.parametrize("form", FORMS)
async def test_auto_assign_random_id_is_the_key_of_the_assignment(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    """ "auto_assign_random_id: random ID of the assignment's ConversationPart, to control
    sending": the assignment made before the reply carries it, and a retry of the reply
    makes no second assignment, even after the conversation was assigned to someone else."""
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/reply"
    params = {
        "body": "On it",
        "auto_assign": world.other_admin_id,
        "auto_assign_random_id": 77,
        "random_id": 78,
    }
    part = ok(await send(api, "POST", url, params, form))
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    assert [(p["type"], p["random_id"]) for p in parts[:2]] == [
        ("reply_admin", 78),
        ("assigned", 77),
    ]
    ok(await api.post(f"/conversations/{cid}/assign", json={"admin": world.admin_id}))
    before = await _snapshot(api, cid)
    assert ok(await send(api, "POST", url, params, form))["id"] == part["id"]
    assert await _snapshot(api, cid) == before
    assert before[0]["assignee"]["id"] == world.admin_id
    # A new reply whose assignment is already made (the same key, the same assignee) adds
    # the reply alone.
    ok(await api.post(f"/conversations/{cid}/assign", json={"admin": world.other_admin_id}))
    count = ok(await api.get(f"/conversations/{cid}"))["parts_count"]
    again = ok(await send(api, "POST", url, {**params, "random_id": 79, "body": "More"}, form))
    assert again["body"] == "More"
    assert ok(await api.get(f"/conversations/{cid}"))["parts_count"] == count + 1


# ---------------------------------------------------------------------------
# tag: "Tag. String from 1 to 255 characters"


@pytest.mark.parametrize("form", FORMS)
async def test_a_tag_of_0_characters_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await assigned(app_db, world)
    before = await _snapshot(api, cid)
    for prefix in ("", "/v1"):
        for method in ("POST", "DELETE"):
            if prefix and method == "DELETE":
                continue  # v1 deletes with action=delete
            for params in ({"tag": ""}, {"tag": "   "}, {}, {"tag": "", "action": "delete"}):
                message = error(
                    await send(api, method, f"{prefix}/conversations/{cid}/tag", params, form),
                    400,
                    "BadRequest",
                )
                assert message.startswith("tag"), (prefix, method, params)
    assert await _snapshot(api, cid) == before
    ok(await send(api, "POST", f"/conversations/{cid}/tag", {"tag": "x" * 255}, form))


# ---------------------------------------------------------------------------
# reply: "attachment_file_name - a string from 1 to 255 characters"


async def test_an_attachment_file_name_over_255_characters_is_refused(
    app: FastAPI, api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world)
    before = await _snapshot(api, cid)
    for name in ("a" * 252 + ".png", "я" * 256):
        message = error(
            await api.post(
                f"/conversations/{cid}/reply",
                files={
                    "attachment": ("shot.png", PNG, "image/png"),
                    "attachment_file_name": (None, name),
                },
            ),
            400,
            "BadRequest",
        )
        assert message.startswith("attachment_file_name")
    assert await _snapshot(api, cid) == before
    root = app.state.api_settings.data_dir / "attachments"
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]
    name = "a" * 251 + ".png"
    part = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            files={
                "attachment": ("shot.png", PNG, "image/png"),
                "attachment_file_name": (None, name),
            },
        )
    )
    assert part["attachments"][0]["filename"] == name


# ---------------------------------------------------------------------------
# startconversation: "Either body or file + filename must be sent. Both can be sent
# simultaneously." "Files up to 10 Mbytes ... one of jpg, jpeg, png, gif, pdf, rar, zip,
# html, csv, docx, doc, xlsx, xls, txt, sig." "filename: required, if file is set."


async def test_start_conversation_body_and_file_rules(
    app: FastAPI, api: httpx.AsyncClient, world: World
) -> None:
    url = f"/users/{world.user_id}/startconversation"
    listed = f"/users/{world.user_id}/conversations"

    def stored() -> int:
        root = app.state.api_settings.data_dir / "attachments"
        return len([p for p in root.rglob("*") if p.is_file()]) if root.exists() else 0

    # Neither body nor file.
    for sent in ({"data": {}}, {"data": {"body": "  "}}, {"files": {"body": (None, "")}}):
        message = error(await api.post(url, **sent), 400, "BadRequest")  # type: ignore[arg-type]
        assert message.startswith("body")
    error(await api.post(url, json={"body": ""}), 400, "BadRequest")

    # A file without its filename; a file name longer than 255; a type not on the list; a
    # file over 10 MB: refused, nothing stored, no conversation.
    def upload(name: str, data: bytes, kind: str, filename: str | None) -> dict[str, Any]:
        sent: dict[str, Any] = {"file": (name, data, kind)}
        if filename is not None:
            sent["filename"] = (None, filename)
        return sent

    big = b"x" * (10 * 1024 * 1024 + 1)
    refused: list[tuple[dict[str, Any], str]] = [
        (upload("shot.png", PNG, "image/png", None), "filename"),
        (upload("shot.png", PNG, "image/png", " "), "filename"),
        (upload("a.png", PNG, "image/png", "a" * 252 + ".png"), "filename"),
        (upload("run.exe", b"MZ", "application/x-msdownload", "run.exe"), "file"),
        (upload("pic.svg", b"<svg/>", "image/svg+xml", "pic.svg"), "file"),
        (upload("noext", b"hello", "text/plain", "noext"), "file"),
        (upload("photo.png", PNG, "image/png", "photo.exe"), "file"),
        (upload("big.pdf", big, "application/pdf", "big.pdf"), "file"),
    ]
    for files, name in refused:
        message = error(await api.post(url, files=files), 400, "BadRequest")
        assert message.startswith(name), (files.keys(), message)
    assert stored() == 0
    assert ok(await api.get(listed)) == []
    # Each documented type (the name's extension, any case); 10 MB exactly; body and file
    # together.
    kinds = ["jpg", "jpeg", "png", "gif", "pdf", "rar", "zip", "html", "csv", "docx", "doc"]
    kinds += ["xlsx", "xls", "txt", "SIG"]
    for kind in kinds:
        cid = ok(
            await api.post(
                url,
                files={
                    "file": ("upload", b"data", "application/octet-stream"),
                    "filename": (None, f"file.{kind}"),
                },
            )
        )["id"]
        part = ok(await api.get(f"/conversations/{cid}"))["part_last"]
        assert part["attachments"][0]["filename"] == f"file.{kind}"
        assert part["body"] == ""
    cid = ok(
        await api.post(
            url,
            files={
                "file": ("big.pdf", b"x" * (10 * 1024 * 1024), "application/pdf"),
                "filename": (None, "big.pdf"),
                "body": (None, "See the file"),
            },
        )
    )["id"]
    part = ok(await api.get(f"/conversations/{cid}"))["part_last"]
    assert part["body"] == "See the file"
    assert part["attachments"][0]["size"] == 10 * 1024 * 1024
    assert stored() == len(kinds) + 1


# ---------------------------------------------------------------------------
# sendmessage: "body - string, the message's text" (required); settyping: from_user


@pytest.mark.parametrize("form", FORMS)
async def test_send_message_with_an_empty_body_is_refused(
    api: httpx.AsyncClient, world: World, form: str
) -> None:
    url = f"/users/{world.user_id}/sendmessage"
    for params in ({"body": ""}, {"body": "  "}, {}, {"body": "", "type": "popup_big"}):
        message = error(await send(api, "POST", url, params, form), 400, "BadRequest")
        assert message.startswith("body"), params
    assert ok(await api.get(f"/users/{world.user_id}/conversations")) == []


@pytest.mark.parametrize("form", FORMS)
async def test_settyping_with_a_user_id(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world)
    url = f"/conversations/{cid}/settyping"
    for value in (world.user_id, str(world.user_id)):
        assert ok(await send(api, "POST", url, {"body": "Hel", "from_user": value}, form)) == {}
    message = error(
        await send(api, "POST", url, {"body": "Hel", "from_user": world.foreign_user_id}, form),
        400,
        "BadRequest",
    )
    assert message.startswith("from_user")
    error(await send(api, "POST", "/conversations/987654/settyping", {}, form), 404, "NotFound")


# ---------------------------------------------------------------------------
# GET /apps/{id}/conversations: assistant_type, include_no_tags


@pytest.mark.parametrize("form", READ_FORMS)
async def test_every_assistant_type_and_include_no_tags_alone(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    bots = {}
    for kind in AssistantType:
        cid = await started(app_db, world, kind.value)
        await service.perform(app_db, world.app_id, cid, ev.BotTakeOver(kind))
        bots[kind.value] = cid
    assert set(bots) == {
        "dialogflow", "lead_bot", "routing_bot", "facebook_bot", "telegram_bot", "widget_bot"
    }  # fmt: skip
    url = f"/apps/{world.app_id}/conversations"

    async def listed(**params: Any) -> set[int]:
        return {c["id"] for c in ok(await send(api, "GET", url, params, form))}

    for kind, cid in bots.items():
        assert await listed(assistant_type=kind, include_not_assigned=True) == {cid}, kind
    error(await send(api, "GET", url, {"assistant_type": "chat_bot"}, form), 400, "BadRequest")
    # include_no_tags alone ("set true to get conversations without tags in result. Can be
    # used only without tags argument"): only the conversations without a tag.
    tagged = await assigned(app_db, world, "tagged")
    await service.perform(app_db, world.app_id, tagged, ev.AddTag("x", admin(world)))
    plain = await assigned(app_db, world, "plain")
    assert await listed(include_no_tags=True) == {plain}
    assert await listed(include_no_tags=True, include_not_assigned=True) == {
        plain,
        *bots.values(),
    }
    assert await listed(include_no_tags=False) == {tagged, plain}
