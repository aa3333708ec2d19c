"""Realtime channels: the vendor's names, who may subscribe, and which events each carries.

A channel is `<name>.<app>` (the operators' view of the whole app) or `<name>.<app>.<user>`
(one user's conversations, in the user's projection: no notes, no system parts, no
operators' fields), or `ping`. `<app>` may be `$self_app`. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from threadline.core import eventlog
from threadline.core.enums import PartType

# Up to this many channels in one connection (the vendor's limit).
MAX_CHANNELS = 50
PING = "ping"
TYPING = "conversation_typing"

# Channel name -> the log event types it carries (None: every type).
_APP_CHANNELS: dict[str, frozenset[str] | None] = {
    "conversation": None,
    "conversation_started_user": frozenset({eventlog.STARTED}),
    "conversation_reply": frozenset({eventlog.REPLY}),
    "conversation_read": frozenset({eventlog.READ}),
    "conversation_assigned": frozenset({eventlog.PART_EVENT[PartType.ASSIGNED]}),
    "conversation_closed": frozenset({eventlog.PART_EVENT[PartType.CLOSED]}),
    "conversation_tag_added": frozenset({eventlog.PART_EVENT[PartType.TAG_ADDED]}),
    "conversation_tag_deleted": frozenset({eventlog.PART_EVENT[PartType.TAG_DELETED]}),
    TYPING: frozenset(),
}
# Channels that also exist per user.
_USER_CHANNELS = frozenset({"conversation", "conversation_reply", "conversation_read", TYPING})

READ_SCOPE = "conversations-read"
AS_USER_SCOPE = "as-user"


class ChannelRefused(Exception):
    """The channel is unknown, malformed or not allowed for the token (code 3403)."""


@dataclass(frozen=True, slots=True)
class Channel:
    """One subscription: `name` as the client wrote it, what it parsed to."""

    name: str
    kind: str
    app_id: int | None = None
    user_id: int | None = None

    def carries(self, event_type: str, data: dict[str, Any]) -> bool:
        """Whether a log event of this type (operators' view payload) belongs here."""
        if self.kind in (PING, TYPING):
            return False
        types = _APP_CHANNELS[self.kind]
        if types is not None and event_type not in types:
            return False
        if self.kind == "conversation_started_user":
            return data.get("started_by") == "user"
        return True


def _id(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 2**63:
        raise ChannelRefused(f"{text!r} is not an id")
    return int(text)


def parse(path: str, token_app: int, scopes: frozenset[str]) -> list[Channel]:
    """The channels of a `/websocket/<a>/<b>...` path, checked against the token."""
    names = [n for n in path.split("/") if n]
    if not names:
        raise ChannelRefused("no channel")
    if len(names) > MAX_CHANNELS:
        raise ChannelRefused(f"at most {MAX_CHANNELS} channels")
    channels: list[Channel] = []
    for name in dict.fromkeys(names):  # a repeated channel counts once
        if name == PING:
            channels.append(Channel(name, PING))
            continue
        kind, *rest = name.split(".")
        if kind not in _APP_CHANNELS or len(rest) not in (1, 2):
            raise ChannelRefused(f"unknown channel {name!r}")
        app_id = token_app if rest[0] == "$self_app" else _id(rest[0])
        if app_id != token_app:
            raise ChannelRefused(f"channel {name!r} is another app's")
        if len(rest) == 2:
            if kind not in _USER_CHANNELS:
                raise ChannelRefused(f"{kind} has no per-user channel")
            if not scopes & {READ_SCOPE, AS_USER_SCOPE}:
                raise ChannelRefused(f"{name!r} needs the {READ_SCOPE} or {AS_USER_SCOPE} scope")
            channels.append(Channel(name, kind, app_id, _id(rest[1])))
        else:
            if READ_SCOPE not in scopes:
                raise ChannelRefused(f"{name!r} needs the {READ_SCOPE} scope")
            channels.append(Channel(name, kind, app_id))
    return channels


def parse_for_user(path: str, app_id: int, user_id: int) -> list[Channel]:
    """The channels of a path for a chat widget visitor, who acts as one user of one app:
    only that user's own channels (and `ping`); anything else is refused."""
    channels = parse(path, app_id, frozenset({AS_USER_SCOPE}))
    for channel in channels:
        if channel.kind != PING and channel.user_id != user_id:
            raise ChannelRefused(f"{channel.name!r} is not this visitor's channel")
    return channels
