"""The `threadline` command: set up the database, create apps, load demo data, serve, check.

Every command reads THREADLINE_DATABASE_URL (see `Settings`) unless `--database-url` is
given. A failure prints one red line and exits with status 1; set THREADLINE_DEBUG=1 to get
the traceback instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
import webbrowser
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from threadline import demo as demo_data
from threadline.apps import service as apps
from threadline.conversations import service as conversations
from threadline.core.errors import DomainError
from threadline.core.recompute import Drift
from threadline.db.engine import Database, async_url
from threadline.db.migrate import upgrade
from threadline.inbox.check import NOUNS, IndexDrift
from threadline.settings import Settings
from threadline.ui import service as ui_service

T = TypeVar("T")

INBOX_PATH = "/"
# How long `serve --open` waits for the server to listen before giving up on the browser.
BROWSER_WAIT_SECONDS = 30.0

cli = typer.Typer(
    name="threadline",
    help="Threadline: a self-hosted customer-messaging conversation engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app_commands = typer.Typer(help="Manage apps (workspaces).", no_args_is_help=True)
cli.add_typer(app_commands, name="app")

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (sqlite:///path or postgresql://...); "
        "overrides THREADLINE_DATABASE_URL.",
        show_default=False,
    ),
]


class Failure(Exception):
    """A failure already phrased for the person at the terminal."""


def _settings(database_url: str | None) -> Settings:
    with reported():
        settings = Settings()
    if database_url:
        settings.database_url = database_url
    return settings


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given, it holds no parsed password
        return url


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def describe(exc: BaseException, url: str | None = None) -> str:
    """One line saying what went wrong, without a traceback."""
    where = f" ({_safe_url(url)})" if url else ""
    if isinstance(exc, ValidationError):  # settings from the environment
        problems = (
            f"THREADLINE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid setting: {'; '.join(problems)}"
    if isinstance(exc, Failure | DomainError | ValueError):
        return str(exc)
    if isinstance(exc, OSError):  # connection refused, unknown host, timeout
        return f"cannot reach the database{where}: {_first_line(str(exc)) or type(exc).__name__}"
    if isinstance(exc, DBAPIError):
        detail = _first_line(str(exc.orig)) or type(exc.orig).__name__
        if "no such table" in detail or ("does not exist" in detail and "relation" in detail):
            return f"the database{where} is not set up: {detail}; run `threadline init` first"
        return f"database error{where}: {detail}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error{where}: {_first_line(str(exc))}"
    return f"{type(exc).__name__}: {_first_line(str(exc))}"


@contextmanager
def reported(url: str | None = None) -> Iterator[None]:
    """Turn any failure inside the block into one red line and exit status 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("THREADLINE_DEBUG"):
            raise
        err.print(Text(f"error: {describe(exc, url)}", style="bold red"))
        raise typer.Exit(1) from None


