"""`body_html`: every answer carrying a part shows its body the way the screens do, and
`body` stays as it was sent."""

from __future__ import annotations

import httpx

from tests.api.helpers import ok, started
from tests.conftest import World
from threadline.db.engine import Database

LINK = 'target="_blank" rel="noopener noreferrer"'


async def test_parts_carry_the_cleaned_body_and_keep_the_body_as_sent(
    api: httpx.AsyncClient, app_db: Database, world: World
) -> None:
    cid = await started(app_db, world, body='<img src=x onerror="alert(1)"> https://shop.test')
    sent = "use <b>Settings</b> & <code>Reset</code>: https://docs.test/reset<script>x()</script>"
    part = ok(await api.post(f"/conversations/{cid}/reply", json={"body": sent}))
    assert part["body"] == sent
    expected = (
        "use <b>Settings</b> &amp; <code>Reset</code>: "
        f'<a href="https://docs.test/reset" {LINK}>https://docs.test/reset</a>'
    )
    assert part["body_html"] == expected
    note = ok(
        await api.post(
            f"/conversations/{cid}/reply",
            json={"body": '<a href="javascript:alert(1)">x</a>', "type": "note"},
        )
    )
    assert note["body_html"] == f"<a {LINK}>x</a>"
    parts = ok(await api.get(f"/conversations/{cid}/parts"))
    (user_part,) = [p for p in parts if p["type"] == "reply_user"]
    assert user_part["body_html"] == (
        "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; "
        f'<a href="https://shop.test" {LINK}>https://shop.test</a>'
    )
    assert [p["body_html"] for p in parts if p["type"] == "reply_admin"] == [expected]
    listed = ok(await api.get(f"/conversations/{cid}"))
    assert listed["part_last"]["body_html"] == note["body_html"]
