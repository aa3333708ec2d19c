"""Pagination walked to the end in every mode: no row missed or repeated, rows added meanwhile.

Seeded rows share timestamps in groups, so the `(last_update, id)` tiebreak and the v1
cursor (a timestamp alone) are both exercised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.api.helpers import error, ok
from tests.conftest import World
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database

LIST = "/apps/$self_app/conversations"
# These tests build positions from the rows' own `last_update`, which needs its microseconds
# (answers carry whole seconds unless asked; the cursors in `meta` are always exact: see
# tests/compat/test_client_requests.py for walks with whole-second answers).
ALL = {"include_not_assigned": "true", "precise_times": "true"}
BASE = datetime(2024, 1, 1, tzinfo=UTC)


async def seed(db: Database, world: World, n: int = 23) -> list[int]:
    """`n` inbox conversations; every three share one last_update (most with microseconds)."""
    made = []
    for i in range(n):
        when = BASE + timedelta(seconds=i // 3, microseconds=(i // 3) * 1001)
        outcome = await service.start_by_user(
            db, world.app_id, world.user_id, ev.UserReply(body=f"c{i}"), now=when
        )
        made.append(outcome.state.id)
    return made


Adder = Callable[[], Awaitable[None]]


def adder(db: Database, world: World) -> Adder:
    async def add() -> None:
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="new"))

    return add


async def walk_v1(
    api: httpx.AsyncClient, url: str, count: int, add: Adder, **params: Any
) -> list[Any]:
    seen: list[Any] = []
    after = None
    for _ in range(100):
        query = {**params, "count": count} | ({"after": after} if after is not None else {})
        r = await api.get(f"/v1{url}", params=query)
        seen.extend(x["id"] for x in ok(r))
        after = r.json()["meta"]["next_after"]
        await add()
        if after is None:
            return seen
    raise AssertionError("the walk did not end")


async def walk_v2(
    api: httpx.AsyncClient,
    url: str,
    count: int,
    add: Adder,
    direction: str,
    position: list[Any] | None = None,
    order: str = "desc",
    **params: Any,
) -> list[Any]:
    seen: list[Any] = []
    next_key = "next_before_position" if direction == "before" else "next_after_position"
    for _ in range(100):
        query = {
            **params,
            "paginate_count": count,
            "paginate_direction": direction,
            "paginate_page_order": order,
        }
        if position is not None:
            query["paginate_position"] = orjson.dumps(position).decode()
        r = await api.get(url, params=query)
        page = [x["id"] for x in ok(r)]
        keys = page if order == "desc" else page[::-1]
        # within a page, newest first (or oldest first with asc)
        seen.extend(keys if direction == "before" else keys[::-1])
        position = r.json()["meta"][next_key]
        await add()
        if position is None:
            return seen
    raise AssertionError("the walk did not end")


async def test_v1_conversations_walk(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = await seed(app_db, world)
    for count in (1, 2, 3, 4, 50):
        seen = await walk_v1(api, LIST, count, adder(app_db, world), **ALL)
        assert len(seen) == len(set(seen))
        originals = [i for i in seen if i in made]
        assert originals == sorted(made, key=lambda i: (made.index(i) // 3, i), reverse=True)


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_v2_before_walk(
    api: httpx.AsyncClient, app_db: Database, world: World, order: str
) -> None:
    made = await seed(app_db, world)
    for count in (1, 4, 50):
        seen = await walk_v2(api, LIST, count, adder(app_db, world), "before", order=order, **ALL)
        assert len(seen) == len(set(seen))
        assert [i for i in seen if i in made] == sorted(
            made, key=lambda i: (made.index(i) // 3, i), reverse=True
        )


async def test_v2_after_walk(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    made = await seed(app_db, world)
    add = adder(app_db, world)
    seen = await walk_v2(api, LIST, 4, add, "after", **ALL)
    assert len(seen) == len(set(seen))
    assert seen[: len(made)] == sorted(made, key=lambda i: (made.index(i) // 3, i))
    assert len(seen) > len(made)  # rows added during the walk show up at its end


async def test_v2_around_then_both_ways(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = await seed(app_db, world)
    everything = ok(await api.get(LIST, params={**ALL, "paginate_count": 50}))
    middle = everything[10]
    position = [middle["last_update"], middle["id"]]
    for including in ("false", "true"):
        r = await api.get(
            LIST,
            params={
                **ALL,
                "paginate_direction": "around",
                "paginate_count": 5,
                "paginate_position": orjson.dumps(position).decode(),
                "paginate_including": including,
            },
        )
        page = [c["id"] for c in ok(r)]
        meta = r.json()["meta"]
        expected = (
            [c["id"] for c in everything[8:13]]
            if including == "true"
            else [c["id"] for c in everything[8:10] + everything[11:14]]
        )
        assert page == expected
        older = await walk_v2(
            api, LIST, 3, adder(app_db, world), "before", meta["next_before_position"], **ALL
        )
        newer = await walk_v2(
            api, LIST, 3, adder(app_db, world), "after", meta["next_after_position"], **ALL
        )
        walked = newer[::-1] + page + older
        originals = [i for i in walked if i in made]
        assert len(walked) == len(set(walked))
        assert (
            sorted(originals) == sorted(made)
            if including == "true"
            else sorted(originals) == sorted(set(made) - {middle["id"]})
        )


async def test_v2_including_and_edges(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    await seed(app_db, world, 5)
    everything = ok(await api.get(LIST, params=ALL))
    top = everything[0]
    position = orjson.dumps([top["last_update"], top["id"]]).decode()
    r = await api.get(
        LIST,
        params={
            **ALL,
            "paginate_position": position,
            "paginate_including": "1",
            "paginate_count": 2,
        },
    )
    assert [c["id"] for c in ok(r)] == [c["id"] for c in everything[:2]]
    assert r.json()["meta"]["next_after_position"] is None
    r = await api.get(LIST, params={**ALL, "paginate_position": position, "paginate_count": 2})
    assert [c["id"] for c in ok(r)] == [c["id"] for c in everything[1:3]]
    assert r.json()["meta"]["next_after_position"] == [
        everything[1]["last_update"],
        everything[1]["id"],
    ]
    r = await api.get(
        LIST, params={**ALL, "paginate_position": position, "paginate_direction": "after"}
    )
    assert ok(r) == []
    assert r.json()["meta"] == {
        "status": 200,
        "next_before_position": None,
        "next_after_position": None,
    } or r.json()["meta"]["next_before_position"] == [top["last_update"], top["id"]]
    # a position given as strings (what id_as_string answers) works the same
    as_text = orjson.dumps([str(top["last_update"]), str(top["id"])]).decode()
    assert ok(
        await api.get(LIST, params={**ALL, "paginate_position": as_text, "paginate_count": 2})
    ) == ok(await api.get(LIST, params={**ALL, "paginate_position": position, "paginate_count": 2}))
    error(await api.get(LIST, params={**ALL, "paginate_direction": "around"}), 400, "BadRequest")
    error(await api.get(LIST, params={**ALL, "paginate_position": "[1, 2, 3]"}), 400, "BadRequest")
    error(await api.get(LIST, params={**ALL, "paginate_position": '["x", 2]'}), 400, "BadRequest")


async def test_parts_walks(api: httpx.AsyncClient, app_db: Database, world: World) -> None:
    outcome = await service.start_by_user(
        app_db, world.app_id, world.user_id, ev.UserReply(body="0")
    )
    cid = outcome.state.id
    for i in range(1, 12):
        await service.perform(app_db, world.app_id, cid, ev.UserReply(body=str(i)))
    url = f"/conversations/{cid}/parts"
    made = [p["id"] for p in ok(await api.get(url, params={"paginate_count": 50}))]
    assert made == sorted(made, reverse=True)

    async def add() -> None:
        await service.perform(app_db, world.app_id, cid, ev.UserReply(body="new"))

    seen = await walk_v1(api, url, 5, add)
    assert seen == made
    seen = await walk_v2(api, url, 5, add, "before")
    assert [i for i in seen if i in made] == made
    assert len(seen) == len(set(seen))
    seen = await walk_v2(api, url, 4, add, "after", order="asc")
    assert seen[: len(made)] == made[::-1]
    assert len(seen) == len(set(seen))
    r = await api.get(
        url,
        params={
            "paginate_position": f"[{made[5]}]",
            "paginate_direction": "around",
            "paginate_count": 3,
            "paginate_including": "1",
        },
    )
    assert [p["id"] for p in ok(r)] == made[4:7]
    error(await api.get(url, params={"paginate_position": "[1, 2]"}), 400, "BadRequest")
    error(await api.get(f"/v1{url}", params={"after": "x"}), 400, "BadRequest")


async def test_user_conversations_walk(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    made = await seed(app_db, world, 10)
    url = f"/users/{world.user_id}/conversations"
    seen = await walk_v2(api, url, 3, adder(app_db, world), "before")
    assert [i for i in seen if i in made] == sorted(
        made, key=lambda i: (made.index(i) // 3, i), reverse=True
    )
    seen = await walk_v1(api, url, 3, adder(app_db, world))
    assert [i for i in seen if i in made] == sorted(
        made, key=lambda i: (made.index(i) // 3, i), reverse=True
    )
