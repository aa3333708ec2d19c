"""Roles of an app's admins, and who may manage whom. Pure rules: no I/O.

Three roles, from most to least powerful:

- `owner`: everything, including managing owners and administrators and reading the audit
  log. An app always keeps at least one owner.
- `administrator`: manages the app (operators, tokens, webhooks, channels, the widget
  secret, erasing users), but not owners or administrators.
- `operator`: inbox work only: conversations, users' cards, the lists of admins and
  channels.

An inbox session acts with its admin's role. An API token acts with the role of the admin
who issued it (read anew as that admin's role changes), and dies with that admin's
removal; a token issued from the command line (`threadline app create`, `threadline token
create`) has no issuing admin and acts as an owner: whoever runs the server owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from threadline.core.errors import InvalidParameter, NotAllowed


class Role(StrEnum):
    OWNER = "owner"
    ADMINISTRATOR = "administrator"
    OPERATOR = "operator"


_RANK = {Role.OPERATOR: 0, Role.ADMINISTRATOR: 1, Role.OWNER: 2}


def parse_role(value: str, param: str = "role") -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise InvalidParameter(param, f"one of {', '.join(r.value for r in Role)}") from None


def at_least(role: Role, needed: Role) -> bool:
    return _RANK[role] >= _RANK[needed]


class ActorKind(StrEnum):
    ADMIN = "admin"  # an admin's inbox session
    TOKEN = "token"  # an API token  # noqa: S105
    CLI = "cli"  # the `threadline` command, run by whoever runs the server


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something: recorded in the audit log, and checked against the rules below.

    `admin_id` is the session's admin (kind ADMIN) or the admin who issued the token (kind
    TOKEN; None for tokens issued from the command line); `token_id` the token used.
    """

    kind: ActorKind
    role: Role
    admin_id: int | None = None
    token_id: int | None = None


CLI = Actor(ActorKind.CLI, Role.OWNER)


def need(actor: Actor, role: Role, what: str) -> None:
    if not at_least(actor.role, role):
        raise NotAllowed(f"{what} needs the {role.value} role (yours: {actor.role.value})")


def check_manage_admin(actor: Actor, target: Role) -> None:
    """May `actor` add, remove or change an admin who has (or gets) role `target`?

    Administrators manage operators; only owners manage administrators and owners."""
    need(actor, Role.ADMINISTRATOR, "managing admins")
    if target is not Role.OPERATOR:
        need(actor, Role.OWNER, f"managing an {target.value}")


def check_manage_token(actor: Actor, token_role: Role) -> None:
    """May `actor` revoke or re-own a token that acts with `token_role`? Not one that acts
    with more power than the actor has (an administrator cannot revoke an owner's token)."""
    need(actor, Role.ADMINISTRATOR, "managing tokens")
    if not at_least(actor.role, token_role):
        raise NotAllowed(f"this token acts as an {token_role.value}, above your role")


def check_keeps_an_owner(owners_left: int) -> None:
    """An app keeps at least one owner: the last one cannot be removed or demoted."""
    if owners_left < 1:
        raise NotAllowed("the app's last owner cannot be removed or demoted")
