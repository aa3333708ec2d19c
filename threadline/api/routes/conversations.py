"""The vendor's conversation endpoints: the inbox list, one conversation, parts and writes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from threadline.api.attachments import Uploads, accept_upload
from threadline.api.auth import AS_USER, Caller, ReadCaller, WriteCaller
from threadline.api.common import (
    DEFAULT_ADMIN,
    AppPath,
    ConversationId,
    Params,
    admin_author,
    base_url,
    check_admin_form,
    part_ref,
    path_id,
    written_part,
)
from threadline.api.envelope import respond
from threadline.api.errors import InvalidParameter, PermissionDenied
from threadline.api.pagination import (
    PageParams,
    cursor_value,
    ordered,
    page_request,
    v1_after_id,
    v1_after_timestamp,
    v2_meta,
)
from threadline.api.params import (
    ApiParams,
    Blank,
    FromUser,
    JsonObject,
    JsonObjectList,
    OptionalId,
    OptionalIdOrZero,
    RandomId,
    StrList,
    VBool,
    author,
    blank_choice,
    describe,
    text,
)
from threadline.api.present import Presenter
from threadline.api.routes.ext import TypingParams, typing
from threadline.api.schemas import ConversationOut, Empty, Envelope, PartOut, PartRef
from threadline.api.state import presence_of, storage_of
from threadline.apps.service import utcnow
from threadline.attachments import service as files
from threadline.attachments.service import MAX_FILENAME_CHARS
from threadline.conversations import queries as conv_q
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AssistantType, AuthorKind, PartType, SentVia
from threadline.core.errors import NotFound
from threadline.core.model import Author
from threadline.core.rules import MAX_BODY_CHARS, MAX_REFERRER_CHARS, MAX_TAG_CHARS
from threadline.inbox import views as inbox_views

router = APIRouter(tags=["conversations"])


class InboxParams(PageParams):
    closed: VBool = Field(None, description="Only closed (true) or open (false) ones.")
    answered: VBool = Field(None, description="true: the last reply is the operator's.")
    delayed: VBool = Field(None, description="Only snoozed (true) or not snoozed (false) ones.")
    assigned: OptionalIdOrZero = Field(None, description="Assignee admin id; 0 means none.")
    include_not_assigned: VBool = Field(
        None, description="Unassigned conversations are left out unless this is true."
    )
    tags: StrList = Field(
        default_factory=list, description="Tags the conversation must all have.", examples=[["vip"]]
    )
    include_no_tags: VBool = Field(
        None,
        description="Alone: only the conversations that have no tag at all. With `tags`: "
        "those with all the tags and those with none.",
    )
    channel: OptionalIdOrZero = Field(None, description="Channel id; 0 means no channel.")
    assistant_type: Annotated[AssistantType | None, Blank, blank_choice(AssistantType)] = Field(
        None, description="The managing bot."
    )


@router.get(
    "/apps/{app}/conversations",
    response_model=Envelope[list[ConversationOut]],
    summary="The inbox list",
    openapi_extra=describe(InboxParams, body=False),
)
async def list_conversations(
    app: AppPath, caller: ReadCaller, p: Params[InboxParams], request: Request
) -> Response:
    """Replied conversations of the app, newest `last_update` first, filtered."""
    app_id = caller.app(app)
    f = conv_q.InboxFilter(
        now=utcnow(),
        closed=p.closed,
        answered=p.answered,
        delayed=p.delayed,
        assigned=p.assigned,
        include_not_assigned=bool(p.include_not_assigned),
        tags=tuple(p.tags),
        include_no_tags=bool(p.include_no_tags),
        channel=p.channel,
        assistant_type=p.assistant_type.value if p.assistant_type else None,
    )
    if caller.version == 1:
        after = v1_after_timestamp(p)
        async with caller.db.read() as conn:
            page = await inbox_views.vendor_page(conn, app_id, f, v1=(after, p.count))
            data = await Presenter(
                conn,
                app_id,
                base_url(request),
                ids_as_strings=caller.id_as_string,
                presence=presence_of(request),
            ).conversations(page.states)
        next_after = page.next_after_v1
        return respond(
            list[ConversationOut],
            data,
            context=caller.context,
            next_after=None
            if next_after is None
            else cursor_value(next_after, caller.id_as_string),
        )
    page_req = page_request(p, timed=True)
    async with caller.db.read() as conn:
        page = await inbox_views.vendor_page(conn, app_id, f, request=page_req)
        data = await Presenter(
            conn,
            app_id,
            base_url(request),
            ids_as_strings=caller.id_as_string,
            presence=presence_of(request),
        ).conversations(page.states)
    return respond(
        list[ConversationOut],
        ordered(data, p),
        context=caller.context,
        **v2_meta(p, page.next_before, page.next_after, caller.id_as_string),
    )


@router.get(
    "/conversations/{id}",
    response_model=Envelope[ConversationOut],
    summary="One conversation",
    openapi_extra=describe(ApiParams, body=False),
)
async def get_conversation(
    conversation_id: ConversationId, caller: ReadCaller, request: Request
) -> Response:
    """With `user`, `channel`, `part_last`, `important_part_last` and `reply_last`."""
    cid = path_id("id", conversation_id)
    async with caller.db.read() as conn:
        state = await conv_q.conversation(conn, caller.app_id, cid)
        if state is None:
            raise NotFound("conversation", cid)
        (data,) = await Presenter(
            conn,
            caller.app_id,
            base_url(request),
            ids_as_strings=caller.id_as_string,
            presence=presence_of(request),
        ).conversations([state], channel=True)
    return respond(ConversationOut, data, context=caller.context)


@router.get(
    "/conversations/{id}/parts",
    response_model=Envelope[list[PartOut]],
    summary="A conversation's parts",
    openapi_extra=describe(PageParams, body=False),
)
async def list_parts(
    conversation_id: ConversationId, caller: ReadCaller, p: Params[PageParams], request: Request
) -> Response:
    """Every part, notes and system parts included, newest first, paginated by part id."""
    cid = path_id("id", conversation_id)
    v1 = caller.version == 1
    after = v1_after_id(p) if v1 else None
    page_req = None if v1 else page_request(p, timed=False)
    async with caller.db.read() as conn:
        if await conv_q.conversation(conn, caller.app_id, cid) is None:
            raise NotFound("conversation", cid)
        if v1:
            page = await conv_q.parts_page(conn, cid, v1=(after, p.count))
        else:
            page = await conv_q.parts_page(conn, cid, request=page_req)
        data = await Presenter(
            conn, caller.app_id, base_url(request), ids_as_strings=caller.id_as_string
        ).parts(page.parts)
    if v1:
        nxt = page.next_after_v1
        return respond(
            list[PartOut],
            data,
            context=caller.context,
            next_after=None if nxt is None else cursor_value(nxt, caller.id_as_string),
        )
    return respond(
        list[PartOut],
        ordered(data, p),
        context=caller.context,
        **v2_meta(p, page.next_before, page.next_after, caller.id_as_string),
    )


# A bot's name as its parts show it (the vendor's `bot_name`).
MAX_BOT_NAME_CHARS = 255


class ReplyParams(ApiParams):
    body: Annotated[str, text(MAX_BODY_CHARS)] = Field(
        "",
        description="The text (HTML allowed for operators); may be empty with an "
        "`attachment` or `body_json`. Longer than allowed: `ReplyTooBig`.",
        examples=["Thanks, we are looking into it."],
    )
    body_json: JsonObject = Field(None, description="Structured content, a JSON object.")
    from_user: FromUser = Field(None, description="Write as the user.")
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="The admin who writes; the app's sender by default."
    )
    bot_name: Annotated[str | None, text(MAX_BOT_NAME_CHARS)] = Field(
        None,
        max_length=MAX_BOT_NAME_CHARS,
        description="Write as a bot of this name (the part's `from` is that bot); "
        "not with `from_admin` or `from_user`. Empty: not a bot.",
        examples=["Delivery bot"],
    )
    type: Literal["reply_admin", "note", "article"] = Field(
        "reply_admin",
        description="A reply the user sees, an internal note, or an article. "
        "Ignored with `from_user`.",
    )
    external_id: Annotated[str | None, text(255)] = Field(
        None, max_length=255, description="The part's id in an external service."
    )
    random_id: RandomId = Field(None, description="Idempotency key: a retry creates nothing.")
    auto_assign: OptionalId = Field(
        None, description="Assign to this admin first (an `assigned` part before the reply)."
    )
    auto_assign_random_id: RandomId = Field(None, description="Idempotency key of the assign.")
    referrer: Annotated[str | None, Blank, text(MAX_REFERRER_CHARS)] = Field(
        None,
        max_length=MAX_REFERRER_CHARS,
        description="The page the reply was written on (a URL); served on the part.",
        examples=["https://shop.example/checkout"],
    )
    actions: JsonObjectList = Field(
        None,
        description="What the user can do with the reply (buttons and the like): a JSON "
        "array of objects, served on the part as sent.",
    )
    attachment_file_name: Annotated[str | None, text(MAX_FILENAME_CHARS)] = Field(
        None,
        max_length=MAX_FILENAME_CHARS,
        description="Name of the `attachment` file as the chat shows it, at most 255 "
        "characters (longer: refused); by default the file's own name.",
    )


_CONTENT = {"note": PartType.NOTE, "article": PartType.ARTICLE}


@router.post(
    "/conversations/{id}/reply",
    response_model=Envelope[PartOut],
    summary="Reply, or add a note",
    openapi_extra=describe(
        ReplyParams,
        body=True,
        files={"attachment": "A file sent with the reply (multipart only)."},
    ),
)
async def reply(
    conversation_id: ConversationId,
    caller: WriteCaller,
    p: Params[ReplyParams],
    uploads: Uploads,
    request: Request,
) -> Response:
    """Answers the created part (on a retry with the same `random_id`, the first one).

    A file goes in the multipart field `attachment` (its name in `attachment_file_name`);
    `body` may then be empty.
    """
    cid = path_id("id", conversation_id)
    stored = None
    if "attachment" in uploads.files:
        await service.get_conversation(caller.db, caller.app_id, cid)  # 404 before storing
        stored = await accept_upload(
            request, caller, uploads, "attachment", p.attachment_file_name, cid
        )
    try:
        outcome = await _reply(caller, cid, p, stored)
    except BaseException:
        if stored is not None:
            await files.discard(caller.db, storage_of(request), stored)
        raise
    if stored is not None and outcome.duplicate:
        await files.discard(caller.db, storage_of(request), stored)
    part = written_part(
        outcome, PartType.REPLY_USER, PartType.REPLY_ADMIN, PartType.NOTE, PartType.ARTICLE
    )
    assert part is not None
    presenter = Presenter(
        None, caller.app_id, base_url(request), ids_as_strings=caller.id_as_string
    )
    if outcome.people is not None:
        presenter.know(outcome.people.admins, outcome.people.senders)
    if not outcome.duplicate:
        # The conversation's parts are all this write's exactly when it made its first one.
        made_all = outcome.state.parts_count == len(outcome.parts)
        presenter.know_first(cid, min(p.id for p in outcome.parts) if made_all else None)
    if presenter.knows_all_of([part]):
        (data,) = await presenter.parts([part])
    else:  # a retry: the first request's part, whose people this one did not read
        async with caller.db.read() as conn:
            presenter.use(conn)
            (data,) = await presenter.parts([part])
    return respond(PartOut, data, context=caller.context)


async def _reply(
    caller: Caller, cid: int, p: ReplyParams, stored: files.StoredFile | None
) -> service.Outcome:
    attachments = (stored.attachment,) if stored is not None else ()
    events: list[ev.Event] = []
    user_id: int | None = None  # checked under the conversation's lock
    bot_name = (p.bot_name or "").strip()
    if p.from_user is not None:
        if bot_name:
            raise InvalidParameter("bot_name", "a reply from_user is the user's, not a bot's")
        caller.need(AS_USER)
        if isinstance(p.from_user, int):
            user_id = p.from_user
        if p.auto_assign is not None:
            events.append(
                ev.Assign(p.auto_assign, Author.system(), random_id=p.auto_assign_random_id)
            )
        events.append(
            ev.UserReply(
                body=p.body,
                body_json=p.body_json,
                attachments=attachments,
                sent_via=SentVia.API,
                random_id=p.random_id,
                external_id=p.external_id,
                referrer=p.referrer,
                actions=p.actions,
            )
        )
    else:
        author = await _reply_author(caller, p)
        # An operator's reply from the inbox was written in the web panel (the vendor's
        # `web_panel`); any other client's through the API.
        via = SentVia.WEB_PANEL if caller.session_admin is not None else SentVia.API
        if p.auto_assign is not None:
            events.append(ev.Assign(p.auto_assign, author, random_id=p.auto_assign_random_id))
        content = _CONTENT.get(p.type)
        if content is None:
            events.append(
                ev.AdminReply(
                    author=author,
                    body=p.body,
                    body_json=p.body_json,
                    attachments=attachments,
                    sent_via=via,
                    random_id=p.random_id,
                    external_id=p.external_id,
                    referrer=p.referrer,
                    actions=p.actions,
                )
            )
        else:
            events.append(
                ev.ContentPart(
                    type=content,
                    author=author,
                    body=p.body,
                    body_json=p.body_json,
                    attachments=attachments,
                    sent_via=via,
                    random_id=p.random_id,
                    external_id=p.external_id,
                    referrer=p.referrer,
                    actions=p.actions,
                )
            )
    return await service.perform(caller.db, caller.app_id, cid, *events, user_id=user_id)


async def _reply_author(caller: Caller, p: ReplyParams) -> Author:
    """The admin of `from_admin` (the app's sender by default), or the bot of `bot_name`."""
    bot_name = (p.bot_name or "").strip()
    if not bot_name:
        return await admin_author(caller, p.from_admin)
    if p.from_admin is not None and p.from_admin.strip():
        raise InvalidParameter(
            "bot_name", "names a bot as the author, and from_admin an admin: give one of them"
        )
    if caller.session_admin is not None:
        raise PermissionDenied(
            f"bot_name: an inbox session acts as its own admin ({caller.session_admin})"
        )
    return Author(AuthorKind.BOT, None, bot_name)


class AssignParams(ApiParams):
    admin: OptionalIdOrZero = Field(
        None,
        description="The admin to assign; left out, empty or 0 removes the assignment.",
        examples=[0],
    )
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="Who assigns; the app's sender by default."
    )
    random_id: RandomId = Field(None, description="Idempotency key: a retry changes nothing.")


