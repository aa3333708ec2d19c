"""The OpenAPI document against the live server: schemathesis over every operation.

The app runs in uvicorn on a free loopback port, over each database, with a world seeded
so that generated requests reach real code: a valid token with every scope, conversations
in several states, an attachment, and spare admins, channels, tokens and a user for the
operations that delete them. Each operation gets a few positive cases (schema-valid, half
of them on real objects) and a few negative ones (schema-invalid). Every answer must be in
the envelope with `meta.status` equal to the HTTP status, no status is 5xx, a 400 names a
parameter, positive answers match their documented status codes, content types and
schemas, and negative data is refused. Hypothesis runs derandomized and without its
example database, so a run is the same on every machine.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.helpers import admin, started
from tests.conftest import World, build_world
from threadline.api.config import ApiSettings
from threadline.apps import service as apps
from threadline.conversations import service
from threadline.core import events as ev
from threadline.db.engine import Database
from threadline.settings import Settings
from threadline.web.app import create_app

# Cases per operation and database: small, so the whole run stays well under a minute.
POSITIVE_EXAMPLES = 10
NEGATIVE_EXAMPLES = 6
SERVER_REFUSAL = "Invalid HTTP request received."


@dataclass
class Seeded:
    world: World
    token: str
    conversation_id: int
    # Started by a message, so that it has a delivery status.
    message_conversation_id: int
    attachment_id: int
    victim_user: int
    # By kind (`admins`, `channels`, `tokens`): what the delete-by-path operations delete,
    # and what a deletion generated against a protected object deletes instead.
    victims: dict[str, int]
    spares: dict[str, int]
    # The world's objects and the token in use, by kind (and `users`).
    protected: dict[str, set[int]]


@dataclass
class Tally:
    cases: int = 0
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # A few error messages per operation: why it was refused, when it never succeeded.
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, label: str, response: requests.Response) -> None:
        self.cases += 1
        counts = self.by_operation.setdefault(label, {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        if response.status_code >= 400:
            seen = self.errors.setdefault(label, [])
            if len(seen) < 6:
                seen.append(response.text[:160])


class LiveServer:
    """uvicorn in a thread on a free loopback port; stopped by `close`."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        host, port = self.sock.getsockname()
        self.url = f"http://{host}:{port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    application = create_app(Settings(database_url=db_url))
    application.state.api_settings = ApiSettings(data_dir=tmp_path / "data", rate_limit="")
    server = LiveServer(application)
    try:
        yield server.url, application
    finally:
        server.close()


async def _seed_database(db_url: str) -> tuple[World, int, int]:
    db = Database(db_url)
    try:
        world = await build_world(db)
        cid = await started(db, world, "Hello from the user")
        for event in (
            ev.Assign(world.admin_id, admin(world)),
            ev.AddTag("vip", admin(world)),
            ev.AdminReply(author=admin(world), body="Hi, how can we help?"),
        ):
            await service.perform(db, world.app_id, cid, event)
        closed = await started(db, world, "Another question")
        await service.perform(db, world.app_id, closed, ev.Close(admin(world)))
        victim = await apps.create_user(db, world.app_id, site_user_id="to-erase")
        await started(db, world, "Erase me", user_id=victim)
        return world, cid, victim
    finally:
        await db.dispose()


def _seed(url: str, db_url: str) -> Seeded:
    world, cid, victim_user = asyncio.run(_seed_database(db_url))
    http = requests.Session()
    http.headers["Authorization"] = f"Token {world.token}"

    def data(response: requests.Response) -> Any:
        assert response.status_code == 200, response.text
        return response.json()["data"]

    sent = data(
        http.post(
            f"{url}/conversations/{cid}/reply",
            data={"body": "", "attachment_file_name": "notes.txt"},
            files={"attachment": ("notes.txt", b"hello", "text/plain")},
        )
    )
    base = f"{url}/ext/apps/$self_app"

    def create(kind: str) -> int:
        params: dict[str, Any] = {"name": "Temp"}
        if kind == "tokens":
            params["scopes"] = ["conversations-read"]
        ident: int = data(http.post(f"{base}/{kind}", json=params))["id"]
        return ident

    kinds = ("admins", "channels", "tokens")
    address: int = data(http.post(f"{base}/email/addresses", json={"address": "v@acme.test"}))["id"]
    own_token = data(http.get(f"{base}/tokens"))[0]["id"]
    message = data(
        http.post(f"{url}/users/{world.user_id}/sendmessage", json={"body": "Can we help?"})
    )
    return Seeded(
        world=world,
        token=world.token,
        conversation_id=cid,
        message_conversation_id=message["conversation"],
        attachment_id=sent["attachments"][0]["id"],
        victim_user=victim_user,
        victims={**{kind: create(kind) for kind in kinds}, "addresses": address},
        spares={kind: create(kind) for kind in kinds},
        protected={
            "admins": {world.admin_id, world.other_admin_id},
            "channels": {world.channel_id, world.default_channel_id},
            "tokens": {own_token},
            "users": {world.user_id},
        },
    )


