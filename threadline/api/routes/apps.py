"""The vendor's app endpoint for channels."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from threadline.api.auth import ReadCaller
from threadline.api.common import AppPath
from threadline.api.envelope import respond
from threadline.api.params import ApiParams, describe
from threadline.api.present import channel_out
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
    """Each with `not_assigned_count` and `not_read_count` over its open conversations."""
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        rows = await app_q.list_channels(conn, app_id)
        counts = await conv_q.channel_counts(conn, app_id)
    zero = conv_q.ChannelCounts(0, 0)
    data = [
        {
            **channel_out(row),
            "not_assigned_count": counts.get(row.id, zero).not_assigned,
            "not_read_count": counts.get(row.id, zero).not_read,
        }
        for row in rows
    ]
    return respond(list[ChannelWithCounts], data, context=caller.context)
