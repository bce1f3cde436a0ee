"""The session's transition table: the moves it allows, and that every other one is refused.
(The paths a real connection takes through it are in test_session.py.)"""

from __future__ import annotations

from itertools import product

import pytest

from subscriber.session import TRANSITIONS, ConnectOptions, IllegalTransition, Session, State

WIPING, CONNECTING, SUBSCRIBING, HOLDING = (
    State.WIPING, State.CONNECTING, State.SUBSCRIBING, State.HOLDING,
)  # fmt: skip
HANDING_OVER, CATCHING_UP, LIVE, STOPPING, REFUSED = (
    State.HANDING_OVER, State.CATCHING_UP, State.LIVE, State.STOPPING, State.REFUSED,
)  # fmt: skip

LEGAL = {
    (WIPING, CONNECTING): "the clean connection ended, however it ended",
    (WIPING, REFUSED): "the CONNACK refused the login, client id or protocol",
    (WIPING, STOPPING): "Ctrl-C",
    (CONNECTING, SUBSCRIBING): "CONNACK accepted, no catch-up due",
    (CONNECTING, HOLDING): "CONNACK accepted, a catch-up due",
    (CONNECTING, REFUSED): "the CONNACK refused the login, client id or protocol",
    (CONNECTING, STOPPING): "Ctrl-C",
    (SUBSCRIBING, LIVE): "SUBACK",
    (SUBSCRIBING, CONNECTING): "connection lost",
    (SUBSCRIBING, REFUSED): "SUBACK refused, or taken over",
    (SUBSCRIBING, STOPPING): "Ctrl-C",
    (HOLDING, HANDING_OVER): "SUBACK: the broker queues from now on",
    (HOLDING, CONNECTING): "connection lost before the SUBACK: no catch-up yet",
    (HOLDING, REFUSED): "SUBACK refused, or taken over",
    (HOLDING, STOPPING): "Ctrl-C",
    (HANDING_OVER, CATCHING_UP): "the batch ended: leave the broker",
    (HANDING_OVER, REFUSED): "taken over in the SUBACK's batch",
    (CATCHING_UP, CONNECTING): "the catch-up is done (or stopped): back to the broker",
    (LIVE, CONNECTING): "connection lost",
    (LIVE, REFUSED): "taken over",
    (LIVE, STOPPING): "Ctrl-C, --count, --timeout, a closed pipe",
    (REFUSED, STOPPING): "a stop request came before the refusal was raised",
}
"""Every legal move, and what makes it."""


class Ignore:
    def on_message(self, topic: str, payload: bytes | bytearray) -> bool:
        return True

    def on_batch_end(self) -> bool:
        return True

    def on_tick(self, now: float) -> None:
        pass


@pytest.mark.parametrize(
    ("before", "after"),
    list(product(State, State)),
    ids=lambda state: state.value,
)
def test_a_move_is_legal_exactly_when_the_table_has_it(before: State, after: State) -> None:
    assert before.may_become(after) is ((before, after) in LEGAL)


def test_the_table_has_every_state() -> None:
    assert set(TRANSITIONS) == set(State)


def test_every_state_is_reachable_and_stopping_is_the_end() -> None:
    reached, todo = set(), [WIPING, CONNECTING]
    while todo:
        state = todo.pop()
        reached.add(state)
        todo.extend(TRANSITIONS[state] - reached)
    assert reached == set(State)
    assert not TRANSITIONS[STOPPING]


@pytest.mark.parametrize(("clean", "start"), [(False, CONNECTING), (True, WIPING)])
def test_a_session_starts_wiping_only_with_clean(clean: bool, start: State) -> None:
    assert Session(ConnectOptions(clean=clean), Ignore()).state is start


def test_an_illegal_move_raises_and_leaves_the_state_as_it_was() -> None:
    tail = Session(ConnectOptions(), Ignore())
    with pytest.raises(IllegalTransition, match="from connecting to live") as illegal:
        tail._become(LIVE)
    assert (illegal.value.current, illegal.value.wanted) == (CONNECTING, LIVE)
    assert tail.state is CONNECTING
    tail._become(HOLDING)
    assert tail.state is HOLDING
