"""Every inbox view and its counts against a brute-force answer, while conversations change.

A random history is written through the engine on a virtual clock; at checkpoints each
view (every status, assignee, channel, tag and importance, alone and combined) is walked
page by page and its counts read, and both must equal what plain Python computes from the
stored conversation rows. Moving the clock past snoozes, with no write, must move them
from delayed to open in the pages and the counts alike.
"""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

import pytest

from tests.inbox.scene import TAGS, Scene, reference_counts, reference_page
from threadline.conversations import service as conversations
from threadline.conversations.queries import PageRequest
from threadline.core import events as ev
from threadline.db.engine import Database
from threadline.inbox import maintain, views
from threadline.inbox import service as service_module
from threadline.inbox.counts import counts
from threadline.inbox.service import inbox, snapshot
from threadline.inbox.views import View


def all_views(scene: Scene) -> list[View]:
    combos = itertools.product(
        (None, "open", "delayed", "closed"),
        (None, 0, *scene.admins[:2]),
        (None, 0, *scene.channels[:2]),
        (None, *TAGS[:2]),
        (None, True, False),
    )
    return [View(*combo) for combo in combos]  # type: ignore[arg-type]


async def walk(db: Database, app_id: int, view: View, now: datetime, count: int = 4) -> list[int]:
    """Every page of the view, oldest-going, by its positions."""
    ids: list[int] = []
    position = None
    for _ in range(1000):
        async with snapshot(db) as conn:
            page = await views.page(conn, app_id, view, now, PageRequest(count, "before", position))
        ids.extend(s.id for s in page.states)
        if page.next_before is None:
            return ids
        position = page.next_before
    raise AssertionError("the walk did not end")


async def check(scene: Scene, sample: int, seed: int) -> list[View]:
    """Compare `sample` views (a different choice for each `seed`) with the reference, three
    in four of them views that hold conversations (an empty page equal to an empty page
    proves little); returns the views compared."""
    states = await scene.states()
    now = scene.now
    rng = random.Random(seed)
    every = all_views(scene)
    holding = [v for v in every if reference_page(states, v, now)]
    empty = [v for v in every if v not in holding]
    full = min(len(holding), sample * 3 // 4)
    chosen = rng.sample(holding, full) + rng.sample(empty, min(len(empty), sample - full))
    non_empty = 0
    for view in chosen:
        expected = reference_page(states, view, now)
        non_empty += bool(expected)
        assert await walk(scene.db, scene.app_id, view, now) == expected, view
        async with snapshot(scene.db) as conn:
            found = await counts(conn, scene.app_id, view, now)
        assert found == reference_counts(states, view, now), view
    assert non_empty >= sample // 2, f"only {non_empty} of {len(chosen)} views held rows"
    return chosen


async def test_views_and_counts_follow_every_change(db: Database) -> None:
    scene = Scene(db, random.Random(7))
    await scene.setup(conversations=30)
    compared: set[View] = set()
    for round_ in range(3):
        for _ in range(60):
            await scene.step()
        compared.update(await check(scene, sample=40, seed=2 * round_))
        # Time passes with no write: snoozes end.
        scene.tick(1500)
        compared.update(await check(scene, sample=25, seed=2 * round_ + 1))
    # Each checkpoint compares other views: together far more than one sample's worth.
    assert len(compared) > 120, len(compared)


async def test_a_snooze_ends_at_its_very_moment(db: Database) -> None:
    scene = Scene(db, random.Random(3))
    await scene.setup(conversations=3)
    target = scene.conversations[0]
    until = scene.now + timedelta(minutes=10)
    await conversations.perform(
        db, scene.app_id, target, ev.Delay(until, scene.admin()), now=scene.tick()
    )
    states = await scene.states()
    for at, status in ((until - timedelta(microseconds=1), "delayed"), (until, "open")):
        answer = await inbox(db, scene.app_id, View("delayed"), PageRequest(20), now=at)
        ids = [s.id for s in answer.page.states]
        assert (target in ids) == (status == "delayed")
        assert answer.counts == reference_counts(states, View("delayed"), at)
        opened = await inbox(db, scene.app_id, View("open"), PageRequest(20), now=at)
        assert (target in [s.id for s in opened.page.states]) == (status == "open")


async def test_counts_hold_across_sweeps_of_the_snoozed_cells(db: Database) -> None:
    """The watermark moves (behind "now", at it, even ahead of a later read's "now"); the
    counts at every moment stay exact, and a sweep never changes what is read."""
    scene = Scene(db, random.Random(17))
    await scene.setup(conversations=25)
    rng = random.Random(5)
    swept = 0
    for _ in range(4):
        for _ in range(50):
            await scene.step()
        states = await scene.states()
        moments = [scene.now + timedelta(seconds=s) for s in (-2000, 0, 1200, 2600)]
        before = []
        for at in moments:
            async with snapshot(db) as conn:
                before.append(await counts(conn, scene.app_id, View("open"), at))
        swept += await maintain.sweep(
            db, scene.app_id, scene.now + timedelta(seconds=rng.randint(-1500, 1500))
        )
        for at, earlier in zip(moments, before, strict=True):
            for view in (
                View("open"),
                View("delayed", tag=TAGS[0]),
                View("delayed", assignee=0),
                View(None, channel=scene.channels[1], assignee=scene.admins[0]),
            ):
                async with snapshot(db) as conn:
                    found = await counts(conn, scene.app_id, view, at)
                assert found == reference_counts(states, view, at), (view, at)
            async with snapshot(db) as conn:
                assert await counts(conn, scene.app_id, View("open"), at) == earlier
    assert swept > 0  # some snoozes did leave the cells


async def test_a_busy_read_sweeps(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "SWEEP_AFTER", 1)
    scene = Scene(db, random.Random(3))
    await scene.setup(conversations=4)
    target = scene.conversations[0]
    until = scene.now + timedelta(minutes=10)
    await conversations.perform(
        db, scene.app_id, target, ev.Delay(until, scene.admin()), now=scene.tick()
    )
    later = until + timedelta(seconds=1)
    first = await inbox(db, scene.app_id, View("open"), PageRequest(20), now=later)
    assert first.counts is not None
    assert first.counts.behind == 1
    second = await inbox(db, scene.app_id, View("open"), PageRequest(20), now=later)
    assert second.counts is not None
    assert second.counts.behind == 0
    assert second.counts == first.counts
    assert second.counts == reference_counts(await scene.states(), View("open"), later)
