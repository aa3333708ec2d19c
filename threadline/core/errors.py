"""Typed domain errors. Each carries the vendor error name and HTTP status it maps to."""

from __future__ import annotations


class DomainError(Exception):
    """A refused operation. Nothing was changed."""

    error_name = "BadRequest"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(DomainError):
    """A parameter has the wrong type, range or format; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class NotFound(DomainError):
    """The object does not exist, or belongs to another app (indistinguishable by design)."""

    error_name = "NotFound"
    status = 404

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind


class LookupFailed(DomainError):
    """An external user id (the site's own) that no user has."""

    error_name = "LookupError"


class ReplyTooBig(DomainError):
    error_name = "ReplyTooBig"


class ConversationRemoved(InvalidParameter):
    """Writes to an erased conversation are refused: it has left every list."""

    def __init__(self, conversation_id: int) -> None:
        super().__init__("id", f"conversation {conversation_id} is removed")


class TagAlreadyAssigned(DomainError):
    error_name = "ConversationTagAlreadyAssigned"


class TagNotAssigned(DomainError):
    error_name = "ConversationTagIsNotAssigned"


class NotAllowed(DomainError):
    """The caller's role does not allow this (the token's scopes may; roles are a second
    gate)."""

    error_name = "PermissionDenied"
    status = 403
