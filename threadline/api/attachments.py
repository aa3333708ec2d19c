"""Files sent with requests (`attachment` on reply, `file` on startconversation) and the
endpoint that serves them back to holders of a token of the same app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from threadline.api.auth import READ, Caller, require
from threadline.api.common import path_id
from threadline.api.errors import InvalidParameter
from threadline.api.params import ApiParams, RawParams, cached_raw_params, describe
from threadline.api.state import api_settings, storage_of
from threadline.attachments import service as files
from threadline.core.errors import NotFound
from threadline.db.engine import Database

router = APIRouter(prefix="/ext", tags=["attachments"])

Uploads = Annotated[RawParams, Depends(cached_raw_params)]
# A file belongs to a conversation (maybe to an internal note): reading it is reading the
# conversation, which takes the read scope (a write-only or user-only token may not).
FileReader = Annotated[Caller, Depends(require(READ))]

# Shown inline by browsers; everything else (SVG and HTML included) is a download.
_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


async def accept_upload(
    request: Request,
    caller: Caller,
    raw: RawParams,
    param: str,
    filename: str | None,
    conversation_id: int | None,
    *,
    max_bytes: int | None = None,
    extensions: Sequence[str] | None = None,
) -> files.StoredFile | None:
    """Validate and store the file sent as `param`, if any (see `store_upload`)."""
    return await store_upload(
        request,
        caller.db,
        caller.app_id,
        raw,
        param,
        filename,
        conversation_id,
        max_bytes=max_bytes,
        extensions=extensions,
    )


async def store_upload(
    request: Request,
    db: Database,
    app_id: int,
    raw: RawParams,
    param: str,
    filename: str | None,
    conversation_id: int | None,
    *,
    max_bytes: int | None = None,
    extensions: Sequence[str] | None = None,
) -> files.StoredFile | None:
    """Validate the file sent as `param` and store it for `app_id`; None when no file was
    sent. Within the deployment's size limit (and `max_bytes`, when given); of the
    deployment's accepted MIME types, or, when `extensions` is given, named with one of
    those extensions."""
    upload = raw.files.get(param)
    if upload is None:
        if isinstance(raw.values.get(param), str) and raw.values[param]:
            raise InvalidParameter(param, "must be a file (send a multipart form)")
        return None
    assert isinstance(upload, UploadFile)
    settings = api_settings(request)
    limit = settings.attachment_max_bytes if max_bytes is None else max_bytes
    limits = files.Limits(
        min(limit, settings.attachment_max_bytes),
        ("*",) if extensions is not None else settings.attachment_types,
    )
    name = files.clean_filename(filename or upload.filename)
    if extensions is not None:
        files.check_extension(param, name, extensions)
    data = await upload.read(limits.max_bytes + 1)
    mime_type = files.mime_type_of(upload.content_type, name)
    files.check(param, data, mime_type, limits)
    return await files.store(
        db,
        storage_of(request),
        app_id,
        data=data,
        filename=name,
        mime_type=mime_type,
        conversation_id=conversation_id,
    )


def file_response(stored: files.StoredFile, data: bytes) -> Response:
    """The file's bytes: pictures shown inline, anything else (SVG and HTML included) a
    download, never sniffed, sandboxed if opened."""
    disposition = "inline" if stored.mime_type in _INLINE_TYPES else "attachment"
    return Response(
        data,
        media_type=stored.mime_type,
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(stored.filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=3600",
        },
    )


@router.get(
    "/attachments/{id}",
    summary="Download an attachment",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file."}},
    openapi_extra=describe(ApiParams, body=False),
)
async def download(
    attachment_id: Annotated[str, Path(alias="id", description="The attachment's id.")],
    caller: FileReader,
    request: Request,
) -> Response:
    """A token of the attachment's app with the `conversations-read` scope may fetch it
    (`auth_token` works in a link)."""
    stored = await files.find(caller.db, caller.app_id, path_id("id", attachment_id))
    data = await storage_of(request).load(stored.storage_key)
    if data is None:
        raise NotFound("attachment", stored.id)
    return file_response(stored, data)
