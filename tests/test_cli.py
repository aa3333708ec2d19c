"""The `threadline` command, run in-process through typer's runner, on both databases."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import pytest
from argon2 import PasswordHasher
from click.testing import Result
from sqlalchemy import select, text
from typer.testing import CliRunner

from threadline import __version__, demo_signin
from threadline.apps import service as apps
from threadline.cli import cli
from threadline.conversations import service
from threadline.conversations.repository import ConversationRepository
from threadline.core import events as ev
from threadline.core.access import Role
from threadline.core.enums import AuthorKind, ConversationType, PartType
from threadline.core.model import Author, ConversationState, Part
from threadline.db.engine import Database
from threadline.db.schema import admins, conversation_parts
from threadline.db.schema import apps as app_table
from threadline.demo import DEMO_OPERATOR_EMAIL, SCENARIOS

T = TypeVar("T")
UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/test"

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(cli, list(args))


def with_db(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def assert_one_red_line(result: Result) -> str:
    """A failure: exit status 1 and exactly one line of explanation, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_init_creates_then_migrates_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'threadline.db'}"
    for _ in range(2):
        result = invoke("init", "--database-url", url)
        assert result.exit_code == 0, result.output
        assert "Database ready" in result.stdout
    assert with_db(url, lambda db: _count_conversations(db)) == 0


async def _count_conversations(db: Database) -> int:
    async with db.read() as conn:
        return await ConversationRepository(conn).count()


def test_init_on_a_migrated_database(db_url: str) -> None:
    result = invoke("init", "--database-url", db_url)
    assert result.exit_code == 0, result.output


def test_database_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "from-env.db"
    monkeypatch.setenv("THREADLINE_DATABASE_URL", f"sqlite:///{path}")
    assert invoke("init").exit_code == 0
    assert path.exists()


def test_app_create_prints_one_json_line_with_a_working_token(db_url: str) -> None:
    result = invoke("app", "create", "Acme", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"app", "token"}
    assert isinstance(created["app"], int)
    record = with_db(db_url, lambda db: apps.authenticate(db, created["token"]))
    assert record is not None
    assert record.app_id == created["app"]


def test_app_create_refuses_an_empty_name(db_url: str) -> None:
    line = assert_one_red_line(invoke("app", "create", "  ", "--database-url", db_url))
    assert "name" in line


def test_app_create_on_an_empty_database_says_to_run_init(tmp_path: Path) -> None:
    line = assert_one_red_line(
        invoke("app", "create", "X", "--database-url", f"sqlite:///{tmp_path}/e.db")
    )
    assert "threadline init" in line


@pytest.mark.parametrize(
    "args",
    [
        ["init"],
        ["check"],
        ["app", "create", "Acme"],
        ["demo", "--conversations", "3"],
    ],
)
def test_unreachable_database_is_one_red_line(args: list[str]) -> None:
    line = assert_one_red_line(invoke(*args, "--database-url", UNREACHABLE_POSTGRES))
    assert "cannot reach the database" in line
    assert "127.0.0.1:1" in line


def test_invalid_setting_is_one_red_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_PORT", "eighty")
    line = assert_one_red_line(invoke("init"))
    assert "THREADLINE_PORT" in line


def test_unsupported_database_url_is_one_red_line() -> None:
    line = assert_one_red_line(invoke("check", "--database-url", "mysql://localhost/x"))
    assert "unsupported database URL" in line


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    result = invoke("serve", "--workers", "2", "--database-url", f"sqlite:///{tmp_path}/s.db")
    line = assert_one_red_line(result)
    assert "SQLite" in line
    assert "--workers 1" in line


async def _demo_data(db: Database) -> tuple[list[ConversationState], dict[int, list[Part]]]:
    async with db.read() as conn:
        repo = ConversationRepository(conn)
        states = [s async for batch in repo.iter_states() for s in batch]
        parts = await repo.parts_of_many([s.id for s in states])
    return states, parts


