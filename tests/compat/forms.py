"""Sending one set of parameters in each form the vendor's general rules allow.

"Arguments can be sent as GET or POST parameters": a client may put any parameter in the
query string, a urlencoded form, a multipart form or a JSON body, on every method. A
form carries text only: booleans as `true`/`false` (or PHP's `1`/``), arrays as JSON text.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx

QUERY = "query"
URLENCODED = "urlencoded"
MULTIPART = "multipart"
JSON = "json"
FORMS = (QUERY, URLENCODED, MULTIPART, JSON)
# A GET body has no multipart in any client we know of.
READ_FORMS = (QUERY, URLENCODED, JSON)


def as_text(value: Any) -> str:
    """How a form encoder writes a value."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


async def send(
    client: httpx.AsyncClient, method: str, url: str, params: dict[str, Any], form: str
) -> httpx.Response:
    if form == QUERY:
        return await client.request(method, url, params={k: as_text(v) for k, v in params.items()})
    if form == URLENCODED:
        return await client.request(
            method,
            url,
            content=urlencode({k: as_text(v) for k, v in params.items()}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    if form == MULTIPART:
        fields = {k: (None, as_text(v)) for k, v in params.items()}
        if not fields:  # an empty multipart body still says so
            fields = {"_": (None, "")}
        return await client.request(method, url, files=fields)
    assert form == JSON
    return await client.request(method, url, json=params)
