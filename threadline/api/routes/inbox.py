"""The operators' inbox (`/ext/apps/{app}/inbox`) and search (`/ext/apps/{app}/search`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response
from typing_extensions import TypedDict

from threadline.api.auth import Caller, ReadCaller
from threadline.api.common import AppPath, Params, base_url
from threadline.api.envelope import respond
from threadline.api.pagination import (
    PageParams,
    cursor_value,
    ordered,
    page_request,
    v1_after_timestamp,
    v2_meta,
)
from threadline.api.params import Blank, OptionalIdOrZero, VBool, blank_choice, describe
from threadline.api.present import Presenter
from threadline.api.schemas import ConversationOut, Envelope, Id, Ts
from threadline.api.state import presence_of
from threadline.apps.service import utcnow
from threadline.conversations.queries import ConversationPage
from threadline.inbox import service
from threadline.inbox.counts import Counts
from threadline.inbox.search import MAX_QUERY_CHARS, parse_query
from threadline.inbox.search import page as search_page
from threadline.inbox.views import View

router = APIRouter(prefix="/ext", tags=["inbox"])

StatusParam = Annotated[
    Literal["open", "delayed", "closed", "all"] | None,
    Blank,
    blank_choice(("open", "delayed", "closed", "all")),
]


class ViewParams(PageParams):
    status: StatusParam = Field(
        None,
        description="`open` (not closed, not snoozed), `delayed` (snoozed until a time still "
        "to come), `closed`, or `all`. Inbox default: `open`; search default: `all`.",
    )
    assignee: OptionalIdOrZero = Field(None, description="Assigned to this admin; 0: unassigned.")
    channel: OptionalIdOrZero = Field(None, description="In this channel; 0: in no channel.")
    tag: Annotated[str | None, Blank] = Field(None, max_length=255, description="Having this tag.")
    important: VBool = Field(None, description="true: important only; false: the others.")

    def view(self, default: Literal["open", "all"]) -> View:
        status = self.status or default
        return View(
            status=None if status == "all" else status,
            assignee=self.assignee,
            channel=self.channel,
            tag=self.tag,
            important=self.important,
        )


class IdCount(TypedDict):
    id: Id
    count: int


class TagCount(TypedDict):
    tag: str
    count: int


class InboxCounts(TypedDict):
    """Exact counts as of `at`."""

    view: int
    open: int
    delayed: int
    closed: int
    total: int
    unassigned: int
    important: int
    assignees: list[IdCount]
    channels: list[IdCount]
    tags: list[TagCount]


class InboxOut(TypedDict):
    conversations: list[ConversationOut]
    counts: InboxCounts | None
    at: Ts


def _counts_out(counts: Counts) -> dict[str, Any]:
    return {
        "view": counts.view,
        "open": counts.statuses["open"],
        "delayed": counts.statuses["delayed"],
        "closed": counts.statuses["closed"],
        "total": counts.total,
        "unassigned": counts.unassigned,
        "important": counts.important,
        "assignees": [{"id": k, "count": v} for k, v in counts.assignees.items()],
        "channels": [{"id": k, "count": v} for k, v in counts.channels.items()],
        "tags": [{"tag": k, "count": v} for k, v in counts.tags.items()],
    }


def _page_meta(caller: Caller, p: PageParams, page: ConversationPage) -> dict[str, Any]:
    if caller.version == 1:
        nxt = page.next_after_v1
        return {"next_after": None if nxt is None else cursor_value(nxt, caller.id_as_string)}
    return v2_meta(p, page.next_before, page.next_after, caller.id_as_string)


class InboxParams(ViewParams):
    counts: VBool = Field(
        None, description="false: the page alone, without the counts (default true)."
    )


@router.get(
    "/apps/{app}/inbox",
    response_model=Envelope[InboxOut],
    summary="The inbox: a page of a view and every count",
    openapi_extra=describe(InboxParams, body=False),
)
async def inbox(
    app: AppPath, caller: ReadCaller, p: Params[InboxParams], request: Request
) -> Response:
    """One page of the chosen view (newest `last_update` first, paginated like the
    conversation list) and, as of the same moment, the exact count of every view:
    `open` / `delayed` / `closed` with the other filters of the request, and for the
    requested status each filter alone (per assignee, per channel, per tag, unassigned,
    important)."""
    app_id = caller.app(app)
    view = p.view("open")
    v1 = (v1_after_timestamp(p), p.count) if caller.version == 1 else None
    page_req = None if v1 else page_request(p, timed=True)
    async with service.snapshot(caller.db) as conn:
        answer = await service.read_inbox(
            conn, app_id, view, page_req, v1, with_counts=p.counts is not False
        )
        data = await Presenter(
            conn, app_id, base_url(request), presence=presence_of(request)
        ).conversations(answer.page.states)
    await service.catch_up(caller.db, app_id, answer)
    body = {
        "conversations": data if v1 else ordered(data, p),
        "counts": None if answer.counts is None else _counts_out(answer.counts),
        "at": answer.now,
    }
    return respond(InboxOut, body, context=caller.context, **_page_meta(caller, p, answer.page))


class SearchParams(ViewParams):
    q: str = Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="The words to find (all of them, in one part): a word of three "
        "characters or more also inside longer words, a shorter one as a whole word.",
    )


class MatchOut(TypedDict):
    part: Id
    snippet: str


class SearchHit(ConversationOut):
    match: MatchOut


@router.get(
    "/apps/{app}/search",
    response_model=Envelope[list[SearchHit]],
    summary="Full-text search over part bodies",
    openapi_extra=describe(SearchParams, body=False),
)
async def search(
    app: AppPath, caller: ReadCaller, p: Params[SearchParams], request: Request
) -> Response:
    """The conversations of the chosen view (every status by default) with a part whose
    body holds every word of `q`, newest `last_update` first, paginated like the
    conversation list. Each has `match`: its newest matching part's id and a snippet of
    that part, HTML-escaped, with the matches in `<mark>`. Notes are searched too."""
    app_id = caller.app(app)
    view = p.view("all")
    query = parse_query(p.q)
    v1 = (v1_after_timestamp(p), p.count) if caller.version == 1 else None
    page_req = None if v1 else page_request(p, timed=True)
    now = utcnow()
    async with caller.db.read() as conn:
        found = await search_page(conn, app_id, query, view, now, page_req, v1)
        states = [h.state for h in found.hits]
        data = await Presenter(
            conn, app_id, base_url(request), presence=presence_of(request)
        ).conversations(states)
    for out, hit in zip(data, found.hits, strict=True):
        out["match"] = {"part": hit.part_id, "snippet": hit.snippet}
    meta: dict[str, Any]
    if v1:
        nxt = found.next_after_v1
        meta = {"next_after": None if nxt is None else cursor_value(nxt, caller.id_as_string)}
    else:
        meta = v2_meta(p, found.next_before, found.next_after, caller.id_as_string)
    return respond(
        list[SearchHit], data if v1 else ordered(data, p), context=caller.context, **meta
    )
