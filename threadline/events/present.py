"""Log events as clients see them: the stored payload with its part loaded and rendered.

The stored payload names a part by id only; the part is read when the event is served, so
an erased conversation's events carry the erased (empty) bodies, never the old ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NotRequired

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection
from typing_extensions import TypedDict

from threadline.api.present import Presenter
from threadline.api.schemas import Id, PartOut, Ts
from threadline.conversations import queries as conv_q
from threadline.core import eventlog
from threadline.events.repository import StoredEvent


class EventOut(TypedDict):
    """One log event: `changes` holds the conversation fields it set (ids for objects)."""

    id: Id
    type: str
    created: Ts
    conversation: Id
    user: Id
    changes: dict[str, Any]
    part: NotRequired[PartOut | None]
    read_by: NotRequired[str]
    started_by: NotRequired[str]
    # `conversation_delivery`: the part's new delivery state (threadline.core.eventlog).
    delivery: NotRequired[dict[str, Any]]


EVENT_ADAPTER: TypeAdapter[EventOut] = TypeAdapter(EventOut)
# The conversation fields in `changes` that are points in time (Unix seconds).
TIME_FIELDS = frozenset(
    {"created", "delayed_until", "removed", "sended_time", "last_update", "last_user_reply_time"}
)


def whole_seconds(changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` with its times as whole seconds, as the vendor's objects carry them."""
    return {
        k: int(v) if k in TIME_FIELDS and isinstance(v, float) else v for k, v in changes.items()
    }


def string_ids(changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` with its id fields as strings (for `id_as_string`)."""
    return {
        k: str(v) if k in eventlog.ID_FIELDS and v is not None else v for k, v in changes.items()
    }


async def render(
    conn: AsyncConnection,
    events: Sequence[StoredEvent],
    base_url: str,
    *,
    ids_as_strings: bool = False,
) -> list[dict[str, Any]]:
    """The operators' view of `events` (of any apps), parts loaded in one query per app."""
    wanted: dict[int, tuple[set[int], set[int]]] = defaultdict(lambda: (set(), set()))
    for e in events:
        part = e.data.get("part")
        if part is not None:
            conversations, parts = wanted[e.app_id]
            conversations.add(e.conversation_id)
            parts.add(part["id"])
    rendered: dict[int, dict[str, Any]] = {}
    for app_id, (conversations, parts) in wanted.items():
        found = await conv_q.parts_by_id(conn, sorted(conversations), sorted(parts))
        presenter = Presenter(conn, app_id, base_url, ids_as_strings=ids_as_strings)
        for out in await presenter.parts(list(found.values())):
            rendered[out["id"]] = out
    return [event_out(e, rendered) for e in events]


def event_out(e: StoredEvent, parts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": e.id,
        "type": e.type,
        "created": e.created,
        "conversation": e.conversation_id,
        "user": e.user_id,
        "changes": e.data.get("changes", {}),
    }
    part = e.data.get("part")
    if part is not None:
        out["part"] = parts.get(part["id"])
    for key in ("read_by", "started_by", "delivery"):
        if key in e.data:
            out[key] = e.data[key]
    return out


def user_projection(out: dict[str, Any]) -> dict[str, Any] | None:
    """An operators' view event as the conversation's user may see it (None: not at all)."""
    data: dict[str, Any] = {"changes": out["changes"]}
    part = out.get("part")
    if part is not None:
        data["part"] = {"id": part["id"], "type": part["type"]}
    view = eventlog.user_view(out["type"], data)
    if view is None:
        return None
    return {**out, "changes": view.get("changes", {})}


def _string_part_ids(part: dict[str, Any]) -> dict[str, Any]:
    """Ids inside a part's `body_json` (a channel change's channel), as strings."""
    body_json = part.get("body_json")
    if part.get("type") == "channel_changed" and isinstance(body_json, dict):
        channel = body_json.get("channel")
        if isinstance(channel, int) and not isinstance(channel, bool):
            return {**part, "body_json": {**body_json, "channel": str(channel)}}
    return part


def dump(out: dict[str, Any], id_as_string: bool) -> bytes:
    """JSON of an event rendered for the operators (ids as numbers), with `id_as_string`;
    times in whole seconds, as the vendor's realtime messages carry them."""
    out = {**out, "changes": whole_seconds(out["changes"])}
    if id_as_string:
        out = {**out, "changes": string_ids(out["changes"])}
        if out.get("part"):
            out["part"] = _string_part_ids(out["part"])
    return EVENT_ADAPTER.dump_json(out, context={"id_as_string": id_as_string})  # type: ignore[arg-type]