def _real_path_parameters(seeded: Seeded, path: str) -> dict[str, Any]:
    """Path parameters naming seeded objects; deletions get objects of their own."""
    parts = path.split("/")
    if path == "/ext/users/{id}":
        ident: Any = str(seeded.victim_user)
    elif path.startswith("/users/"):
        ident = str(seeded.world.user_id)
    elif path.endswith("/status"):
        ident = seeded.message_conversation_id
    elif "/conversations/{id}" in path:
        ident = seeded.conversation_id
    elif path.startswith("/ext/attachments/"):
        ident = seeded.attachment_id
    elif parts[-1] == "{id}":
        ident = seeded.victims[parts[-2]]
    else:
        ident = None
    return {"app": "$self_app", "id": ident}


def _spare(case: Any, seeded: Seeded) -> None:
    """Keep the objects the run depends on: the token in use, the world's admins, channels
    and user, and the victims of the delete-by-path operations. A deletion generated
    against one of them deletes a spare object instead."""
    path: str = case.operation.path
    if case.method.upper() != "DELETE":
        return
    if path == "/ext/users/{id}":
        value = str(case.path_parameters.get("id", ""))
        if _as_int(value) in seeded.protected["users"] or value.strip() == "u-1":
            case.path_parameters["id"] = str(seeded.victim_user)
        return
    for kind, spare in seeded.spares.items():
        if not path.startswith(f"/ext/apps/{{app}}/{kind}"):
            continue
        if path.endswith("/{id}"):  # by path: its victim is the one to delete
            if _as_int(case.path_parameters.get("id")) in seeded.protected[kind]:
                case.path_parameters["id"] = spare
            continue
        keep = seeded.protected[kind] | {seeded.victims[kind]}
        for container in (case.query, case.body):
            if isinstance(container, dict) and _as_int(container.get("id")) in keep:
                container["id"] = spare


def _one_place(case: Any, required: set[str]) -> None:
    """Negative cases: the invalid value must be the one the API reads.

    The API merges the query into the body (the body wins), so a valid body value would
    hide an invalid one in the query, and a required parameter missing from the body
    would be found in the query. The schema can only say what each place holds.
    """
    if not isinstance(case.body, dict) or not case.query:
        return
    location = case.meta.phase.data.parameter_location if case.meta else None
    if location is not None and location.name == "QUERY":
        for name in list(case.body):
            if name in case.query:
                del case.body[name]
    else:
        for name in list(case.query):
            if name in case.body or name in required:
                del case.query[name]


def _pinned(strategy: Any, path_parameters: dict[str, Any]) -> Any:
    """Cases of `strategy` with the path naming the seeded objects."""

    def pin(case: Any) -> Any:
        case.path_parameters = {**case.path_parameters, **path_parameters}
        return case

    return strategy.map(pin)


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _check_envelope(response: requests.Response) -> dict[str, Any]:
    assert response.status_code < 500, f"server error {response.status_code}: {response.text}"
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"meta", "data"}, body
    assert isinstance(body["meta"], dict), body
    assert body["meta"]["status"] == response.status_code, body
    if response.status_code >= 400:
        assert body["data"] == {}, body
        assert isinstance(body["meta"].get("error"), str), body
        assert body["meta"].get("error_message"), body
    return body


