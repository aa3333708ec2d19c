"""`threadline worker`: webhooks delivered by a process of their own, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import World
from tests.webhooks.test_worker import Receiver, endpoint, settled
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database
from threadline.webhooks import repository as repo

ROOT = Path(__file__).resolve().parents[2]


async def test_the_worker_command_delivers(db: Database, db_url: str, world: World) -> None:
    receiver = Receiver()
    await receiver.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from threadline.cli import main; main()",
        "worker",
        "--database-url",
        db_url,
        cwd=ROOT,
        env={**os.environ, "THREADLINE_WEBHOOK_POLL_SECONDS": "0.2"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ep = await endpoint(db, world, receiver.url, ["conversation_reply"])
        await service.start_by_user(db, world.app_id, world.user_id, ev.UserReply(body="hi"))
        (done,) = await settled(db, world, ep, 1, repo.DELIVERED)
        assert receiver.requests[0]["headers"]["webhook-id"] == f"msg_{done.id}"
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await receiver.stop()
