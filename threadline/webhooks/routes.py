"""`/ext/apps/{app}/webhooks`: endpoints, their deliveries, and replaying one."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from pydantic import Field
from starlette.responses import Response
from typing_extensions import TypedDict

from threadline.api.auth import ManagerCaller
from threadline.api.common import AppPath, Params
from threadline.api.envelope import respond
from threadline.api.errors import InvalidParameter
from threadline.api.params import (
    ApiParams,
    IdOrZero,
    IdParam,
    OptionalId,
    RandomId,
    StrList,
    describe,
)
from threadline.api.schemas import Empty, Envelope, Id, Ts, error_responses
from threadline.apps.service import utcnow
from threadline.core import eventlog
from threadline.core.errors import NotFound
from threadline.webhooks import repository as repo
from threadline.webhooks import service, targets
from threadline.webhooks.worker import WebhookSettings

router = APIRouter(prefix="/ext", tags=["webhooks"])

MAX_URL_CHARS = 2048
MAX_DELIVERIES_PAGE = 100


class WebhookOut(TypedDict):
    id: Id
    url: str
    events: list[str]
    format: str
    created: Ts


class WebhookCreated(WebhookOut):
    """`secret` signs every delivery (`webhook-signature`); `token` is sent in vendor-format
    deliveries. Both are shown once, in the answer that created the endpoint: never listed,
    and not to a retry with the same `random_id` (whoever replays a request learns no
    secret; a client that lost the first answer removes the endpoint and adds another)."""

    secret: NotRequired[str]
    token: NotRequired[str]


class DeliveryOut(TypedDict):
    id: Id
    endpoint: Id
    event: Id
    conversation: Id
    sequence: int
    status: str
    attempts: int
    next_attempt_at: Ts | None
    last_attempt_at: Ts | None
    last_status: int | None
    last_error: str | None
    latency_ms: int | None
    created: Ts
    delivered_at: Ts | None


def _webhook_out(e: repo.Endpoint) -> dict[str, Any]:
    return {"id": e.id, "url": e.url, "events": e.events, "format": e.format, "created": e.created}


def _delivery_out(d: repo.Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "endpoint": d.endpoint_id,
        "event": d.event_id,
        "conversation": d.conversation_id,
        "sequence": d.sequence,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at if d.status == repo.PENDING else None,
        "last_attempt_at": d.last_attempt_at,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "latency_ms": d.latency_ms,
        "created": d.created,
        "delivered_at": d.delivered_at,
    }


@router.get(
    "/apps/{app}/webhooks",
    response_model=Envelope[list[WebhookOut]],
    summary="The app's webhook endpoints",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_webhooks(app: AppPath, caller: ManagerCaller) -> Response:
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        found = await repo.endpoints(conn, app_id)
    return respond(list[WebhookOut], [_webhook_out(e) for e in found], context=caller.context)


class NewWebhookParams(ApiParams):
    url: str = Field(
        max_length=MAX_URL_CHARS,
        description="Where deliveries are POSTed: an http or https URL.",
        examples=["https://receiver.example/threadline-hooks"],
    )
    events: StrList = Field(
        default_factory=list,
        description="The event types to deliver (as in the event log); empty: all. "
        f"Any of: {', '.join(eventlog.EVENT_TYPES)}.",
        examples=[["conversation_reply"]],
    )
    format: Literal["json", "vendor"] = Field(
        "json",
        description="`json`: the event as the events API shows it; `vendor`: the vendor's "
        "chat webhook (a form with `type`, `token` and `conversation`), for part events.",
    )
    random_id: RandomId = Field(
        None,
        description="Idempotency key: a retry adds nothing and answers the first endpoint "
        "(with its `secret` and `token`).",
    )


async def _check_url(url: str, allow_private: bool) -> str:
    url = url.strip()
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidParameter("url", "has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameter("url", "must be an http or https URL")
    if not allow_private:
        try:
            await targets.check_url_host(parts.hostname, port)
        except targets.TargetRefused as exc:
            raise InvalidParameter(
                "url", f"{exc} (private targets need THREADLINE_WEBHOOK_ALLOW_PRIVATE)"
            ) from None
    return url


@router.post(
    "/apps/{app}/webhooks",
    response_model=Envelope[WebhookCreated],
    summary="Add a webhook endpoint",
    openapi_extra=describe(NewWebhookParams, body=True),
)
async def add_webhook(
    app: AppPath, caller: ManagerCaller, p: Params[NewWebhookParams], request: Request
) -> Response:
    """Deliveries start with the changes committed from now on.

    With `random_id`, a retry (the same key, per app) adds nothing and answers the first
    request's endpoint, even if it was removed since (it stays removed), without its `secret`
    and `token`: they are shown once. The retry must send the same URL, events and format:
    the key reused for another endpoint is refused (409 IdempotencyKeyReused).
    """
    app_id = caller.app(app)
    settings = getattr(request.app.state, "webhook_settings", None) or WebhookSettings()
    url = await _check_url(p.url, settings.webhook_allow_private)
    unknown = sorted(set(p.events) - set(eventlog.EVENT_TYPES))
    if unknown:
        raise InvalidParameter("events", f"unknown event types: {', '.join(unknown)}")
    endpoint, created = await service.add_endpoint(
        caller.db,
        app_id,
        url=url,
        events=list(dict.fromkeys(p.events)),
        format_=p.format,
        random_id=p.random_id,
        actor=caller.actor,
    )
    data = _webhook_out(endpoint)
    if created:
        data |= {"secret": endpoint.secret, "token": endpoint.token}
    return respond(WebhookCreated, data, context=caller.context)


class RemoveWebhookParams(ApiParams):
    webhook: IdParam = Field(description="The webhook endpoint to remove (its id).")


@router.delete(
    "/apps/{app}/webhooks",
    response_model=Envelope[Empty],
    summary="Remove a webhook endpoint",
    openapi_extra=describe(RemoveWebhookParams, body=True),
)
async def remove_webhook(
    app: AppPath, caller: ManagerCaller, p: Params[RemoveWebhookParams]
) -> Response:
    """Nothing more is sent to it; its pending deliveries end dead."""
    await service.remove_endpoint(caller.db, caller.app(app), p.webhook, caller.actor)
    return respond(Empty, {}, context=caller.context)


class DeliveriesParams(ApiParams):
    webhook: OptionalId = Field(None, description="Only this webhook endpoint's deliveries.")
    status: Literal["pending", "delivered", "dead"] | None = Field(
        None, description="Only the deliveries in this state (`dead`: the dead letters)."
    )
    before: IdOrZero = Field(
        0, description="Deliveries older than this delivery id (the last one of a page)."
    )
    limit: Annotated[int, Field(ge=1, le=MAX_DELIVERIES_PAGE)] = Field(
        50, description=f"Deliveries per answer, 1-{MAX_DELIVERIES_PAGE}, newest first."
    )


@router.get(
    "/apps/{app}/webhooks/deliveries",
    response_model=Envelope[list[DeliveryOut]],
    summary="Webhook deliveries",
    openapi_extra=describe(DeliveriesParams, body=False),
)
async def list_deliveries(
    app: AppPath, caller: ManagerCaller, p: Params[DeliveriesParams]
) -> Response:
    """The app's deliveries, newest first, with each one's attempts, last answer and next
    try; `dead` ones are the dead letters, to replay."""
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        found = await repo.list_deliveries(
            conn, app_id, p.webhook, status=p.status, before=p.before or None, limit=p.limit
        )
    data = [_delivery_out(d) for d in found]
    return respond(list[DeliveryOut], data, context=caller.context)


class ReplayParams(ApiParams):
    delivery: OptionalId = Field(
        None, description="The delivery to send again; absent: every dead delivery."
    )
    webhook: OptionalId = Field(
        None, description="Without `delivery`: only the dead deliveries of this endpoint."
    )


# Dead letters replayed by one request (a larger backlog takes several).
MAX_REPLAY = 1000


@router.post(
    "/apps/{app}/webhooks/replay",
    response_model=Envelope[list[DeliveryOut]],
    summary="Send webhook deliveries again",
    openapi_extra=describe(ReplayParams, body=True),
)
async def replay_deliveries(
    app: AppPath, caller: ManagerCaller, p: Params[ReplayParams]
) -> Response:
    """One delivery (dead or delivered), or every dead one (of one endpoint, or of all), is
    sent again under its own delivery id, from a first attempt, and after it every later
    delivery of its conversation to that endpoint: the conversation's deliveries go again in
    order from there (each carries its `sequence`, also in the `Threadline-Sequence` header).
    Answers the deliveries queued again, in order."""
    app_id = caller.app(app)
    now = utcnow()
    async with caller.db.write() as conn:
        if p.delivery is not None:
            found = await repo.delivery(conn, app_id, p.delivery)
            if found is None or await repo.endpoint(conn, app_id, found.endpoint_id) is None:
                raise NotFound("delivery", p.delivery)
            ids = [p.delivery]
        else:
            dead = await repo.list_deliveries(
                conn, app_id, p.webhook, status=repo.DEAD, before=None, limit=MAX_REPLAY
            )
            ids = [d.id for d in dead]
        replayed: set[int] = set()
        for i in ids:
            replayed.update(await repo.replay(conn, app_id, i, now))
        queued = [await repo.delivery(conn, app_id, i) for i in sorted(replayed)]
    data = [_delivery_out(d) for d in queued if d is not None]
    return respond(list[DeliveryOut], data, context=caller.context)


def register(app: FastAPI) -> None:
    app.include_router(router, responses=error_responses())
