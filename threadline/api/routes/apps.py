"""The vendor's app endpoint for channels."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from threadline.api.auth import ReadCaller
from threadline.api.common import AppPath
from threadline.api.envelope import respond
from threadline.api.params import ApiParams, describe
from threadline.api.present import admin_out, channel_out
from threadline.api.schemas import ChannelWithCounts, Envelope
from threadline.apps import queries as app_q
from threadline.conversations import queries as conv_q

router = APIRouter(tags=["apps"])


@router.get(
    "/apps/{app}/channels",
    response_model=Envelope[list[ChannelWithCounts]],
    summary="The app's channels",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_channels(app: AppPath, caller: ReadCaller) -> Response:
    """Each channel with the Channel object's optional fields: `not_assigned_count` and
    `not_read_count` (unanswered: the last reply is the user's) over its open
    conversations; `operators`, every admin of the app (any of them reads every channel);
    `droppable` and `read_permission` true; `priority` 0 (channels are not ranked);
    `auto_set` true for the app's default channel, where new conversations go, with no
    `auto_set_settings` (`{}`)."""
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        rows = await app_q.list_channels(conn, app_id)
        counts = await conv_q.channel_counts(conn, app_id)
        operators = [admin_out(a, a.id) for a in await app_q.list_admins(conn, app_id)]
        default_channel_id, _ = await app_q.app_defaults(conn, app_id)
    zero = conv_q.ChannelCounts(0, 0)
    data = [
        {
            **channel_out(row),
            "droppable": True,
            "operators": operators,
            "not_assigned_count": counts.get(row.id, zero).not_assigned,
            "not_read_count": counts.get(row.id, zero).not_read,
            "read_permission": True,
            "priority": 0,
            "auto_set": row.id == default_channel_id,
            "auto_set_settings": {},
        }
        for row in rows
    ]
    return respond(list[ChannelWithCounts], data, context=caller.context)
