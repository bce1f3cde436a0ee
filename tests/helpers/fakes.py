"""Test doubles behind the service's small interfaces."""

from __future__ import annotations

from tracker_api.errors import PublishFailed, PublishOutcomeUnknown, TrackerError


class FakePublisher:
    """Records what would be published; can be told to refuse, or to time out after
    publishing (the broker got it, its acknowledgement did not come back)."""

    def __init__(self) -> None:
        self.connected = True
        self.refuse = False
        self.time_out = False
        self.published: list[tuple[str, bytes]] = []
        self.started = self.stopped = False

    @property
    def broker_status(self) -> str:
        return "connected" if self.connected else "unreachable: fake broker down"

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.refuse or not self.connected:
            raise PublishFailed()
        self.published.append((topic, payload))
        if self.time_out:
            raise PublishOutcomeUnknown()

    async def publish_many(self, topic: str, payloads: list[bytes]) -> list[TrackerError | None]:
        outcomes: list[TrackerError | None] = []
        for payload in payloads:
            try:
                await self.publish(topic, payload)
                outcomes.append(None)
            except TrackerError as error:
                outcomes.append(error)
        return outcomes
