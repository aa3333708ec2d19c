"""Storing, finding and purging attachments.

A file is stored before the part that carries it (the part needs its id), so a write that
is then refused, or turns out to be a retry, deletes the file it stored (`discard`).
"""

from __future__ import annotations

import fnmatch
import mimetypes
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from threadline.apps.service import utcnow
from threadline.attachments.storage import Storage
from threadline.core.errors import InvalidParameter, NotFound
from threadline.core.model import Attachment
from threadline.db.engine import Database
from threadline.db.schema import attachments

MAX_FILENAME_CHARS = 255
DEFAULT_FILENAME = "file"


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    types: Sequence[str]


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: int
    app_id: int
    conversation_id: int | None
    filename: str
    mime_type: str
    size: int
    storage_key: str
    created: datetime

    @property
    def attachment(self) -> Attachment:
        return Attachment(self.id, self.size, self.filename, self.mime_type, self.created)


def clean_filename(name: str | None) -> str:
    """The last path component, without control characters, at most 255 characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".")
    if not base:
        return DEFAULT_FILENAME
    if len(base) > MAX_FILENAME_CHARS:
        stem, dot, ext = base.rpartition(".")
        keep = MAX_FILENAME_CHARS - len(ext) - 1 if dot and len(ext) < 16 else MAX_FILENAME_CHARS
        base = (stem[:keep] + "." + ext) if dot and len(ext) < 16 else base[:keep]
    return base


_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def mime_type_of(declared: str | None, filename: str) -> str:
    """The declared type when it is a well-formed one, else a guess from the file name."""
    declared = (declared or "").split(";")[0].strip().lower()
    if not _MIME.fullmatch(declared):
        declared = ""
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or declared or "application/octet-stream"


def check(param: str, data: bytes, mime_type: str, limits: Limits) -> None:
    if not data:
        raise InvalidParameter(param, "the file is empty")
    if len(data) > limits.max_bytes:
        raise InvalidParameter(
            param, f"the file is larger than the limit of {readable_size(limits.max_bytes)}"
        )
    if not accepted_type(mime_type, limits):
        raise InvalidParameter(param, f"files of type {mime_type} are not accepted")


def check_extension(param: str, filename: str, extensions: Sequence[str]) -> None:
    """A file whose kind is named by its name's extension (case aside), one of `extensions`."""
    _, dot, extension = filename.rpartition(".")
    if not dot or extension.lower() not in extensions:
        raise InvalidParameter(
            param, f"the file name must end in one of: {', '.join('.' + e for e in extensions)}"
        )


def accepted_type(mime_type: str, limits: Limits) -> bool:
    return any(fnmatch.fnmatchcase(mime_type, pattern) for pattern in limits.types)


def readable_size(size: int) -> str:
    """`25 MB`, `300 KB`, `12 bytes` (binary units, as file managers show them)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return (
                f"{value:.0f} {unit}"
                if value >= 10 or value.is_integer()
                else f"{value:.1f} {unit}"
            )
    return f"{size} bytes"


async def store(
    db: Database,
    storage: Storage,
    app_id: int,
    *,
    data: bytes,
    filename: str,
    mime_type: str,
    conversation_id: int | None,
) -> StoredFile:
    """Save the bytes, then the row. The caller has validated them with `check`."""
    key = f"{app_id}/{uuid.uuid4().hex}"
    await storage.save(key, data)
    now = utcnow()
    try:
        async with db.write() as conn:
            result = await conn.execute(
                attachments.insert()
                .values(
                    app_id=app_id,
                    conversation_id=conversation_id,
                    filename=filename,
                    mime_type=mime_type,
                    size=len(data),
                    storage_key=key,
                    created=now,
                )
                .returning(attachments.c.id)
            )
            ident = int(result.scalar_one())
    except BaseException:
        await storage.delete(key)
        raise
    return StoredFile(ident, app_id, conversation_id, filename, mime_type, len(data), key, now)


async def discard(db: Database, storage: Storage, stored: StoredFile) -> None:
    """Forget a file whose part was never written."""
    async with db.write() as conn:
        await conn.execute(attachments.delete().where(attachments.c.id == stored.id))
    await storage.delete(stored.storage_key)


async def link(db: Database, stored: StoredFile, conversation_id: int) -> None:
    async with db.write() as conn:
        await conn.execute(
            update(attachments)
            .where(attachments.c.id == stored.id)
            .values(conversation_id=conversation_id)
        )


async def find(db: Database, app_id: int, attachment_id: int) -> StoredFile:
    query = select(attachments).where(
        attachments.c.id == attachment_id,
        attachments.c.app_id == app_id,
        attachments.c.removed.is_(None),
    )
    async with db.read() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("attachment", attachment_id)
    return StoredFile(
        row.id,
        row.app_id,
        row.conversation_id,
        row.filename,
        row.mime_type,
        row.size,
        row.storage_key,
        row.created,
    )


async def purge(
    db: Database, storage: Storage, app_id: int, conversation_ids: Sequence[int]
) -> None:
    """Delete the files of erased conversations (their parts already forgot them)."""
    if not conversation_ids:
        return
    async with db.write() as conn:
        rows = list(
            await conn.execute(
                select(attachments.c.id, attachments.c.storage_key).where(
                    attachments.c.app_id == app_id,
                    attachments.c.conversation_id.in_(list(conversation_ids)),
                    attachments.c.removed.is_(None),
                )
            )
        )
        if rows:
            await conn.execute(
                update(attachments)
                .where(attachments.c.id.in_([r.id for r in rows]))
                .values(removed=utcnow())
            )
    for row in rows:
        await storage.delete(row.storage_key)