def _check_400_names_parameter(body: dict[str, Any]) -> None:
    meta = body["meta"]
    if meta["status"] == 400 and meta["error"] == "BadRequest":
        name, colon, _ = str(meta["error_message"]).partition(":")
        assert colon, meta
        assert name.strip(), meta


def _run(
    operation: Any,
    strategy: Any,
    examples: int,
    call: Callable[[Any], None],
) -> str | None:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def test(case: Any) -> None:
        call(case)

    try:
        test()
    except (Exception, BaseExceptionGroup) as exc:
        return f"{operation.label}: {''.join(traceback.format_exception(exc))}"
    return None


def test_schemathesis_over_every_operation(live: tuple[str, Any], db_url: str) -> None:
    url, application = live
    seeded = _seed(url, db_url)
    document = application.openapi()
    schema = schemathesis.openapi.from_dict(document)
    required_in_body = {
        f"{method.upper()} {path}": set(
            operation["requestBody"]["content"]["application/json"]["schema"].get("required", [])
        )
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    session = requests.Session()
    auth = {"Authorization": f"Token {seeded.token}"}
    tally = Tally()
    failures: list[str] = []
    started_at = time.monotonic()

    def call_with(mode: GenerationMode) -> Callable[[Any], None]:
        checks = (
            [status_code_conformance, content_type_conformance, response_schema_conformance]
            if mode is GenerationMode.POSITIVE
            else [negative_data_rejection]
        )

        def call(case: Any) -> None:
            _spare(case, seeded)
            if mode is GenerationMode.NEGATIVE:
                _one_place(case, required_in_body.get(case.operation.label, set()))
            response = case.call(base_url=url, session=session, headers=auth, timeout=30)
            if response.status_code == 400 and response.text == SERVER_REFUSAL:
                # uvicorn refuses a request line longer than its parser takes (here a
                # 64 KiB body in the query string) before the app sees it.
                assume(False)
            tally.add(case.operation.label, response)
            if case.operation.path == "/ext/attachments/{id}" and (response.status_code == 200):
                return  # the file itself, not an envelope
            try:
                body = _check_envelope(response)
                _check_400_names_parameter(body)
            except (AssertionError, ValueError) as exc:
                curl = case.as_curl_command(headers={"Authorization": "[token]"})
                raise AssertionError(f"{exc}\n{response.text[:500]}\n{curl}") from None
            case.validate_response(response, checks=checks)

        return call

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        operation_started = time.monotonic()
        real = _real_path_parameters(seeded, operation.path)
        names = {p.name for p in operation.path_parameters}
        pinned = {k: v for k, v in real.items() if k in names and v is not None}
        for example in schema.get_strategies_from_examples(operation):
            failure = _run(
                operation, _pinned(example, pinned), 1, call_with(GenerationMode.POSITIVE)
            )
            if failure:
                failures.append(failure)
        for mode, examples in (
            (GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
            (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES),
        ):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned)
            if mode is GenerationMode.POSITIVE and pinned:
                strategy = st.one_of(strategy, operation.as_strategy(generation_mode=mode))
            failure = _run(operation, strategy, examples, call_with(mode))
            if failure:
                failures.append(failure)
        tally.seconds[operation.label] = time.monotonic() - operation_started
    elapsed = time.monotonic() - started_at
    summary = (
        f"{len(operations)} operations, {tally.cases} cases in {elapsed:.1f} s; "
        f"statuses: {sorted({s for c in tally.by_operation.values() for s in c})}"
    )
    print(summary)  # noqa: T201 - shown with -s
    slowest = sorted(tally.seconds.items(), key=lambda item: -item[1])[:8]
    print([(label, round(seconds, 1)) for label, seconds in slowest])  # noqa: T201
    assert not failures, "\n\n".join(failures)
    # The seeded world lets every operation succeed at least once.
    # Except the inbound e-mail endpoint: it succeeds on a well-formed RFC 5322 message
    # only, which no generated file is (tests/email covers its answers).
    never_ok = [
        label
        for label, counts in tally.by_operation.items()
        if not any(200 <= status < 300 for status in counts)
        and label != "POST /ext/apps/{app}/email/inbound"
    ]
    assert not never_ok, "\n".join(
        f"{label}: {tally.by_operation[label]} {tally.errors.get(label)}" for label in never_ok
    )
