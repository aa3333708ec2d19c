"""A full disk under SQLite, Redis cut, and kill -9 of the server under load on both
databases: real `threadline serve` processes, bounded clients, the same assertions as the
PostgreSQL faults (every request answered, /health/ready truthful within 1 s, recovery
without a restart, no acknowledged write lost or duplicated, `threadline check` clean)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import Target, assert_writes_kept, prepare
from tests.faults.infra import (
    PrivatePostgres,
    PrivateRedis,
    Server,
    TcpProxy,
    Writers,
    acknowledged_count,
    wait_until,
)
from tests.faults.test_postgres_faults import ready


def mount(
    *args: str, tool: str = "mount", check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"no {tool} on this machine")
    return subprocess.run([path, *args], capture_output=True, check=check)


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 24 MB filesystem of the test's own (tmpfs), to fill up."""
    where = Path(tempfile.mkdtemp(prefix="threadline-faults-disk-"))
    mounted = mount("-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where), check=False)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode()[:200]}")
    try:
        yield where
    finally:
        mount(str(where), tool="umount", check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(disk: Path) -> Path:
    """Write a file until the filesystem refuses more."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        chunk = b"\0" * (1 << 16)
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
                out.flush()
    return filler


def test_full_disk_answers_storage_full_and_writes_resume(small_disk: Path, tmp_path: Path) -> None:
    target = prepare(f"sqlite:///{small_disk / 'threadline.db'}")
    server = Server(target.url, tmp_path)
    try:
        with Writers(server.base_url, target.token, target.conversation_id) as writers:
            wait_until(lambda: acknowledged_count(writers.tally) >= 20, 30, "writes before")
            filler = fill(small_disk)
            down = ready(server)
            assert down.status_code == 503
            assert "storage full" in down.json()["error"]
            wait_until(lambda: writers.tally.refused >= 5, 60, "writes refused: storage full")
            refusal = httpx.post(
                f"{server.base_url}/conversations/{target.conversation_id}/reply",
                headers={"Authorization": f"Token {target.token}"},
                json={"body": "while full"},
            )
            assert refusal.status_code == 503
            assert refusal.json()["meta"]["error_message"] == "storage full"
            before = acknowledged_count(writers.tally)
            filler.unlink()
            wait_until(lambda: acknowledged_count(writers.tally) >= before + 20, 30, "recovery")
            wait_until(lambda: ready(server).status_code == 200, 15, "ready again")
        writers.settle()
        assert writers.tally.bad == []
        assert set(writers.tally.statuses) <= {200, 503}
        assert_writes_kept(target, writers.tally)
    finally:
        server.stop()


def test_read_only_storage_answers_503_and_writes_resume(small_disk: Path, tmp_path: Path) -> None:
    """The database's directory is mounted read-only (a bind mount) while the server runs
    on it, then writable again."""
    target = prepare(f"sqlite:///{small_disk / 'db' / 'threadline.db'}")
    view = tmp_path / "view"
    view.mkdir()
    mount("--bind", str(small_disk / "db"), str(view))
    try:
        mount("-o", "remount,bind,ro", str(view))
        server = Server(f"sqlite:///{view / 'threadline.db'}", tmp_path)
        try:
            down = ready(server)
            assert down.status_code == 503
            assert "read-only" in down.json()["error"]
            writers = Writers(server.base_url, target.token, target.conversation_id)
            with writers:
                wait_until(lambda: writers.tally.refused >= 5, 30, "writes refused: read-only")
                mount("-o", "remount,bind,rw", str(view))
                wait_until(lambda: acknowledged_count(writers.tally) >= 20, 30, "recovery")
                wait_until(lambda: ready(server).status_code == 200, 15, "ready again")
            writers.settle()
            assert writers.tally.bad == []
            assert set(writers.tally.statuses) <= {200, 503}
            assert_writes_kept(target, writers.tally)
        finally:
            server.stop()
    finally:
        mount(str(view), tool="umount", check=False)


@pytest.fixture(params=["sqlite", "postgres"])
def any_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Target, int]:
    if request.param == "sqlite":
        return prepare(f"sqlite:///{tmp_path / 'threadline.db'}"), 1
    target: Target = request.getfixturevalue("pg_target")
    return target, 2


def test_kill_9_under_load_loses_no_acknowledged_write(
    any_target: tuple[Target, int], tmp_path: Path
) -> None:
    target, workers = any_target
    server = Server(target.url, tmp_path, workers=workers)
    try:
        with Writers(server.base_url, target.token, target.conversation_id) as writers:
            for round_ in range(2):
                wait_until(
                    lambda n=round_: acknowledged_count(writers.tally) >= 30 * (n + 1),
                    60,
                    "writes before the kill",
                )
                writers.server_down = True
                server.kill9()
                time.sleep(0.3)
                server.start()
                time.sleep(0.5)
                writers.server_down = False
            before = acknowledged_count(writers.tally)
            wait_until(lambda: acknowledged_count(writers.tally) >= before + 20, 60, "after")
        writers.settle()
        tally = writers.tally
        assert tally.bad == []
        # Retrying acknowledged writes with their random_id creates nothing new.
        with writers.client() as client:
            for random_id in sorted(tally.acknowledged)[-20:]:
                assert writers.send(client, random_id)
        assert tally.bad == []
        assert_writes_kept(target, tally)
    finally:
        server.stop()


def test_cut_redis_is_reported_and_requests_are_answered(
    pg_target: Target, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    redis = PrivateRedis()
    proxy = TcpProxy(redis.port)
    server = Server(pg_target.url, tmp_path, THREADLINE_REDIS_URL=redis.url(proxy.port))
    try:
        assert ready(server).status_code == 200
        with Writers(server.base_url, pg_target.token, pg_target.conversation_id) as writers:
            wait_until(lambda: acknowledged_count(writers.tally) >= 20, 30, "writes before")
            proxy.cut()
            down = ready(server)
            assert down.status_code == 503
            assert down.json()["checks"]["database"] == "ok"
            assert down.json()["checks"]["redis"] != "ok"
            time.sleep(2)
            proxy.restore()
            wait_until(lambda: ready(server).status_code == 200, 15, "ready again")
            before = acknowledged_count(writers.tally)
            wait_until(lambda: acknowledged_count(writers.tally) >= before + 20, 30, "after")
        writers.settle()
        assert writers.tally.bad == []
        assert set(writers.tally.statuses) <= {200, 503}
        assert_writes_kept(pg_target, writers.tally)
    finally:
        server.stop()
        proxy.close()
        redis.close()
