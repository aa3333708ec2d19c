"""Search against a brute-force answer, combined with views; snippets; erasure."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import datetime

import pytest
from sqlalchemy import text

from tests.inbox.scene import TAGS, Scene, reference_search
from threadline.conversations import service as conversations
from threadline.conversations.queries import PageRequest
from threadline.core import events as ev
from threadline.core.enums import PartType
from threadline.core.errors import InvalidParameter
from threadline.db.engine import Database
from threadline.inbox import search, words
from threadline.inbox.search import parse_query, snippet
from threadline.inbox.views import View

QUERIES = (
    "invoice", "INVOICE", "voic", "refund invoice", "ok", "no", "it", "a", "ok thanks",
    "hello, order!", "xyzzy", "ship", "webhook export", "a it",
)  # fmt: skip


async def walk(
    db: Database, app_id: int, q: str, view: View, now: datetime, count: int = 3
) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    position = None
    query = parse_query(q)
    for _ in range(500):
        async with db.read() as conn:
            page = await search.page(
                conn, app_id, query, view, now, PageRequest(count, "before", position)
            )
        found.extend((h.state.id, h.part_id) for h in page.hits)
        if page.next_before is None:
            return found
        position = page.next_before
    raise AssertionError("the walk did not end")


async def check(scene: Scene, views: list[View]) -> None:
    states = await scene.states()
    parts = await scene.parts()
    for q, view in itertools.product(QUERIES, views):
        expected = reference_search(states, parts, q, view, scene.now)
        assert await walk(scene.db, scene.app_id, q, view, scene.now) == expected, (q, view)


@pytest.mark.parametrize(
    ("walks", "max_words"), [((400, 4000), words.MAX_WORDS), ((2, 5), words.MAX_WORDS), ((2, 5), 1)]
)
async def test_search_matches_the_reference_in_every_view(
    db: Database, walks: tuple[int, int], max_words: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short walks make every page go through the text index too; on PostgreSQL, a piece held
    # by more listed words than `max_words` is looked up in the bodies' trigram index.
    monkeypatch.setattr(search, "WALKS", walks)
    monkeypatch.setattr(words, "MAX_WORDS", max_words)
    scene = Scene(db, random.Random(11))
    await scene.setup(conversations=25)
    for _ in range(80):
        await scene.step()
    views = [
        View(None),
        View("open"),
        View("closed", assignee=0),
        View(None, channel=scene.channels[1]),
        View(None, tag=TAGS[0]),
        View("open", important=True, tag=TAGS[1]),
    ]
    await check(scene, views)


async def test_the_other_app_is_never_searched(db: Database) -> None:
    scene = Scene(db, random.Random(5))
    await scene.setup(conversations=2)
    async with db.read() as conn:
        page = await search.page(
            conn, scene.app_id, parse_query("invoice refund hello"), View(None), scene.now,
            PageRequest(50),
        )  # fmt: skip
    assert scene.foreign_conversation not in [h.state.id for h in page.hits]


async def test_erasure_takes_the_text_out_at_once(db: Database) -> None:
    scene = Scene(db, random.Random(1))
    await scene.setup(conversations=1)
    outcome = await conversations.start_by_user(
        db, scene.app_id, scene.users[0], ev.UserReply(body="My passport number is QX81234"),
        now=scene.tick(),
    )  # fmt: skip
    ident = outcome.state.id
    await conversations.perform(
        db, scene.app_id, ident, ev.ContentPart(
            PartType.NOTE,
            scene.admin(), body="checked the passport QX81234",
        ), now=scene.tick(),
    )  # fmt: skip

    async def hits(q: str) -> list[int]:
        async with db.read() as conn:
            page = await search.page(
                conn, scene.app_id, parse_query(q), View(None), scene.now, PageRequest(20)
            )
        return [h.state.id for h in page.hits]

    assert await hits("qx81234") == [ident]
    assert await hits("passport") == [ident]
    await conversations.perform(db, scene.app_id, ident, ev.Remove(), now=scene.tick())
    assert await hits("qx81234") == []
    assert await hits("passport") == []
    # Not hidden by a filter: gone from the text indexes themselves.
    async with db.read() as conn:
        if db.is_sqlite:
            for table in ("parts_trigram", "parts_words"):
                rows = await conn.execute(
                    text(f"SELECT rowid FROM {table} WHERE {table} MATCH '\"passport\"'")
                )
                assert rows.all() == []
            rows = await conn.execute(
                text("SELECT rowid FROM parts_trigram WHERE parts_trigram MATCH '\"81234\"'")
            )
            assert rows.all() == []
        else:
            rows = await conn.execute(
                text("SELECT id FROM conversation_parts WHERE body ILIKE '%passport%'")
            )
            assert rows.all() == []


async def _listed(db: Database, *candidates: str) -> set[str]:
    async with db.read() as conn:
        rows = await conn.execute(
            text("SELECT word FROM search_words WHERE word = ANY(:w)"), {"w": list(candidates)}
        )
        return {str(r[0]) for r in rows}


async def test_the_word_list_follows_the_bodies(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's word list")
    scene = Scene(db, random.Random(3))
    await scene.setup(conversations=0)
    user = scene.users[0]

    async def start(body: str) -> int:
        outcome = await conversations.start_by_user(
            db, scene.app_id, user, ev.UserReply(body=body), now=scene.tick()
        )
        return outcome.state.id

    first = await start("Zorbulax paid, see Quenditra-77 and OK")
    second = await start("zorbulax again")
    # Lower-cased words of three characters or more, as the whole-word index has them.
    assert await _listed(db, "zorbulax", "quenditra", "77", "ok", "paid") == {
        "zorbulax", "quenditra", "paid",
    }  # fmt: skip
    assert await _listed(db, "Zorbulax") == set()

    async def hits(q: str) -> list[int]:
        async with db.read() as conn:
            page = await search.page(
                conn, scene.app_id, parse_query(q), View(None), scene.now, PageRequest(20)
            )
        return [h.state.id for h in page.hits]

    assert await hits("bula") == [second, first]
    assert await hits("endit") == [first]
    await conversations.perform(db, scene.app_id, first, ev.Remove(), now=scene.tick())
    # The erased words no other part holds are gone; one another part holds stays.
    assert await _listed(db, "zorbulax", "quenditra", "paid") == {"zorbulax"}
    assert await hits("endit") == []
    assert await hits("bula") == [second]
    third = await start("quenditra is back")
    assert await _listed(db, "quenditra") == {"quenditra"}
    assert await hits("endit") == [third]


async def test_concurrent_erasures_and_writes_keep_the_word_list_exact(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's word list")
    scene = Scene(db, random.Random(4))
    await scene.setup(conversations=0)
    for round_ in range(5):
        shared, kept = f"sharedword{round_}x", f"keptword{round_}x"
        erased = []
        for user in scene.users[:3]:
            outcome = await conversations.start_by_user(
                db, scene.app_id, user, ev.UserReply(body=f"{shared} and {kept}"), now=scene.tick()
            )
            erased.append(outcome.state.id)
        # Three erasures of the only parts with both words, and at the same time a new part
        # with one of them: that one stays listed, the other goes.
        writer = conversations.start_by_user(
            db, scene.app_id, scene.users[3], ev.UserReply(body=f"{kept} again"), now=scene.tick()
        )
        await asyncio.gather(
            writer,
            *(conversations.perform(db, scene.app_id, c, ev.Remove()) for c in erased),
        )
        assert await _listed(db, shared, kept) == {kept}


def test_snippets_mark_every_match_and_escape_the_rest() -> None:
    q = parse_query("invoice ok")
    assert snippet("Your <b>invoice</b> is ok & paid", q) == (
        "Your <mark>invoice</mark> is <mark>ok</mark> &amp; paid"
    )
    assert snippet("token okay Invoices", q) == "token okay <mark>Invoice</mark>s"
    long = "word " * 100 + "the invoice " + "more " * 100
    out = snippet(long, q)
    assert out.startswith("\u2026")
    assert out.endswith("\u2026")
    assert "<mark>invoice</mark>" in out
    assert len(out) < 220


@pytest.mark.parametrize("q", ["", "   ", "!!!", "x" * 201, " ".join("abcdefghi")])
def test_queries_without_words_or_too_long_are_refused(q: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_query(q)


@pytest.mark.parametrize("walks", [(400, 20_000), (1, 2)])
async def test_words_are_runs_of_letters_and_digits(
    db: Database, walks: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "WALKS", walks)
    scene = Scene(db, random.Random(8))
    await scene.setup(conversations=0)
    bodies = [
        "Please e-mail me at uma@example.com, ok?",
        "ok_ok and token-okay",
        "Herr Müller paid 12.50 EUR (order #4821)",
        "C'est ça: v2 is out",
        "<p>Hello <b>world</b></p>",
    ]
    for body in bodies:
        await conversations.start_by_user(
            db, scene.app_id, scene.users[0], ev.UserReply(body=body), now=scene.tick()
        )
    states = await scene.states()
    parts = await scene.parts()
    for q in (
        "e", "mail", "me", "com", "ok", "okay", "ok ok", "üll", "MÜLLER", "12", "50",
        "4821", "c", "ça", "v2", "is", "b", "hello world", "ld",
    ):  # fmt: skip
        expected = reference_search(states, parts, q, View(None), scene.now)
        assert await walk(db, scene.app_id, q, View(None), scene.now) == expected, q
