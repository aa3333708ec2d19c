"""The vendor's user endpoints that touch conversations."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import Field, WithJsonSchema
from starlette.responses import Response

from threadline.api.attachments import Uploads, accept_upload
from threadline.api.auth import SELF_APP, Caller, ReadCaller, SendCaller, UserWriteCaller
from threadline.api.common import Params, UserPath, base_url
from threadline.api.envelope import respond
from threadline.api.errors import InvalidParameter
from threadline.api.pagination import (
    PageParams,
    cursor_value,
    ordered,
    page_request,
    v1_after_timestamp,
    v2_meta,
)
from threadline.api.params import (
    MAX_ID,
    ApiParams,
    Blank,
    RandomId,
    VBool,
    blank_choice,
    describe,
    text,
)
from threadline.api.present import Presenter
from threadline.api.schemas import ConversationOut, ConversationRef, Envelope, MessageStarted
from threadline.api.state import presence_of, storage_of
from threadline.apps.manage import default_sender
from threadline.attachments import service as files
from threadline.attachments.service import MAX_FILENAME_CHARS
from threadline.conversations import queries as conv_q
from threadline.conversations import service
from threadline.core import events as ev
from threadline.core.enums import AuthorKind, ConversationType, RecipientType, ReplyType, SentVia
from threadline.core.model import Author
from threadline.core.rules import MAX_BODY_CHARS, MAX_REFERRER_CHARS, check_body
from threadline.users import service as users

router = APIRouter(tags=["users"])

# The startconversation page: "Files up to 10 Mbytes are supported. File type should be one
# of jpg, jpeg, png, gif, pdf, rar, zip, html, csv, docx, doc, xlsx, xls, txt, sig."
START_FILE_MAX_BYTES = 10 * 1024 * 1024
START_FILE_EXTENSIONS = (
    "jpg", "jpeg", "png", "gif", "pdf", "rar", "zip", "html", "csv", "docx", "doc", "xlsx",
    "xls", "txt", "sig",
)  # fmt: skip


_APP_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "enum": [SELF_APP]},
            {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
            {"type": "null"},
        ]
    }
)


class UserApiParams(ApiParams):
    app: Annotated[str | None, _APP_SCHEMA] = Field(
        None,
        description="The requesting app: `$self_app` or the token's app id (the default). "
        "Any other app is `NotFound`.",
    )


def _check_app(caller: Caller, p: UserApiParams) -> None:
    if p.app is not None and p.app.strip():
        caller.app(p.app.strip())


class UserConversationsParams(PageParams, UserApiParams):
    by_user_id: VBool = Field(None, description="The path's id is the site's own user id.")
    with_user_replies_only: VBool = Field(
        None, description="Only conversations in which the user has replied."
    )
    recipient_type: Annotated[RecipientType | None, Blank, blank_choice(RecipientType)] = Field(
        None,
        description="`web` (the default) or `sdk`: conversations whose message was for "
        "that kind of recipient or for `all`; `all`: every conversation.",
    )


@router.get(
    "/users/{id}/conversations",
    response_model=Envelope[list[ConversationOut]],
    summary="A user's conversations",
    openapi_extra=describe(UserConversationsParams, body=False),
)
async def user_conversations(
    user: UserPath, caller: ReadCaller, p: Params[UserConversationsParams], request: Request
) -> Response:
    """Newest first, each with its `user` on v2 and unversioned paths (the page: "user,
    important_part_last, reply_last, part_last optional fields are included by default");
    v1 leaves `user` out, as its page does. An unknown site user id is `LookupError`."""
    _check_app(caller, p)
    ref = users.parse_user_ref(user, bool(p.by_user_id))
    v1 = caller.version == 1
    after = v1_after_timestamp(p) if v1 else None
    page_req = None if v1 else page_request(p, timed=True)
    async with caller.db.read() as conn:
        row = await users.find_user(conn, caller.app_id, ref)
        page = await conv_q.user_page(
            conn,
            caller.app_id,
            row.id,
            with_user_replies_only=bool(p.with_user_replies_only),
            # The vendor's default is `web`; Threadline's `all` lists every conversation.
            recipient_type=p.recipient_type.value if p.recipient_type else "web",
            request=page_req,
            v1=(after, p.count) if v1 else None,
        )
        data = await Presenter(
            conn,
            caller.app_id,
            base_url(request),
            ids_as_strings=caller.id_as_string,
            presence=presence_of(request),
        ).conversations(page.states, user=not v1)
    if v1:
        nxt = page.next_after_v1
        return respond(
            list[ConversationOut],
            data,
            context=caller.context,
            next_after=None if nxt is None else cursor_value(nxt, caller.id_as_string),
        )
    return respond(
        list[ConversationOut],
        ordered(data, p),
        context=caller.context,
        **v2_meta(p, page.next_before, page.next_after, caller.id_as_string),
    )


class StartParams(UserApiParams):
    body: Annotated[str, text(MAX_BODY_CHARS)] = Field(
        "",
        description="The user's first message (may be empty with a `file`; without one it "
        "is required).",
        examples=["Hello, I have a question about my order."],
    )
    filename: Annotated[str | None, text(MAX_FILENAME_CHARS)] = Field(
        None,
        max_length=MAX_FILENAME_CHARS,
        description="Required with a `file`: the name the chat shows it under, at most 255 "
        "characters, ending in one of the accepted extensions ("
        + ", ".join(START_FILE_EXTENSIONS)
        + ").",
    )
    random_id: RandomId = Field(None, description="Idempotency key: a retry starts nothing new.")
    referrer: Annotated[str | None, Blank, text(MAX_REFERRER_CHARS)] = Field(
        None,
        max_length=MAX_REFERRER_CHARS,
        description="The page the user started the conversation on (a URL); served on "
        "the first part.",
        examples=["https://shop.example/product/42"],
    )
    by_user_id: VBool = Field(
        None, description="The path's id is the site's own; an unknown one creates the user."
    )


@router.post(
    "/users/{id}/startconversation",
    response_model=Envelope[ConversationRef],
    summary="The user starts a conversation",
    openapi_extra=describe(
        StartParams,
        body=True,
        files={
            "file": "A file the user sends (multipart only), with its name in `filename`: at "
            "most 10 MB, of one of the types the name's extension gives ("
            + ", ".join(START_FILE_EXTENSIONS)
            + ")."
        },
        dependent_required={"file": ["filename"]},
    ),
)
async def start_conversation(
    user: UserPath,
    caller: UserWriteCaller,
    p: Params[StartParams],
    uploads: Uploads,
    request: Request,
) -> Response:
    """Answers `{id}` of the new conversation (needs `as-user`).

    "Either body or file + filename must be sent. Both can be sent simultaneously." A file
    goes in the multipart field `file`, its name in `filename`.
    """
    _check_app(caller, p)
    ref = users.parse_user_ref(user, bool(p.by_user_id))
    has_file = "file" in uploads.files
    # Refuse before a user is created (or a file stored) for nothing.
    if not has_file:
        check_body(p.body, None, ())
    elif not (p.filename or "").strip():
        raise InvalidParameter("filename", "is required with a file")
    if isinstance(ref, int):
        await users.resolve(caller.db, caller.app_id, ref)
    stored = await accept_upload(
        request,
        caller,
        uploads,
        "file",
        p.filename,
        None,
        max_bytes=START_FILE_MAX_BYTES,
        extensions=START_FILE_EXTENSIONS,
    )
    try:
        user_id = await users.resolve_or_create(caller.db, caller.app_id, ref)
        reply = ev.UserReply(
            body=p.body,
            attachments=(stored.attachment,) if stored is not None else (),
            sent_via=SentVia.API,
            random_id=p.random_id,
            referrer=p.referrer,
        )
        outcome = await service.start_by_user(caller.db, caller.app_id, user_id, reply)
    except BaseException:
        if stored is not None:
            await files.discard(caller.db, storage_of(request), stored)
        raise
    if stored is not None:
        if outcome.duplicate:
            await files.discard(caller.db, storage_of(request), stored)
        else:
            await files.link(caller.db, stored, outcome.state.id)
    return respond(ConversationRef, {"id": outcome.state.id}, context=caller.context)


class SendMessageParams(UserApiParams):
    body: Annotated[str, text(MAX_BODY_CHARS, blank=False)] = Field(
        description="The message.", examples=["Hi! Can we help you with anything?"]
    )
    type: Literal["popup_chat", "popup_small", "popup_big", "email"] = Field(
        "popup_chat", description="How the message is shown or sent."
    )
    by_user_id: VBool = Field(None, description="The path's id is the site's own user id.")
    random_id: RandomId = Field(None, description="Idempotency key: a retry sends nothing new.")


@router.post(
    "/users/{id}/sendmessage",
    response_model=Envelope[MessageStarted],
    summary="Send a message that opens a conversation",
    openapi_extra=describe(SendMessageParams, body=True),
)
async def send_message(
    user: UserPath, caller: SendCaller, p: Params[SendMessageParams]
) -> Response:
    """The conversation enters the inbox once the user answers. Answers its and the message's id."""
    _check_app(caller, p)
    if not p.body.strip():  # the page: `body` is a required string, the message's text
        raise InvalidParameter("body", "must not be empty")
    ref = users.parse_user_ref(user, bool(p.by_user_id))
    row = await users.resolve(caller.db, caller.app_id, ref)
    kind = ConversationType(p.type)
    started = await service.start_by_message(
        caller.db,
        caller.app_id,
        row.id,
        body=p.body,
        sender=Author(AuthorKind.SENDER, await default_sender(caller.db, caller.app_id)),
        type_=kind,
        reply_type=ReplyType.EMAIL if kind is ConversationType.EMAIL else ReplyType.TEXT,
        random_id=p.random_id,
    )
    return respond(
        MessageStarted,
        {"conversation": started.outcome.state.id, "message": started.message_id},
        context=caller.context,
    )
