"""The delivery state of a sent part: one transition table; every other move is refused."""

from __future__ import annotations

import itertools

import pytest

from threadline.core.delivery import (
    TRANSITIONS,
    DeliveryState,
    DeliveryStep,
    IllegalTransition,
    advance,
)
from threadline.core.errors import DomainError

Q, S, F, B = (
    DeliveryState.QUEUED,
    DeliveryState.SENT,
    DeliveryState.FAILED,
    DeliveryState.BOUNCED,
)


def test_the_table() -> None:
    assert TRANSITIONS == {
        (Q, DeliveryStep.DEFERRED): Q,
        (Q, DeliveryStep.ACCEPTED): S,
        (Q, DeliveryStep.REFUSED): F,
        (F, DeliveryStep.REQUEUED): Q,
        (S, DeliveryStep.BOUNCED): B,
        (B, DeliveryStep.REQUEUED): Q,
    }


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (state, step)
        for state, step in itertools.product(DeliveryState, DeliveryStep)
        if (state, step) not in TRANSITIONS
    ],
)
def test_every_other_move_is_a_typed_error(state: DeliveryState, step: DeliveryStep) -> None:
    with pytest.raises(IllegalTransition) as refused:
        advance(state, step)
    assert isinstance(refused.value, DomainError)
    assert (refused.value.state, refused.value.step) == (state, step)
    assert refused.value.message == f"a {state.value} part cannot be {step.value}"


def test_a_part_is_accepted_at_most_once_per_time_it_was_queued() -> None:
    """Over every sequence of up to six steps: `sent` leads nowhere but to `bounced`, and
    only a requeue (a resend asked for) leads back to `queued`, so the relay accepts a part
    at most once per time it was queued."""
    most = 0
    for steps in itertools.chain.from_iterable(
        itertools.product(DeliveryStep, repeat=n) for n in range(7)
    ):
        state = Q
        accepted = requeued = 0
        for step in steps:
            try:
                state = advance(state, step)
            except IllegalTransition:
                continue
            accepted += step is DeliveryStep.ACCEPTED
            requeued += step is DeliveryStep.REQUEUED
        assert accepted <= requeued + 1, steps
        most = max(most, accepted)
    assert most >= 2  # sent, bounced, requeued, sent again: the bound was reached
