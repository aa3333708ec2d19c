"""The delivery state of a part sent out through a channel (an operator's e-mail reply): one
transition table, pure.

A part to send is `queued` (its Message-ID fixed) until the relay takes it (`sent`) or
refuses it for good, or every attempt failed (`failed`, with the relay's answer). A
temporary failure keeps it `queued` for the next attempt. A sent part may turn out `bounced`
later (a delivery status notification reported it undeliverable). A failed or bounced part
may be queued again (sent anew, with the same Message-ID). Nothing else: an illegal
transition raises `IllegalTransition`, it is never applied silently.
"""

from __future__ import annotations

from enum import StrEnum

from threadline.core.errors import DomainError


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    # sent, then reported undeliverable by the recipient's side (a DSN): final
    BOUNCED = "bounced"


class DeliveryStep(StrEnum):
    """What happened to a part on its way out."""

    # an attempt failed for now (the relay was away, or answered 4xx): try again later
    DEFERRED = "deferred"
    # the relay accepted the message (2xx)
    ACCEPTED = "accepted"
    # the relay refused it for good (5xx), or the last attempt failed
    REFUSED = "refused"
    # queued again after it failed (a resend)
    REQUEUED = "requeued"
    # reported undeliverable after it was sent (a bounce)
    BOUNCED = "bounced"


TRANSITIONS: dict[tuple[DeliveryState, DeliveryStep], DeliveryState] = {
    (DeliveryState.QUEUED, DeliveryStep.DEFERRED): DeliveryState.QUEUED,
    (DeliveryState.QUEUED, DeliveryStep.ACCEPTED): DeliveryState.SENT,
    (DeliveryState.QUEUED, DeliveryStep.REFUSED): DeliveryState.FAILED,
    (DeliveryState.FAILED, DeliveryStep.REQUEUED): DeliveryState.QUEUED,
    (DeliveryState.SENT, DeliveryStep.BOUNCED): DeliveryState.BOUNCED,
    (DeliveryState.BOUNCED, DeliveryStep.REQUEUED): DeliveryState.QUEUED,
}


class IllegalTransition(DomainError):
    """A delivery state change the table does not allow; nothing was changed."""

    error_name = "IllegalDeliveryTransition"
    status = 409

    def __init__(self, state: DeliveryState, step: DeliveryStep) -> None:
        super().__init__(f"a {state.value} part cannot be {step.value}")
        self.state = state
        self.step = step


def advance(state: DeliveryState, step: DeliveryStep) -> DeliveryState:
    """The state after `step`; `IllegalTransition` when the table has no such move."""
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise IllegalTransition(state, step) from None
