"""Helpers shared by the routers: path ids, authors, answers about written parts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Path, Request
from starlette.responses import Response

from threadline.api.auth import Caller
from threadline.api.envelope import respond
from threadline.api.errors import InvalidParameter, PermissionDenied
from threadline.api.params import DEFAULT_USER as DEFAULT_USER
from threadline.api.params import ApiParams, P, params, parse_id
from threadline.api.schemas import Empty, PartRef
from threadline.apps.manage import default_sender, record_as_admin
from threadline.conversations.service import Outcome
from threadline.core.enums import AuthorKind, PartType
from threadline.core.model import Author, Part

DEFAULT_ADMIN = "default_admin"

ConversationId = Annotated[str, Path(alias="id", description="The conversation's id.")]
UserPath = Annotated[
    str,
    Path(
        alias="id",
        description="Threadline's user id, or with `by_user_id=true` the site's own id.",
    ),
]
AppPath = Annotated[str, Path(description="The app's id, or `$self_app` for the token's app.")]


def path_id(name: str, value: str) -> int:
    try:
        return parse_id(value)
    except ValueError as exc:
        raise InvalidParameter(name, str(exc)) from None


if TYPE_CHECKING:
    # For the type checker `Params[M]` is just `M`.
    Params = Annotated[P, "params"]
else:

    class Params:
        """`Params[M]` in a signature: the request's parameters validated as model `M`."""

        def __class_getitem__(cls, model: type[ApiParams]) -> Any:
            return Annotated[model, Depends(params(model))]


async def admin_author(caller: Caller, from_admin: str | None, *, record: bool = True) -> Author:
    """`from_admin`: an admin id, or `default_admin` (also when absent): the app's sender.

    An inbox session acts as its own admin: absent or naming that admin, it is the author;
    naming anyone else (another admin, or the app's sender) is refused. An API token may
    name any admin of the app, as the vendor API allows; with `record`, the audit log keeps
    which token wrote as which admin (the attempt, recorded before the write is tried)."""
    named = from_admin.strip() if from_admin is not None else ""
    own = caller.session_admin
    if own is not None:
        if named and (named == DEFAULT_ADMIN or path_id("from_admin", named) != own):
            raise PermissionDenied(
                f"from_admin: an inbox session acts as its own admin ({own}), never as another"
            )
        return Author(AuthorKind.ADMIN, own)
    if not named or named == DEFAULT_ADMIN:
        return Author(AuthorKind.SENDER, await default_sender(caller.db, caller.app_id))
    author = Author(AuthorKind.ADMIN, path_id("from_admin", named))
    if record:
        await record_as_admin(caller.db, caller.app_id, caller.actor, author.id)
    return author


def check_admin_form(from_admin: str | None) -> None:
    """A `from_admin` that goes unused (beside `from_user`) is still refused when malformed."""
    named = from_admin.strip() if from_admin is not None else ""
    if named and named != DEFAULT_ADMIN:
        path_id("from_admin", named)


def base_url(request: Request) -> str:
    return str(request.base_url)


def written_part(outcome: Outcome, *types: PartType) -> Part | None:
    """The part a write created (or, on a retry, the part the first request created)."""
    if outcome.duplicate:
        return outcome.parts[0] if outcome.parts else None
    for part in reversed(outcome.parts):
        if not types or part.type in types:
            return part
    return None


def part_ref(caller: Caller, part: Part | None) -> Response:
    """`{id, part_group}` of the written part, or empty data when nothing changed."""
    if part is None:
        return respond(PartRef | Empty, {}, context=caller.context)
    return respond(
        PartRef | Empty, {"id": part.id, "part_group": part.part_group}, context=caller.context
    )
