"""Ingest without a broker: decoding, the retry loop and its bounds, against a fake
service and a fake acknowledger."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker_api.consumers import ingest
from tracker_api.consumers.ingest import Ingest, decode
from tracker_api.errors import AccountNotFound, DatabaseUnavailable, TrackerError
from tracker_api.mqtt import Message
from tracker_api.service.events import EventIds


class FlakyService:
    """Fails every attempt until ``healthy``; records how many retries (attempts after a
    message's first) overlap."""

    max_data_bytes = 4096

    def __init__(self) -> None:
        self.ids = EventIds()
        self.healthy = False
        self.retrying = self.most_retrying = self.calls = 0
        self.seen: set[str] = set()
        self.tracked: list[str] = []

    async def track(self, account_id: str, data: str, event_id: str, source: str) -> bytes:
        self.calls += 1
        retry = data in self.seen
        self.seen.add(data)
        self.retrying += retry
        self.most_retrying = max(self.most_retrying, self.retrying)
        try:
            await asyncio.sleep(0.01)
            if not self.healthy:
                raise DatabaseUnavailable()
            self.tracked.append(data)
            return b""
        finally:
            self.retrying -= retry

    def count(self, source: str, outcome: str) -> None:
        pass


class FakeAcknowledger:
    """The connection as ingest sees it; ``holding=False`` is a connection that dropped."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.holding = True

    def holds(self, message: Message) -> bool:
        return self.holding

    def ack(self, message: Message) -> bool:
        self.acked.append(message.mid)
        return True


def test_qos1_messages_wait_unacknowledged_with_a_bounded_number_of_retries() -> None:
    service, client = FlakyService(), FakeAcknowledger()

    async def scenario() -> None:
        ingest = Ingest(service, client, max_retrying=4)
        for mid in range(1, 41):
            ingest.handle(Message("ingest/1", f"m{mid}".encode(), 1, False, mid))

        async def retried_a_while() -> None:
            while service.calls < 100:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(retried_a_while(), timeout=10)
        assert client.acked == []  # the broker keeps them meanwhile
        service.healthy = True
        await ingest.drain(timeout=10)

    asyncio.run(scenario())
    assert 1 <= service.most_retrying <= 4
    assert sorted(client.acked) == list(range(1, 41))


def test_qos0_messages_beyond_the_pending_bound_are_dropped_at_once() -> None:
    service, client = FlakyService(), FakeAcknowledger()
    service.healthy = True

    async def scenario() -> None:
        ingest = Ingest(service, client, max_pending_qos0=5)
        for i in range(20):
            ingest.handle(Message("ingest/1", f"m{i}".encode(), 0, False))
        await ingest.drain(timeout=5)

    asyncio.run(scenario())
    assert service.tracked == [f"m{i}" for i in range(5)]


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_the_decoder_answers_any_payload_with_data_or_a_refusal(payload: bytes) -> None:
    try:
        data, event_id = decode(payload, 256)
    except TrackerError as error:
        assert error.status in (413, 422)
    else:
        assert isinstance(data, str)
        assert event_id is None or isinstance(event_id, str)


@given(data=st.text(max_size=300), event_id=st.none() | st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_a_json_device_message_decodes_to_its_data_and_event_id(
    data: str, event_id: str | None
) -> None:
    document = {"data": data} if event_id is None else {"data": data, "eventId": event_id}
    try:
        payload = orjson.dumps(document)
    except orjson.JSONEncodeError:  # lone surrogates are not UTF-8: no device can send them
        return

    assert decode(payload, 300) == (data, event_id)


@pytest.mark.parametrize("text", ["temperature=21.5", "{not json", ""])
def test_raw_text_is_the_data_itself(text: str) -> None:
    assert decode(text.encode(), 64) == (text, None)


class ScriptedService(FlakyService):
    """Fails with the errors in ``failures``, in turn, then tracks; records every attempt."""

    def __init__(self, *failures: TrackerError) -> None:
        super().__init__()
        self.failures = list(failures)
        self.attempts: list[tuple[str, str, str]] = []
        self.counted: list[str] = []

    async def track(self, account_id: str, data: str, event_id: str, source: str) -> bytes:
        self.attempts.append((account_id, data, event_id))
        if self.failures:
            raise self.failures.pop(0)
        return b""

    def count(self, source: str, outcome: str) -> None:
        self.counted.append(outcome)


def run(service: ScriptedService, acks: FakeAcknowledger, *messages: Message) -> None:
    async def scenario() -> None:
        consumer = Ingest(service, acks)
        for message in messages:
            consumer.handle(message)
        await consumer.drain(timeout=5)
        assert not consumer.busy

    asyncio.run(scenario())


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "RETRY_FIRST", 0.001)
    monkeypatch.setattr(ingest, "RETRY_CAP", 0.002)


def test_a_message_is_retried_under_one_event_id_and_acknowledged_once_tracked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, acks = ScriptedService(*[DatabaseUnavailable()] * 6), FakeAcknowledger()
    run(service, acks, Message("ingest/7", b'{"data": "d"}', 1, False, 9))

    assert len(service.attempts) == 7
    assert len({event_id for _, _, event_id in service.attempts}) == 1
    assert {(account, data) for account, data, _ in service.attempts} == {("7", "d")}
    assert acks.acked == [9]
    assert caplog.text.count("ingest from ingest/7 retrying") == 1


def test_a_message_whose_connection_dropped_is_left_for_the_broker_to_redeliver() -> None:
    service, acks = ScriptedService(DatabaseUnavailable()), FakeAcknowledger()
    acks.holding = False
    run(service, acks, Message("ingest/1", b"x", 1, False, 3))

    assert len(service.attempts) == 1
    assert acks.acked == []


def test_a_qos0_message_is_dropped_when_the_service_is_unavailable() -> None:
    service, acks = ScriptedService(DatabaseUnavailable()), FakeAcknowledger()
    run(service, acks, Message("ingest/1", b"x", 0, False))

    assert len(service.attempts) == 1


def test_refused_and_undecodable_messages_are_acknowledged_and_never_retried() -> None:
    service, acks = ScriptedService(AccountNotFound()), FakeAcknowledger()
    run(
        service,
        acks,
        Message("ingest/999", b"unknown account", 1, False, 1),
        Message("ingest/1", b"\xff not utf-8", 1, False, 2),
        Message("ingest/1", b'{"data": 5}', 1, False, 3),
    )

    assert [data for _, data, _ in service.attempts] == ["unknown account"]
    assert sorted(acks.acked) == [1, 2, 3]
    assert service.counted == ["invalid", "invalid"]  # the service counts its own refusal


def test_a_retained_copy_is_acknowledged_and_dropped_unprocessed() -> None:
    service, acks = ScriptedService(), FakeAcknowledger()
    run(service, acks, Message("ingest/1", b"old", 1, True, 5))

    assert service.attempts == []
    assert acks.acked == [5]
