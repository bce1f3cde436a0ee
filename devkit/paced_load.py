"""A steady, paced HTTP load that records every answer: what a broker node kill costs
(tests/cluster and `python -m bench --cluster`)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx2 as httpx

from tracker_api.ops.cluster import Cluster, Node

PACE = 150  # requests per second: steady, well below any peak


@dataclass
class Load:
    """GET /1?data=… at ``rate``/s from a thread pool; each answer and eventId recorded."""

    base_url: str
    prefix: str
    rate: float = PACE
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _local: threading.local = field(default_factory=threading.local)
    _clients: list[httpx.Client] = field(default_factory=list)

    def _send(self, n: int) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.base_url, timeout=5)
            self._clients.append(client)
        # Our own eventId: what became of a 503 or a 504 is then known too.
        event_id = f"{self.prefix}-{n:06d}"
        try:
            response = client.get(
                "/1", params={"data": f"load {n}"}, headers={"Idempotency-Key": event_id}
            )
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        self.answers.append((time.monotonic(), status, event_id))

    def run(self) -> None:
        with ThreadPoolExecutor(16) as pool:
            start, n = time.monotonic(), 0
            while not self._stop.is_set():
                pool.submit(self._send, n)
                n += 1
                time.sleep(max(0.0, start + n / self.rate - time.monotonic()))

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for client in self._clients:
            client.close()

    def ok_count(self) -> int:
        return sum(1 for _, status, _ in self.answers if status == 200)

    def figures(self) -> tuple[set[str], set[str], Counter[int], float]:
        """eventIds answered 200 and 504, the count per status, the longest gap between 200s."""
        answers = sorted(self.answers)
        ok = {event_id for _, status, event_id in answers if status == 200}
        unknown = {event_id for _, status, event_id in answers if status == 504}
        times = [at for at, status, _ in answers if status == 200]
        gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
        return ok, unknown, Counter(status for _, status, _ in answers), gap


def connected_node(base_url: str, cluster: Cluster) -> Node | None:
    """The node the tracker at ``base_url`` says it is connected to (None: to none)."""
    status = httpx.get(base_url + "/readyz", timeout=2).json()["broker_status"]
    match = re.fullmatch(r"connected to 127\.0\.0\.1:(\d+)", status)
    ports = {node.mqtt_port: node for node in cluster.nodes}
    return ports.get(int(match[1])) if match else None
