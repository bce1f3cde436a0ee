"""Ingest's work stays bounded while the database is missing (no broker needed)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker_api.errors import DatabaseUnavailable, TrackerError
from tracker_api.events import EventIds
from tracker_api.ingest import Ingest, decode
from tracker_api.mqtt import Message


class FlakyService:
    """Fails every attempt until ``healthy``; records how many attempts overlap."""

    max_data_bytes = 4096

    def __init__(self) -> None:
        self.ids = EventIds()
        self.healthy = False
        self.running = self.most_running_after_first_wave = self.calls = 0
        self.tracked: list[str] = []

    async def track(self, account_id: str, data: str, event_id: str, source: str) -> bytes:
        self.calls += 1
        self.running += 1
        if self.calls > 40:
            self.most_running_after_first_wave = max(
                self.most_running_after_first_wave, self.running
            )
        try:
            await asyncio.sleep(0.01)
            if not self.healthy:
                raise DatabaseUnavailable()
            self.tracked.append(data)
            return b""
        finally:
            self.running -= 1

    def count(self, source: str, outcome: str) -> None:
        pass


class FakeClient:
    connected = True

    def __init__(self) -> None:
        self.acked: list[int] = []

    def holds(self, message: Message) -> bool:
        return True

    def ack(self, message: Message) -> bool:
        self.acked.append(message.mid)
        return True


def test_qos1_messages_wait_unacknowledged_with_a_bounded_number_of_retries() -> None:
    service, client = FlakyService(), FakeClient()

    async def scenario() -> None:
        ingest = Ingest(service, client, max_retrying=4)  # type: ignore[arg-type]
        for mid in range(1, 41):
            ingest.handle(Message("ingest/1", f"m{mid}".encode(), 1, False, mid))
        while service.calls < 100:
            await asyncio.sleep(0.01)
        assert client.acked == []  # the broker keeps them meanwhile
        service.healthy = True
        await ingest.drain(timeout=10)

    asyncio.run(scenario())
    assert 1 <= service.most_running_after_first_wave <= 4
    assert sorted(client.acked) == list(range(1, 41))


def test_qos0_messages_beyond_the_pending_bound_are_dropped_at_once() -> None:
    service, client = FlakyService(), FakeClient()
    service.healthy = True

    async def scenario() -> None:
        ingest = Ingest(service, client, max_pending_qos0=5)  # type: ignore[arg-type]
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
