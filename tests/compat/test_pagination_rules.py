"""The vendor's pagination page, rule by rule, on every paginated list: v2 directions
(`around` and its `next_after_position`), `paginate_including`, `paginate_page_order`,
and the default page size of 20 on v1 and v2. See README.md for the list."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.helpers import admin, ok, started
from tests.compat.forms import READ_FORMS, send
from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database


def _ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


@pytest.mark.parametrize("form", READ_FORMS)
async def test_parts_v2_after_around_including_and_page_order(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    cid = await started(app_db, world, "p0")
    for i in range(1, 7):
        await service.perform(app_db, world.app_id, cid, ev.AdminReply(admin(world), f"p{i}"))
    url = f"/conversations/{cid}/parts"
    p = _ids(ok(await api.get(url)))[::-1]  # p[0] the oldest ... p[6] the newest

    async def page(**params: Any) -> tuple[list[int], dict[str, Any]]:
        body = (await send(api, "GET", url, params, form)).json()
        assert body["meta"]["status"] == 200, body
        return _ids(body["data"]), body["meta"]

    # `after` without a position starts at the oldest row; rows come newest first.
    rows, meta = await page(paginate_direction="after", paginate_count=3)
    assert rows == [p[2], p[1], p[0]]
    assert meta["next_after_position"] == [p[2]]
    assert meta["next_before_position"] is None
    rows, meta = await page(
        paginate_direction="after", paginate_count=3, paginate_position=meta["next_after_position"]
    )
    assert rows == [p[5], p[4], p[3]]
    rows, meta = await page(
        paginate_direction="after", paginate_count=3, paginate_position=meta["next_after_position"]
    )
    assert rows == [p[6]]
    assert meta["next_after_position"] is None
    # `paginate_including`: the position's own row too (in either direction).
    rows, _ = await page(
        paginate_direction="after", paginate_position=[p[4]], paginate_including=True
    )
    assert rows == [p[6], p[5], p[4]]
    rows, _ = await page(paginate_position=[p[2]], paginate_including=True)
    assert rows == [p[2], p[1], p[0]]
    # `around`: up to paginate_count / 2 on each side.
    rows, meta = await page(paginate_direction="around", paginate_position=[p[3]], paginate_count=4)
    assert rows == [p[5], p[4], p[2], p[1]]
    assert meta["next_before_position"] == [p[1]]
    assert meta["next_after_position"] == [p[5]]
    rows, _ = await page(
        paginate_direction="around",
        paginate_position=[p[3]],
        paginate_count=4,
        paginate_including=True,
    )
    assert rows == [p[5], p[4], p[3], p[2]]
    # "next_after_position - when paginate_direction is after or around marks next
    # paginate_position with paginate_direction=after" (and the same before).
    newer, after_meta = await page(
        paginate_direction="after", paginate_position=meta["next_after_position"]
    )
    assert newer == [p[6]]
    assert after_meta["next_after_position"] is None
    older, before_meta = await page(paginate_position=meta["next_before_position"])
    assert older == [p[0]]
    assert before_meta["next_before_position"] is None
    # `paginate_page_order=asc`: the same page, oldest first.
    rows, meta = await page(paginate_count=3, paginate_page_order="asc")
    assert rows == [p[4], p[5], p[6]]
    assert meta["next_before_position"] == [p[4]]
    rows, _ = await page(
        paginate_direction="around",
        paginate_position=[p[3]],
        paginate_count=4,
        paginate_page_order="asc",
    )
    assert rows == [p[1], p[2], p[4], p[5]]


@pytest.mark.parametrize("form", READ_FORMS)
async def test_conversation_lists_around_with_next_after_position(
    api: httpx.AsyncClient, app_db: Database, world: World, form: str
) -> None:
    c = [await started(app_db, world, f"c{i}") for i in range(7)]  # c[6] the newest
    for url, base in (
        (f"/apps/{world.app_id}/conversations", {"include_not_assigned": True}),
        (f"/users/{world.user_id}/conversations", {}),
    ):
        body = (await send(api, "GET", url, {**base, "paginate_count": 3}, form)).json()
        assert _ids(body["data"]) == [c[6], c[5], c[4]]
        middle = body["meta"]["next_before_position"]  # c[4]'s position
        around = (
            await send(
                api,
                "GET",
                url,
                {
                    **base,
                    "paginate_direction": "around",
                    "paginate_position": middle,
                    "paginate_count": 4,
                },
                form,
            )
        ).json()
        assert _ids(around["data"]) == [c[6], c[5], c[3], c[2]]
        meta = around["meta"]
        assert meta["next_after_position"] is None  # nothing newer than c[6]
        around = (
            await send(
                api,
                "GET",
                url,
                {
                    **base,
                    "paginate_direction": "around",
                    "paginate_position": meta["next_before_position"],  # c[2]'s
                    "paginate_count": 2,
                },
                form,
            )
        ).json()
        assert _ids(around["data"]) == [c[3], c[1]]
        newer = (
            await send(
                api,
                "GET",
                url,
                {
                    **base,
                    "paginate_direction": "after",
                    "paginate_position": around["meta"]["next_after_position"],  # c[3]'s
                    "paginate_count": 2,
                },
                form,
            )
        ).json()
        assert _ids(newer["data"]) == [c[5], c[4]]
        older = (
            await send(
                api,
                "GET",
                url,
                {**base, "paginate_position": around["meta"]["next_before_position"]},
                form,
            )
        ).json()
        assert _ids(older["data"]) == [c[0]]
        assert older["meta"]["next_before_position"] is None


async def test_the_default_page_size_is_20_on_v1_and_v2(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    """ "count - from 1 to 50. Default: 20" (v1) and "paginate_count ... Defaults to 20"
    (v2), on lists longer than that."""
    made = [await started(app_db, world, str(i)) for i in range(23)]
    talk = made[0]
    for i in range(22):
        await service.perform(app_db, world.app_id, talk, ev.AdminReply(admin(world), f"r{i}"))
    # `talk` was updated last: it leads the conversation lists.
    newest_first = [talk, *made[:0:-1]]
    parts = _ids(ok(await api.get(f"/conversations/{talk}/parts", params={"paginate_count": 50})))
    assert len(parts) == 23
    for url, base, rows in (
        (f"/apps/{world.app_id}/conversations", {"include_not_assigned": "true"}, newest_first),
        (f"/users/{world.user_id}/conversations", {}, newest_first),
        (f"/conversations/{talk}/parts", {}, parts),
    ):
        v1 = (await api.get("/v1" + url, params=base)).json()
        assert _ids(v1["data"]) == rows[:20], url
        rest = ok(await api.get("/v1" + url, params={**base, "after": v1["meta"]["next_after"]}))
        assert _ids(rest) == rows[20:], url
        v2 = (await api.get(url, params=base)).json()
        assert _ids(v2["data"]) == rows[:20], url
        rest = ok(
            await api.get(
                url, params={**base, "paginate_position": v2["meta"]["next_before_position"]}
            )
        )
        assert _ids(rest) == rows[20:], url
