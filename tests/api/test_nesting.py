"""Deeply nested JSON is bad input: 400 in the envelope before any authentication, and one
log line rather than a traceback (a body of a few hundred nested arrays used to answer 500)."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.api.helpers import error
from tests.conftest import World
from threadline.api.params import MAX_JSON_DEPTH, json_depth

DEEP = 600


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def deep_body(levels: int = DEEP) -> str:
    return '{"a": ' + nested(levels) + "}"


def test_json_depth_counts_containers_outside_strings() -> None:
    assert json_depth(b"{}") == 1
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[[[[[[[{{{{{{"}') == 1
    assert json_depth(b'{"a": "\\"[[[[", "b": [[]]}') == 3
    assert json_depth(b"12") == 0
    assert json_depth(nested(DEEP).encode()) == DEEP


@pytest.mark.parametrize(
    ("path", "authorised"),
    [
        ("/ui/session", False),
        ("/widget/api/session", False),
        ("/conversations/1/reply", False),
        ("/conversations/1/reply", True),
    ],
)
async def test_a_deep_json_body_is_refused_before_anything_else(
    anon: httpx.AsyncClient,
    api: httpx.AsyncClient,
    path: str,
    authorised: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = api if authorised else anon
    body = deep_body()
    assert len(body) < 1300
    with caplog.at_level(logging.INFO):
        response = await client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
    message = error(response, 400, "BadRequest")
    assert "nested" in message
    assert not any(r.exc_info for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def test_a_body_just_within_the_depth_is_parsed(api: httpx.AsyncClient) -> None:
    """A body at the limit reaches the endpoint (which refuses the conversation as unknown)."""
    body = '{"body": "hi", "x": ' + nested(MAX_JSON_DEPTH - 1) + "}"
    response = await api.post(
        "/conversations/1/reply", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code != 400 or "nested" not in response.json()["meta"]["error_message"]
    assert response.status_code < 500


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", "/ext/apps/$self_app/webhooks", "events"),
        ("GET", "/apps/$self_app/conversations", "tags"),
        ("POST", "/ext/apps/$self_app/tokens", "scopes"),
        ("POST", "/conversations/1/reply", "actions"),
    ],
)
async def test_deep_json_text_in_a_form_field_is_refused(
    api: httpx.AsyncClient, world: World, method: str, path: str, field: str
) -> None:
    form = {field: nested(DEEP), "url": "https://example.com/hook", "name": "n", "body": "b"}
    if method == "GET":
        response = await api.get(path, params=form)
    else:
        response = await api.post(path, data=form)
    message = error(response, 400, "BadRequest")
    assert field in message
    assert "nested" in message