@router.post(
    "/conversations/{id}/assign",
    response_model=Envelope[PartRef | Empty],
    summary="Assign or unassign",
    openapi_extra=describe(AssignParams, body=True),
)
async def assign(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[AssignParams]
) -> Response:
    """`{id, part_group}` of the `assigned` part, or empty data when nothing changed."""
    cid = path_id("id", conversation_id)
    by = await admin_author(caller, p.from_admin)
    outcome = await service.perform(
        caller.db, caller.app_id, cid, ev.Assign(p.admin or None, by, random_id=p.random_id)
    )
    return part_ref(caller, written_part(outcome, PartType.ASSIGNED))


class ActorParams(ApiParams):
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="Who acts; the app's sender by default."
    )
    random_id: RandomId = Field(None, description="Idempotency key: a retry changes nothing.")


@router.post(
    "/conversations/{id}/close",
    response_model=Envelope[PartRef | Empty],
    summary="Close",
    openapi_extra=describe(ActorParams, body=True),
)
async def close(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[ActorParams]
) -> Response:
    """`{id, part_group}` of the `closed` part, or empty data when it was closed already."""
    cid = path_id("id", conversation_id)
    by = await admin_author(caller, p.from_admin)
    outcome = await service.perform(
        caller.db, caller.app_id, cid, ev.Close(by, random_id=p.random_id)
    )
    return part_ref(caller, written_part(outcome, PartType.CLOSED))


