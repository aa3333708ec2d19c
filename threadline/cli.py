"""The `threadline` command: set up the database, create apps, load demo data, serve, check.

Every command reads THREADLINE_DATABASE_URL (see `Settings`) unless `--database-url` is
given. A failure prints one red line and exits with status 1; set THREADLINE_DEBUG=1 to get
the traceback instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import sys
import threading
import time
import webbrowser
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from threadline import __version__, demo_signin
from threadline import demo as demo_data
from threadline.api.config import ApiSettings
from threadline.apps import manage
from threadline.apps import service as apps
from threadline.conversations import service as conversations
from threadline.core.access import Role, parse_role
from threadline.core.errors import DomainError
from threadline.core.recompute import Drift
from threadline.db import backup as backups
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
token_commands = typer.Typer(help="Issue API tokens (regain access).", no_args_is_help=True)
cli.add_typer(token_commands, name="token")
admin_commands = typer.Typer(
    help="Add admins (regain access), reset their two-step sign-in.", no_args_is_help=True
)
cli.add_typer(admin_commands, name="admin")

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


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"threadline {__version__}")
        raise typer.Exit()


@cli.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Threadline: a self-hosted customer-messaging conversation engine."""


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
    if isinstance(exc, Failure | DomainError | ValueError | backups.BackupError):
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
        db = Database(url, sqlite_busy_timeout=Settings().sqlite_busy_timeout)
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


@token_commands.command("create")
def token_create(
    app: Annotated[int, typer.Argument(help="The app's id.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated scopes; every scope by default.")
    ] = ",".join(apps.ALL_SCOPES),
    name: Annotated[str, typer.Option(help="What the token is for.")] = "command line",
    database_url: DatabaseUrl = None,
) -> None:
    """Issue an API token for an existing app; it acts as an owner (whoever runs the
    server owns the app). Prints {"app", "token_id", "token"} as one line of JSON."""
    url = _settings(database_url).database_url
    chosen = [s.strip() for s in scopes.split(",") if s.strip()]
    with reported(url):
        token_id, token = _run(lambda db: manage.cli_issue_token(db, app, name, chosen), url)
    typer.echo(json.dumps({"app": app, "token_id": token_id, "token": token}))


