"""`GET /ext/apps/{app}/events`: the app's event log after a cursor, to catch up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Request
from pydantic import Field
from starlette.responses import Response

from threadline.api.auth import ReadCaller
from threadline.api.common import AppPath, Params, base_url
from threadline.api.envelope import respond
from threadline.api.params import ApiParams, IdOrZero, describe
from threadline.api.schemas import Envelope, error_responses
from threadline.events import repository as log
from threadline.events.present import EventOut, render, string_ids, whole_seconds

router = APIRouter(tags=["events"])


def register_first(app: FastAPI) -> None:
    """What must sit inside the API's middleware (call before `threadline.api.register`)."""
    from threadline.events import stream

    app.add_middleware(stream.TypingStream)


def register(app: FastAPI) -> None:
    """Mount the event log's endpoints on `app`, the way `threadline.api.register` does."""
    from threadline.events import stream
    from threadline.events.direct import KeepServerSend

    app.add_middleware(KeepServerSend)
    app.include_router(router, responses=error_responses())
    app.include_router(stream.router)
    app.add_route("/sse/{channels:path}", stream.sse_stream, methods=["GET"])


# A catch-up page: large enough that a client back from a short outage needs one request.
MAX_EVENTS_PAGE = 500
DEFAULT_EVENTS_PAGE = 100


class EventsParams(ApiParams):
    after: IdOrZero = Field(
        0,
        description="The cursor: `meta.next_after` of the previous answer (or the `tag` of a "
        "realtime message); 0 or absent: from the oldest event kept.",
    )
    count: Annotated[int, Field(ge=1, le=MAX_EVENTS_PAGE)] = Field(
        DEFAULT_EVENTS_PAGE, description=f"Events per answer, 1-{MAX_EVENTS_PAGE}."
    )


@router.get(
    "/ext/apps/{app}/events",
    response_model=Envelope[list[EventOut]],
    summary="The event log after a cursor",
    openapi_extra=describe(EventsParams, body=False),
)
async def list_events(
    app: AppPath, caller: ReadCaller, p: Params[EventsParams], request: Request
) -> Response:
    """The app's events after `after`, oldest first: every committed change of a
    conversation, as realtime streams and webhooks carry them.

    `meta.next_after` is where to continue: the last event's id, or `after` when no event
    came (it moves with the app's own events only, so it tells nothing of other apps'
    activity). An answer shorter than `count` means the client has caught up: a later
    change is always after `meta.next_after`. Events of rolled-back writes never appear;
    events of writes still committing appear once every write that started before them
    has ended.
    """
    app_id = caller.app(app)
    async with caller.db.read() as conn:
        batch = await log.read_after(conn, p.after, p.count, app_id)
        data = await render(
            conn, batch.events, base_url(request), ids_as_strings=caller.id_as_string
        )
    if not caller.precise_times:
        data = [{**e, "changes": whole_seconds(e["changes"])} for e in data]
    # Not `batch.position`: on PostgreSQL it moves up to the log's horizon, which every
    # app's writes push forward. Nothing is skipped: every event of the app at or below
    # the last one returned was final and returned.
    position = batch.events[-1].id if batch.events else p.after
    if caller.id_as_string:
        data = [{**e, "changes": string_ids(e["changes"])} for e in data]
        next_after: int | str = str(position)
    else:
        next_after = position
    return respond(list[EventOut], data, context=caller.context, next_after=next_after)
