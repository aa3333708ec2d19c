"""The e-mail channel's `/ext/` endpoints: a raw message in, and the app's inbound addresses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.responses import Response
from typing_extensions import TypedDict

from threadline.api.attachments import Uploads
from threadline.api.auth import AS_USER, WRITE, AdminCaller, Caller, ManagerCaller, require
from threadline.api.common import AppPath, Params, path_id
from threadline.api.envelope import respond
from threadline.api.errors import InvalidParameter, Throttled
from threadline.api.params import (
    MAX_PLAIN_BODY_BYTES,
    MULTIPART_LIMIT_SCOPE_KEY,
    ApiParams,
    describe,
)
from threadline.api.schemas import Empty, Envelope, Id
from threadline.api.state import api_settings, storage_of
from threadline.attachments import service as files
from threadline.channels.email import inbound
from threadline.core.access import Role

router = APIRouter(prefix="/ext", tags=["e-mail"])

# Handing in a message writes in a user's name (`as-user`), on behalf of a mail relay: an
# integration's work, set up by an administrator.
InboundCaller = Annotated[Caller, Depends(require(WRITE, AS_USER, role=Role.ADMINISTRATOR))]


class ReceivedOut(TypedDict):
    outcome: str
    conversation: Id | None
    part: Id | None
    reason: str | None


class AddressOut(TypedDict):
    id: Id | None
    address: str
    default: bool


def mail_settings(request: Request) -> inbound.MailSettings:
    settings = getattr(request.app.state, "mail_settings", None)
    if settings is None:
        settings = request.app.state.mail_settings = inbound.MailSettings()
    assert isinstance(settings, inbound.MailSettings)
    return settings


def sender_limiter(request: Request) -> inbound.SenderLimiter:
    """The app's per-sender limit: counted in the deployment's Redis when it has one (set up
    by the lifespan), else in the database; shared by every process either way."""
    limiter = getattr(request.app.state, "mail_sender_limiter", None)
    if limiter is None:
        shared = getattr(request.app.state, "shared_redis", None)
        limiter = request.app.state.mail_sender_limiter = inbound.SenderLimiter(
            mail_settings(request).mail_sender_limit,
            request.app.state.db,
            shared.client if shared is not None else None,
            shared.namespace if shared is not None else "threadline",
        )
    assert isinstance(limiter, inbound.SenderLimiter)
    return limiter


def message_sized_body(request: Request) -> None:
    """A raw message may be larger than an attachment (it carries one, base64-encoded): the
    request body may be as large as `THREADLINE_MAIL_MAX_MESSAGE_BYTES` allows."""
    request.scope[MULTIPART_LIMIT_SCOPE_KEY] = (
        mail_settings(request).mail_max_message_bytes + MAX_PLAIN_BODY_BYTES
    )


def received_out(received: inbound.Received) -> ReceivedOut:
    return {
        "outcome": received.outcome,
        "conversation": received.conversation_id,
        "part": received.part_id,
        "reason": received.reason,
    }


@router.post(
    "/apps/{app}/email/inbound",
    response_model=Envelope[ReceivedOut],
    summary="Receive an e-mail",
    # Before the caller's dependency, which reads the body.
    dependencies=[Depends(message_sized_body)],
    openapi_extra=describe(
        ApiParams, body=True, files={"message": "The raw RFC 5322 message (multipart only)."}
    ),
)
async def receive_email(
    app: AppPath, caller: InboundCaller, uploads: Uploads, request: Request
) -> Response:
    """Takes a raw message as a mail relay or a provider's inbound hook hands it over, as
    the SMTP listener does: `outcome` is `started` (a new `incoming_email` conversation),
    `replied`, `auto_reply`, `bounced` (a bounce of a reply Threadline sent: `conversation`
    and `part` name that reply), `duplicate` (the Message-ID was received before) or
    `ignored` (`reason`: `loop`, `bounce`, `auto_reply`). A message may be as large as
    `THREADLINE_MAIL_MAX_MESSAGE_BYTES`; each of its files is held to the attachment limit
    (a larger one is left out and named in `body_json.email.refused_files`)."""
    app_id = caller.app(app)
    upload = uploads.files.get("message")
    if not isinstance(upload, UploadFile):
        raise InvalidParameter("message", "send the raw message as the multipart file `message`")
    settings = api_settings(request)
    max_message = mail_settings(request).mail_max_message_bytes
    raw = await upload.read(max_message + 1)
    if len(raw) > max_message:
        raise InvalidParameter("message", f"the message is larger than {max_message} bytes")
    limits = files.Limits(settings.attachment_max_bytes, settings.attachment_types)
    try:
        received = await inbound.receive(
            caller.db,
            storage_of(request),
            limits,
            mail_settings(request),
            app_id,
            raw,
            limiter=sender_limiter(request),
        )
    except inbound.SenderThrottled as exc:
        raise Throttled(exc.retry_after) from None
    return respond(ReceivedOut, received_out(received), context=caller.context)


def _address_out(address: inbound.Address) -> AddressOut:
    return {"id": address.id, "address": address.address, "default": address.default}


@router.get(
    "/apps/{app}/email/addresses",
    response_model=Envelope[list[AddressOut]],
    summary="The app's inbound e-mail addresses",
    openapi_extra=describe(ApiParams, body=False),
)
async def list_addresses(app: AppPath, caller: AdminCaller, request: Request) -> Response:
    """The default `<app key>@<THREADLINE_MAIL_DOMAIN>` first (the key is random, made
    once per app), then those added."""
    rows = await inbound.list_addresses(
        caller.db, caller.app(app), mail_settings(request).mail_domain
    )
    return respond(list[AddressOut], [_address_out(r) for r in rows], context=caller.context)


class NewAddressParams(ApiParams):
    address: str = Field(
        max_length=inbound.MAX_ADDRESS_CHARS,
        description="An address whose mail reaches Threadline, e.g. a forwarded support@ box.",
        examples=["support@example.com"],
    )


@router.post(
    "/apps/{app}/email/addresses",
    response_model=Envelope[AddressOut],
    summary="Add an inbound e-mail address",
    openapi_extra=describe(NewAddressParams, body=True),
)
async def add_address(
    app: AppPath, caller: ManagerCaller, p: Params[NewAddressParams], request: Request
) -> Response:
    """Mail to the address then reaches the app (an administrator's or owner's work)."""
    row = await inbound.add_address(
        caller.db, caller.app(app), p.address, mail_settings(request).mail_domain
    )
    return respond(AddressOut, _address_out(row), context=caller.context)


@router.delete(
    "/apps/{app}/email/addresses/{id}",
    response_model=Envelope[Empty],
    summary="Remove an inbound e-mail address",
    openapi_extra=describe(ApiParams, body=False),
)
async def remove_address(
    app: AppPath,
    address_id: Annotated[str, Path(alias="id", description="The address's id.")],
    caller: ManagerCaller,
) -> Response:
    await inbound.remove_address(caller.db, caller.app(app), path_id("id", address_id))
    return respond(Empty, {}, context=caller.context)