@admin_commands.command("create")
def admin_create(
    app: Annotated[int, typer.Argument(help="The app's id.")],
    email: Annotated[str, typer.Option(help="The admin's sign-in e-mail (unique in the app).")],
    name: Annotated[str, typer.Option(help="Shown to users next to the admin's replies.")],
    role: Annotated[
        str, typer.Option(help="owner, administrator or operator.")
    ] = Role.OPERATOR.value,
    password: Annotated[
        str | None,
        typer.Option(help="The inbox password; a random one is made and printed if absent."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add an admin with an inbox login to an existing app. Prints {"app", "admin", "role",
    "email"} as one line of JSON, with "password" when it was made here."""
    url = _settings(database_url).database_url
    made = password is None
    secret = password if password is not None else secrets.token_urlsafe(12)
    with reported(url):
        chosen = parse_role(role)
        admin_id = _run(
            lambda db: manage.cli_create_admin(db, app, name, email, secret, chosen), url
        )
    result: dict[str, object] = {"app": app, "admin": admin_id, "role": chosen.value}
    result["email"] = email.strip().lower()
    if made:
        result["password"] = secret
    typer.echo(json.dumps(result))


@admin_commands.command("reset-2fa")
def admin_reset_second_factor(
    app: Annotated[int, typer.Argument(help="The app's id.")],
    email: Annotated[str, typer.Argument(help="The admin's e-mail.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Turn an admin's two-step sign-in off (a lost authenticator app): they sign in with
    their password alone again. Prints {"app", "admin"} as one line of JSON."""
    url = _settings(database_url).database_url
    with reported(url):
        admin_id = _run(lambda db: manage.cli_reset_second_factor(db, app, email), url)
    typer.echo(json.dumps({"app": app, "admin": admin_id}))


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


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return None if parsed.database == ":memory:" else Path(parsed.database)


def _start_over(url: str, data_dir: Path) -> None:
    """Remove the demo's sign-in and, on SQLite, the database and its files."""
    demo_signin.forget(data_dir)
    database = _sqlite_file(url)
    if database is None:
        out.print("Starting over: a new demo app (other databases are never deleted)")
        return
    for path in (database, *(Path(f"{database}{end}") for end in ("-wal", "-shm", "-journal"))):
        path.unlink(missing_ok=True)
    shutil.rmtree(data_dir / "attachments", ignore_errors=True)
    out.print(f"Starting over: removed {database}")


def _print_signin(signin: demo_signin.DemoSignin, *, as_json: bool) -> None:
    if as_json:
        summary = {
            "app": signin.app,
            "token": signin.token,
            "email": signin.email,
            "password": signin.password,
            "conversations": signin.conversations,
        }
        typer.echo(json.dumps(summary))
        return
    out.print(f"Demo app:      {signin.app} ({signin.conversations} conversations)")
    out.print(f"API token:     {signin.token}")
    out.print(f"Operator:      {signin.email}")
    out.print(f"Password:      {signin.password}")


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
    reuse: Annotated[
        bool,
        typer.Option(
            "--reuse",
            help="Keep the demo app saved in the data directory by an earlier --reuse run, "
            "if its database still has it, instead of adding another one.",
        ),
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start over: forget the saved demo app and, on SQLite, delete the database.",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Set up the database and fill a new demo app with users and conversations."""
    url = _settings(database_url).database_url
    data_dir = ApiSettings().data_dir
    with reported(url):
        if fresh:
            _start_over(url, data_dir)
        upgrade(url)
        saved = demo_signin.load(data_dir) if reuse else None
        if (
            saved is not None
            and saved.database == _safe_url(url)
            and _run(lambda db: apps.authenticate(db, saved.token), url) is not None
        ):
            _print_signin(saved, as_json=as_json)
            return
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
        signin = demo_signin.DemoSignin(
            database=_safe_url(url),
            app=result.app_id,
            token=result.token,
            email=result.operator_email,
            password=result.operator_password,
            conversations=result.conversations,
        )
        if reuse:
            demo_signin.save(data_dir, signin)
    _print_signin(signin, as_json=as_json)


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


# How long `serve --workers N` waits for a worker process to answer (see `serve`).
WORKER_START_SECONDS = 60


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

    from threadline.logs import logging_config

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
        # Structured records (JSON when stderr is no terminal), in every worker process.
        log_config=logging_config(),
        # A failed request is logged (one line, threadline.web.failures); a line for every
        # answered request only when asked for.
        access_log=settings.access_log,
        # A worker process answers its supervisor's pings once it has imported the app; on
        # a busy machine that takes longer than uvicorn's 5 s, and a worker killed for it
        # is started again, and again (none ever serving).
        timeout_worker_healthcheck=WORKER_START_SECONDS,
    )


@cli.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Run the outbox apart from the servers (run those with THREADLINE_WEBHOOK_WORKER=off):
    deliver webhooks, and send operators' e-mail replies when a relay is configured.

    Runs until interrupted. On PostgreSQL any number may run: one delivers at a time.
    """
    import logging.config

    from threadline.logs import logging_config
    from threadline.webhooks.worker import run_worker

    logging.config.dictConfig(logging_config())
    settings = _settings(database_url)
    out.print(f"Outbox worker on {_safe_url(settings.database_url)}")
    with reported(settings.database_url):
        asyncio.run(run_worker(settings.database_url, settings.redis_url))


@cli.command()
def smtp(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Receive e-mail for the apps' addresses by SMTP (THREADLINE_SMTP_HOST and
    THREADLINE_SMTP_PORT, default port 2525), until interrupted."""
    import logging.config

    from threadline.channels.email.inbound import MailSettings
    from threadline.channels.email.smtp import run_listener
    from threadline.logs import logging_config

    logging.config.dictConfig(logging_config())
    settings = _settings(database_url)
    mail = MailSettings()
    host = host or mail.smtp_host
    port = port or mail.smtp_port or 2525
    out.print(f"SMTP on {host}:{port} for @{mail.mail_domain} ({_safe_url(settings.database_url)})")
    with reported(settings.database_url), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_listener(settings.database_url, host, port))


@cli.command()
def imap(
    app: Annotated[int | None, typer.Option(help="The app the mail goes to.")] = None,
    once: Annotated[bool, typer.Option(help="Poll once, print what came, and stop.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Take the mail of an existing mailbox by IMAP into an app (THREADLINE_IMAP_HOST,
    THREADLINE_IMAP_USER, THREADLINE_IMAP_PASSWORD, THREADLINE_IMAP_APP, ...), every
    THREADLINE_IMAP_POLL_SECONDS until interrupted."""
    import logging.config

    from threadline.channels.email import imap as imap_poller
    from threadline.logs import logging_config

    logging.config.dictConfig(logging_config())
    settings = _settings(database_url)
    imap_settings = imap_poller.ImapSettings()
    if app is not None:
        imap_settings = imap_settings.model_copy(update={"imap_app": app})
    if not imap_settings.imap_host or imap_settings.imap_app is None:
        out.print("[red]error:[/red] set THREADLINE_IMAP_HOST and THREADLINE_IMAP_APP (or --app)")
        raise typer.Exit(1)
    where = f"{imap_settings.imap_host}:{imap_settings.imap_port}/{imap_settings.imap_mailbox}"
    with reported(settings.database_url), contextlib.suppress(KeyboardInterrupt):
        if once:
            polled = asyncio.run(imap_poller.run_once(settings.database_url, imap_settings))
            out.print(
                json.dumps(
                    {
                        "received": [r.outcome for r in polled.received],
                        "unreadable": polled.refused,
                        "left": polled.left,
                    }
                )
            )
            return
        out.print(f"IMAP {where} into app {imap_settings.imap_app}")
        asyncio.run(imap_poller.run(settings.database_url, imap_settings))


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


def _copy_bar(description: str) -> tuple[Progress, Callable[[int, int], None]]:
    """A progress bar for a backup or restore, and the callback that moves it (pages)."""
    bar = _progress_bar(disable=not err.is_terminal, transient=True)
    task = bar.add_task(description, total=None)

    def moved(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, moved


@cli.command()
def backup(
    path: Annotated[Path, typer.Argument(help="The backup file to write (a new file).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Write a consistent backup of the database while the server runs.

    SQLite: the online backup API (one snapshot, writers carry on), a SQLite file.
    PostgreSQL: pg_dump's custom format (the PostgreSQL client programs must be installed).
    """
    url = _settings(database_url).database_url
    bar, moved = _copy_bar("Backup")
    with reported(url), bar:
        backups.backup(url, path, moved)
    out.print(f"Backup written: {path}")


@cli.command()
def restore(
    path: Annotated[Path, typer.Argument(help="A file written by `threadline backup`.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Replace the database's content with a backup's, then migrate it to the current schema.

    Stop the servers and workers first. SQLite: the file is checked, then copied into the
    database. PostgreSQL: pg_restore --clean, in one transaction.
    """
    url = _settings(database_url).database_url
    bar, moved = _copy_bar("Restore")
    with reported(url):
        with bar:
            backups.restore(url, path, moved)
        upgrade(url)
    out.print(f"Restored {path} into {_safe_url(url)}; run `threadline check` to verify it")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