def _run(work: Callable[[Database], Awaitable[T]], url: str) -> T:
    """Run `work` with one `Database`, closed afterwards."""

    async def main() -> T:
        db = Database(url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


@cli.command()
def init(database_url: DatabaseUrl = None) -> None:
    """Create the database or bring it to the latest schema (safe to run again)."""
    url = _settings(database_url).database_url
    with reported(url):
        upgrade(url)
    out.print(f"Database ready: {_safe_url(url)}")


@app_commands.command("create")
def app_create(
    name: Annotated[str, typer.Argument(help="The app's name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create an app; prints {"app": id, "token": "..."} as one line of JSON."""
    url = _settings(database_url).database_url
    with reported(url):
        created = _run(lambda db: apps.create_app(db, name), url)
    typer.echo(json.dumps({"app": created.app_id, "token": created.token}))


password_commands = typer.Typer(help="Operators' passwords.", no_args_is_help=True)
cli.add_typer(password_commands, name="password")


@password_commands.command("reset")
def password_reset(
    app_id: Annotated[int, typer.Argument(help="The app's id.")],
    email: Annotated[str, typer.Argument(help="The admin's e-mail.")],
    base_url: Annotated[
        str, typer.Option(help="Where the inbox is served, as operators reach it.")
    ] = "http://127.0.0.1:8000",
    hours: Annotated[
        float, typer.Option(min=0.01, max=720, help="How long the link works.")
    ] = ui_service.DEFAULT_RESET_HOURS,
    database_url: DatabaseUrl = None,
) -> None:
    """A one-time link for the admin to set a new password; prints {"url", "expires"}."""
    url = _settings(database_url).database_url
    lifetime = timedelta(hours=hours)
    with reported(url):
        token, expires = _run(
            lambda db: ui_service.issue_password_reset(db, app_id, email, lifetime), url
        )
    link = f"{base_url.rstrip('/')}/#reset={token}"
    typer.echo(json.dumps({"url": link, "expires": int(expires.timestamp())}))


def _progress_bar(*, disable: bool, transient: bool = False) -> Progress:
    """The long commands' progress bar, on standard error: what, how far, how long."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=disable,
        transient=transient,
    )


@cli.command()
def demo(
    conversations_count: Annotated[
        int,
        typer.Option("--conversations", "-n", min=0, help="How many conversations to create."),
    ] = demo_data.DEFAULT_CONVERSATIONS,
    password: Annotated[
        str | None,
        typer.Option(help="The operator's password (default: a random one, printed)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed, for the same data again.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as one line of JSON.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Set up the database and fill a new demo app with users and conversations."""
    url = _settings(database_url).database_url
    with reported(url):
        upgrade(url)
        progress = _progress_bar(disable=as_json)
        with progress:
            task = progress.add_task("Demo conversations", total=conversations_count)
            result = _run(
                lambda db: demo_data.fill(
                    db,
                    conversations=conversations_count,
                    password=password,
                    seed=seed,
                    on_progress=lambda: progress.advance(task),
                ),
                url,
            )
    if as_json:
        summary = {
            "app": result.app_id,
            "token": result.token,
            "email": result.operator_email,
            "password": result.operator_password,
            "conversations": result.conversations,
        }
        typer.echo(json.dumps(summary))
        return
    out.print(f"Demo app:      {result.app_id} ({result.conversations} conversations)")
    out.print(f"API token:     {result.token}")
    out.print(f"Operator:      {result.operator_email}")
    out.print(f"Password:      {result.operator_password}")


def _browser_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104  (compared, not bound)


def _open_when_listening(url: str, host: str, port: int) -> None:
    """Open `url` in a browser as soon as the server accepts connections."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        # No graphical session: a console browser would take over the server's terminal.
        out.print(f"No display found; open {url} in your browser.")
        return

    def wait_and_open() -> None:
        deadline = time.monotonic() + BROWSER_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=1):
                    webbrowser.open(url)
                    return
            except OSError:
                time.sleep(0.2)

    threading.Thread(target=wait_and_open, name="open-browser", daemon=True).start()


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the inbox in a browser.")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the API and the inbox with uvicorn."""
    import uvicorn

    settings = _settings(database_url)
    host = host or settings.host
    port = port or settings.port
    with reported(settings.database_url):
        if workers > 1 and async_url(settings.database_url).get_backend_name() == "sqlite":
            raise Failure(
                "SQLite serves from one process: use --workers 1, or PostgreSQL for more workers"
            )
    # The app factory (and every worker process) reads its settings from the environment.
    os.environ["THREADLINE_DATABASE_URL"] = settings.database_url
    url = f"http://{_browser_host(host)}:{port}{INBOX_PATH}"
    out.print(f"Threadline on {url} ({_safe_url(settings.database_url)})")
    if open_browser:
        _open_when_listening(url, _browser_host(host), port)
    uvicorn.run(
        "threadline.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
    )


@cli.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Deliver webhooks, apart from the servers (run those with THREADLINE_WEBHOOK_WORKER=off).

    Runs until interrupted. On PostgreSQL any number may run: one delivers at a time.
    """
    from threadline.webhooks.worker import run_worker

    settings = _settings(database_url)
    out.print(f"Webhook worker on {_safe_url(settings.database_url)}")
    with reported(settings.database_url):
        asyncio.run(run_worker(settings.database_url, settings.redis_url))


def _show(drift: Drift | IndexDrift) -> str:
    if isinstance(drift, IndexDrift):
        return drift.describe()
    return (
        f"conversation {drift.conversation_id}: {drift.field} "
        f"stored={drift.stored!r} computed={drift.computed!r}"
    )


def _summary(found: list[Drift | IndexDrift]) -> str:
    fields = [d for d in found if isinstance(d, Drift)]
    pieces = []
    if fields:
        affected = len({d.conversation_id for d in fields})
        pieces.append(f"{len(fields)} drifted fields in {affected} conversations")
    per_table = Counter(d.table for d in found if isinstance(d, IndexDrift))
    pieces += [f"{per_table[t]} drifted {noun}" for t, noun in NOUNS.items() if per_table[t]]
    return "check: " + ", ".join(pieces)


@cli.command()
def check(
    fix: Annotated[bool, typer.Option("--fix", help="Repair the drift found.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Recompute every conversation's derived fields from its parts, and the inbox's tag
    rows, count cells and word list from the conversations, and report drift.

    Exit status: 0 when nothing drifted (or, with --fix, everything was repaired),
    1 when drift was found and is still there.
    """
    url = _settings(database_url).database_url

    bar = _progress_bar(disable=not err.is_terminal, transient=True)

    class Shown:
        """The check's progress on the bar: conversations, then the closing step."""

        def __init__(self) -> None:
            self.task = bar.add_task("Conversations", total=None)

        def start(self, total: int) -> None:
            bar.reset(self.task, total=total, description="Conversations")

        def advance(self, count: int) -> None:
            bar.advance(self.task, count)

        def step(self, description: str) -> None:
            bar.update(self.task, description=description)

    async def work(db: Database) -> tuple[list[Drift | IndexDrift], list[Drift | IndexDrift]]:
        found = await conversations.check(db, fix=fix, progress=Shown())
        left = await conversations.check(db, progress=Shown()) if fix and found else found
        return found, left

    with reported(url), bar:
        found, left = _run(work, url)
    for drift in found:
        out.print(_show(drift), markup=False)
    if not found:
        out.print(Text("check: no drift found", style="green"))
        return
    summary = _summary(found)
    if fix and not left:
        out.print(Text(f"{summary}, all repaired", style="yellow"))
        return
    if fix:
        err.print(Text(f"{summary}; {len(left)} still drifted after repair", style="bold red"))
    else:
        err.print(Text(f"{summary}; run `threadline check --fix` to repair", style="bold red"))
    raise typer.Exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