class TagParams(ActorParams):
    tag: Annotated[str, text(MAX_TAG_CHARS, blank=False)] = Field(
        description="The tag, 1-255 characters (on /v1/ without `,`).", examples=["vip"]
    )
    action: Annotated[Literal["add", "delete"] | None, Blank, blank_choice(("add", "delete"))] = (
        Field(
            None,
            description="Deprecated, honoured on every version: add the tag, or delete it. "
            "Given, a repeated add or a delete of a missing tag quietly does nothing.",
        )
    )


@router.post(
    "/conversations/{id}/tag",
    response_model=Envelope[PartRef | Empty],
    summary="Add a tag (or, with action=delete, remove it)",
    openapi_extra=describe(TagParams, body=True),
)
async def add_tag(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[TagParams]
) -> Response:
    """v2: a tag the conversation has is `ConversationTagAlreadyAssigned`, unless `action` is
    given (then quiet). v1: quiet, answers `{}`. `action=delete` removes the tag on every
    version."""
    cid = path_id("id", conversation_id)
    if caller.version == 1 and "," in p.tag:
        raise InvalidParameter("tag", "must not contain ',' (v1)")
    by = await admin_author(caller, p.from_admin)
    strict = caller.version != 1 and p.action is None
    if p.action == "delete":
        event: ev.Event = ev.RemoveTag(p.tag, by, strict=False, random_id=p.random_id)
        kind = PartType.TAG_DELETED
    else:
        event = ev.AddTag(p.tag, by, strict=strict, random_id=p.random_id)
        kind = PartType.TAG_ADDED
    outcome = await service.perform(caller.db, caller.app_id, cid, event)
    if caller.version == 1:
        return respond(Empty, {}, context=caller.context)
    return part_ref(caller, written_part(outcome, kind))


