"""`/ext/` delivery state of a conversation's parts sent out through a channel (e-mail)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response
from typing_extensions import TypedDict

from threadline.api.auth import ReadCaller
from threadline.api.common import ConversationId, path_id
from threadline.api.envelope import respond
from threadline.api.params import ApiParams, describe
from threadline.api.schemas import Envelope, Id, Ts
from threadline.channels.email import deliveries
from threadline.conversations import queries as conv_q
from threadline.core.errors import NotFound

router = APIRouter(prefix="/ext", tags=["e-mail"])


class PartDeliveryOut(TypedDict):
    part: Id
    channel: str
    # `queued`, `sent`, `failed` or `bounced`
    status: str
    message_id: str
    attempts: int
    # The relay's SMTP code and answer to the last attempt (null code: no answer); once
    # `bounced`, the bounce report's SMTP code and its status and diagnostic.
    relay_code: int | None
    relay_answer: str | None
    created: Ts
    last_attempt: Ts | None
    sent: Ts | None


def _out(d: deliveries.Delivery) -> PartDeliveryOut:
    return {
        "part": d.part_id,
        "channel": "email",
        "status": d.status,
        "message_id": d.message_id,
        "attempts": d.attempts,
        "relay_code": d.relay_code,
        "relay_answer": d.relay_answer,
        "created": d.created,
        "last_attempt": d.last_attempt_at,
        "sent": d.sent_at,
    }


@router.get(
    "/conversations/{id}/deliveries",
    response_model=Envelope[list[PartDeliveryOut]],
    summary="Delivery state of the conversation's sent parts",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_deliveries(conversation_id: ConversationId, caller: ReadCaller) -> Response:
    """One entry per part sent out by e-mail (an operator's reply in an e-mail
    conversation), oldest first: `queued` until the relay took it (`sent`) or refused it,
    or every attempt failed (`failed`, with the relay's answer); a sent part reported
    undeliverable later by a bounce is `bounced`. Each change is also a
    `conversation_delivery` event on the realtime streams and the webhooks."""
    cid = path_id("id", conversation_id)
    async with caller.db.read() as conn:
        if await conv_q.conversation(conn, caller.app_id, cid) is None:
            raise NotFound("conversation", cid)
        found = await deliveries.of_conversation(conn, cid)
    return respond(list[PartDeliveryOut], [_out(d) for d in found], context=caller.context)