async def _operator_hash(db: Database, app_id: int) -> str:
    query = select(admins.c.password_hash).where(
        admins.c.app_id == app_id, admins.c.email == DEMO_OPERATOR_EMAIL
    )
    async with db.read() as conn:
        return str((await conn.execute(query)).scalar_one())


def test_demo_fills_every_state_and_checks_clean(db_url: str) -> None:
    count = len(SCENARIOS) + 5
    result = invoke(
        "demo", "-n", str(count), "--seed", "7", "--password", "s3cret-pass", "--json",
        "--database-url", db_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip())
    assert summary["conversations"] == count
    assert summary["email"] == DEMO_OPERATOR_EMAIL
    assert summary["password"] == "s3cret-pass"
    record = with_db(db_url, lambda db: apps.authenticate(db, summary["token"]))
    assert record is not None
    assert record.app_id == summary["app"]
    assert PasswordHasher().verify(
        with_db(db_url, lambda db: _operator_hash(db, summary["app"])), "s3cret-pass"
    )

    states, parts = with_db(db_url, _demo_data)
    assert len(states) == count
    assert {s.app_id for s in states} == {summary["app"]}
    now = datetime.now(UTC)
    live = [s for s in states if s.removed is None]
    in_inbox = [s for s in live if s.replied]

    def part_types(s: ConversationState) -> set[PartType]:
        return {p.type for p in parts[s.id]}

    counts = {
        "open": sum(not s.closed and not s.is_delayed(now) for s in in_inbox),
        "closed": sum(s.closed for s in live),
        "delayed": sum(s.is_delayed(now) for s in live),
        "delay passed": sum(s.delayed_until is not None and not s.is_delayed(now) for s in live),
        "assigned": sum(s.assignee_id is not None for s in live),
        "unassigned": sum(s.assignee_id is None for s in in_inbox),
        "tagged": sum(bool(s.tags) for s in live),
        "bot-managed": sum(s.assistant_type is not None for s in live),
        "handed off": sum(
            any(p.type is PartType.SERVICE for p in parts[s.id]) and s.assistant_type is None
            for s in live
        ),
        "removed": sum(s.removed is not None for s in states),
        "message-started": sum(s.message_id is not None for s in states),
        "user-started": sum(s.message_id is None for s in states),
        "messenger": sum(s.external_service is not None for s in states),
        "unread by operators": sum(s.admin_unread_count > 0 for s in live),
        "read by the user": sum(
            any(p.read for p in parts[s.id] if p.type is PartType.REPLY_ADMIN) for s in live
        ),
        "with notes": sum(PartType.NOTE in part_types(s) for s in live),
        "with articles": sum(PartType.ARTICLE in part_types(s) for s in live),
        "reopened": sum(PartType.OPENED in part_types(s) for s in live),
        "moved channel": sum(PartType.CHANNEL_CHANGED in part_types(s) for s in live),
    }
    assert [state for state, n in counts.items() if n == 0] == [], counts
    assert {s.type for s in states if s.message_id is not None} == set(ConversationType)
    assert len({s.status for s in states if s.message_id is not None}) >= 3
    # Removed conversations keep their counters but lose every body.
    removed = [s for s in states if s.removed is not None]
    assert all(p.body == "" for s in removed for p in parts[s.id])
    assert all(s.parts_count == len(parts[s.id]) for s in removed)
    # Time runs forward inside each conversation, and everything happened in the past.
    for s in states:
        times = [p.created for p in parts[s.id]]
        assert times == sorted(times)
        assert all(t < now for t in times)

    result = invoke("check", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert "no drift" in result.stdout


async def _conversation_with_replies(db: Database) -> tuple[int, int]:
    app = await apps.create_app(db, "Drift")
    admin_id = await apps.create_admin(db, app.app_id, "Ann")
    user_id = await apps.create_user(db, app.app_id, site_user_id="u-1")
    started = await service.start_by_user(db, app.app_id, user_id, ev.UserReply(body="Hello"))
    answer = ev.AdminReply(author=Author(AuthorKind.ADMIN, admin_id), body="Hi!")
    outcome = await service.perform(db, app.app_id, started.state.id, answer)
    return outcome.state.id, outcome.state.parts_count


async def _corrupt(db: Database, conversation_id: int) -> None:
    async with db.write() as conn:
        await conn.execute(
            text("UPDATE conversations SET parts_count = parts_count + 5 WHERE id = :id"),
            {"id": conversation_id},
        )


async def _parts_count(db: Database, conversation_id: int) -> int:
    async with db.read() as conn:
        query = select(conversation_parts.c.id).where(
            conversation_parts.c.conversation_id == conversation_id
        )
        return len((await conn.execute(query)).all())


def test_check_reports_drift_and_fix_repairs_it(db_url: str) -> None:
    conversation_id, parts = with_db(db_url, _conversation_with_replies)
    assert invoke("check", "--database-url", db_url).exit_code == 0
    with_db(db_url, lambda db: _corrupt(db, conversation_id))

    result = invoke("check", "--database-url", db_url)
    assert result.exit_code == 1
    expected = f"conversation {conversation_id}: parts_count stored={parts + 5} computed={parts}"
    assert expected in result.stdout
    assert "1 drifted fields in 1 conversations" in result.stderr
    assert "Traceback" not in result.output

    result = invoke("check", "--fix", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert expected in result.stdout
    assert "all repaired" in result.stdout

    result = invoke("check", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert "no drift" in result.stdout
    state = with_db(db_url, lambda db: _state(db, conversation_id))
    assert (
        state.parts_count == parts == with_db(db_url, lambda db: _parts_count(db, conversation_id))
    )


async def _state(db: Database, conversation_id: int) -> ConversationState:
    async with db.read() as conn:
        state = await ConversationRepository(conn).get_any(conversation_id)
    assert state is not None
    return state


def test_installed_command_runs(tmp_path: Path) -> None:
    """The `threadline` entry point itself, as a newcomer's shell would run it."""
    command = Path(sys.executable).parent / "threadline"
    url = f"sqlite:///{tmp_path / 'cmd.db'}"
    init = subprocess.run(
        [str(command), "init", "--database-url", url], capture_output=True, text=True, check=False
    )
    assert init.returncode == 0, init.stderr
    created = subprocess.run(
        [str(command), "app", "create", "Acme", "--database-url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["app"] == 1
    failed = subprocess.run(
        [str(command), "check", "--database-url", UNREACHABLE_POSTGRES],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1
    assert failed.stderr.startswith("error: cannot reach the database")


def test_version_prints_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"threadline {__version__}"
    assert __version__ == metadata.version("threadline")


async def _app_ids(db: Database) -> list[int]:
    async with db.read() as conn:
        return list((await conn.execute(select(app_table.c.id).order_by(app_table.c.id))).scalars())


def _demo_json(*args: str) -> dict[str, object]:
    result = invoke("demo", "-n", "3", "--seed", "1", "--json", *args)
    assert result.exit_code == 0, result.output
    found: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_demo_reuse_keeps_one_app_and_its_sign_in(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `scripts/start` runs each time: the second run adds no app and prints the same
    sign-in, saved in a file only its owner can read; --fresh starts over."""
    data = tmp_path / "data"
    monkeypatch.setenv("THREADLINE_DATA_DIR", str(data))
    monkeypatch.setenv("THREADLINE_DATABASE_URL", db_url)
    first = _demo_json("--reuse")
    assert _demo_json("--reuse") == first
    assert with_db(db_url, _app_ids) == [first["app"]]
    saved = data / demo_signin.SIGNIN_FILE
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["password"] == first["password"]

    # Without --reuse, `threadline demo` adds an app each time, as before.
    other = _demo_json()
    assert with_db(db_url, _app_ids) == [first["app"], other["app"]]
    assert _demo_json("--reuse") == first

    fresh = _demo_json("--reuse", "--fresh")
    assert fresh["token"] != first["token"]
    assert fresh["password"] != first["password"]
    assert json.loads(saved.read_text())["token"] == fresh["token"]
    if db_url.startswith("sqlite"):  # the database itself starts over
        assert with_db(db_url, _app_ids) == [fresh["app"]]
    else:  # other databases are never deleted: one more app
        assert with_db(db_url, _app_ids) == [first["app"], other["app"], fresh["app"]]
    assert _demo_json("--reuse") == fresh


def test_demo_reuse_makes_a_new_app_when_the_saved_one_is_gone(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("THREADLINE_DATA_DIR", str(data))
    monkeypatch.setenv("THREADLINE_DATABASE_URL", db_url)
    first = _demo_json("--reuse")
    # A sign-in saved for another database is not reused against this one.
    saved = json.loads((data / demo_signin.SIGNIN_FILE).read_text())
    (data / demo_signin.SIGNIN_FILE).write_text(json.dumps({**saved, "database": "elsewhere"}))
    second = _demo_json("--reuse")
    assert second["app"] != first["app"]
    # Nor one whose token no longer works.
    (data / demo_signin.SIGNIN_FILE).write_text(json.dumps({**saved, "token": "tl_gone"}))
    third = _demo_json("--reuse")
    assert third["app"] not in (first["app"], second["app"])
    assert _demo_json("--reuse") == third


def test_token_create_issues_a_working_owner_token_for_an_existing_app(db_url: str) -> None:
    app = json.loads(invoke("app", "create", "Acme", "--database-url", db_url).stdout)["app"]
    result = invoke(
        "token",
        "create",
        str(app),
        "--scopes",
        "conversations-read,admin",
        "--database-url",
        db_url,
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"app", "token_id", "token"}
    record = with_db(db_url, lambda db: apps.authenticate(db, created["token"]))
    assert record is not None
    assert (record.app_id, record.id) == (app, created["token_id"])
    assert record.scopes == {"conversations-read", "admin"}
    assert record.role is Role.OWNER
    assert record.issuer_admin_id is None
    line = assert_one_red_line(invoke("token", "create", "999", "--database-url", db_url))
    assert "app 999 not found" in line
    line = assert_one_red_line(
        invoke("token", "create", str(app), "--scopes", "root", "--database-url", db_url)
    )
    assert "scopes" in line


def test_admin_create_adds_an_owner_who_can_sign_in(db_url: str) -> None:
    app = json.loads(invoke("app", "create", "Acme", "--database-url", db_url).stdout)["app"]
    args = ["admin", "create", str(app), "--email", "Boss@Acme.test", "--name", "Boss"]
    result = invoke(*args, "--role", "owner", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    made = json.loads(line)
    assert set(made) == {"app", "admin", "role", "email", "password"}
    assert (made["app"], made["role"], made["email"]) == (app, "owner", "boss@acme.test")

    async def check(db: Database) -> tuple[str, bool]:
        async with db.read() as conn:
            row = (
                await conn.execute(
                    select(admins.c.role, admins.c.password_hash).where(
                        admins.c.id == made["admin"]
                    )
                )
            ).one()
        return row.role, PasswordHasher().verify(row.password_hash, made["password"])

    assert with_db(db_url, check) == ("owner", True)
    # With a password of one's own, none is printed; the e-mail stays unique in the app.
    result = invoke(*args[:4], "x@acme.test", "--name", "X", "--password", "s3cret-enough",
                    "--database-url", db_url)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "password" not in json.loads(result.stdout)
    assert json.loads(result.stdout)["role"] == "operator"
    assert "email" in assert_one_red_line(invoke(*args, "--database-url", db_url))
    assert "role" in assert_one_red_line(invoke(*args, "--role", "king", "--database-url", db_url))
    assert "app 999" in assert_one_red_line(
        invoke(
            "admin", "create", "999", "--email", "a@b.c", "--name", "A", "--database-url", db_url
        )
    )