class UntagParams(ActorParams):
    tag: Annotated[str, text(MAX_TAG_CHARS, blank=False)] = Field(
        description="The tag to remove.", examples=["vip"]
    )


@router.delete(
    "/conversations/{id}/tag",
    response_model=Envelope[PartRef | Empty],
    summary="Remove a tag",
    openapi_extra=describe(UntagParams, body=True),
)
async def remove_tag(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[UntagParams]
) -> Response:
    """A tag the conversation lacks is `ConversationTagIsNotAssigned`."""
    cid = path_id("id", conversation_id)
    by = await admin_author(caller, p.from_admin)
    outcome = await service.perform(
        caller.db, caller.app_id, cid, ev.RemoveTag(p.tag, by, strict=True, random_id=p.random_id)
    )
    return part_ref(caller, written_part(outcome, PartType.TAG_DELETED))


class MarkReadParams(ApiParams):
    from_user: FromUser = Field(
        None,
        description="Read by the user: the operators' parts are marked read (needs "
        "`as-user`). Left out: read by the operators, the user's parts are marked read.",
    )
    from_admin: Annotated[str | None, author(DEFAULT_ADMIN, "the app's sender")] = Field(
        None, description="The operator who reads (the read mark is shared by all operators)."
    )


@router.post(
    "/conversations/{id}/markread",
    response_model=Envelope[Empty],
    summary="Mark read",
    openapi_extra=describe(MarkReadParams, body=True),
)
async def mark_read(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[MarkReadParams]
) -> Response:
    """The vendor's name for `/ext/conversations/{id}/read`: from the operators' side (the
    default) the user's parts are marked read; with `from_user` the operators' parts."""
    cid = path_id("id", conversation_id)
    if p.from_user is not None:
        caller.need(AS_USER)
        check_admin_form(p.from_admin)
        await service.perform(
            caller.db,
            caller.app_id,
            cid,
            ev.ReadByUser(),
            user_id=p.from_user if isinstance(p.from_user, int) else None,
        )
    else:
        await admin_author(caller, p.from_admin)  # a malformed one is refused
        await service.perform(caller.db, caller.app_id, cid, ev.ReadByAdmin())
    return respond(Empty, {}, context=caller.context)


@router.post(
    "/conversations/{id}/settyping",
    response_model=Envelope[Empty],
    summary="Someone is typing",
    openapi_extra=describe(TypingParams, body=True),
)
async def set_typing(
    conversation_id: ConversationId, caller: WriteCaller, p: Params[TypingParams]
) -> Response:
    """The vendor's name for `/ext/conversations/{id}/typing`: not stored, only streamed to
    the conversation's realtime channels. `from_user` types as the user (needs `as-user`),
    otherwise `from_admin` (the app's sender by default)."""
    return await typing(conversation_id, caller, p)
