"""What does a short autosave window cost? QoS-1 publish throughput into an offline
persistent session, with ``autosave_interval 1`` vs ``30`` vs ``persistence false``.

One lean asyncio publisher (raw MQTT 3.1.1, a window of in-flight QoS-1 messages, every
PUBACK awaited) on loopback fills the queue of one offline persistent subscriber up to
the outage docs/durability.md promises (360,000 events), so each autosave rewrites a
growing database; then it publishes other traffic for ``--steady-seconds`` while that
full backlog stays queued. Bounded: each fill stops after ``--seconds`` even if unfinished.

    .venv/bin/python -m bench.broker_autosave            # about 90 s
    .venv/bin/python -m bench.broker_autosave --messages 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import tempfile
import time
from pathlib import Path

from devkit.broker import Mosquitto

VARIANTS = {
    "autosave_interval 1": "autosave_interval 1\n",
    "autosave_interval 30": "autosave_interval 30\n",
    "persistence false": "persistence false\n",
}


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _length(len(body)) + body


def _connect(client_id: str, clean: bool) -> bytes:
    flags = 0x02 if clean else 0x00
    header = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    return _packet(0x10, header + _utf8(client_id))


async def _open(port: int, client_id: str, clean: bool):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_connect(client_id, clean))
    connack = await reader.readexactly(4)
    assert connack[0] == 0x20 and connack[3] == 0, connack
    return reader, writer


async def offline_session(port: int) -> None:
    reader, writer = await _open(port, "bench-offline-subscriber", clean=False)
    writer.write(_packet(0x82, struct.pack("!H", 1) + _utf8("track/#") + bytes([1])))
    suback = await reader.readexactly(5)
    assert suback[0] == 0x90 and suback[4] == 1, suback
    writer.write(bytes([0xE0, 0]))
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def payload(n: int) -> bytes:
    return (
        b'{"eventId":"bench-%08d","accountId":"%d","timestamp":"2026-11-28T12:00:00.000Z",'
        b'"data":"lat=52.%06d;lon=13.%06d"}' % (n, n % 7, n, n)
    )


async def publish(
    port: int, count: int, seconds: float, window: int, prefix: str = "track"
) -> list[tuple[float, int]]:
    """Publish up to ``count`` QoS-1 messages; return (time, acked so far) samples."""
    reader, writer = await _open(port, "bench-publisher", clean=True)
    slots = asyncio.Semaphore(window)
    acked = 0
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    deadline = start + seconds

    async def read_acks() -> None:
        nonlocal acked
        buffer = b""
        while acked < count:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buffer += chunk
            whole = len(buffer) // 4  # PUBACK = 40 02 id id
            assert buffer[: whole * 4 : 4] == b"\x40" * whole
            buffer = buffer[whole * 4 :]
            acked += whole
            for _ in range(whole):
                slots.release()

    async def sample() -> None:
        while True:
            samples.append((time.monotonic() - start, acked))
            await asyncio.sleep(0.1)  # a measurement cadence, not a wait for delivery

    acks = asyncio.create_task(read_acks())
    sampler = asyncio.create_task(sample())
    sent = 0
    while sent < count and time.monotonic() < deadline:
        await slots.acquire()
        sent += 1
        topic = _utf8(f"{prefix}/{sent % 7}")
        mid = struct.pack("!H", sent % 65535 + 1)
        writer.write(_packet(0x32, topic + mid + payload(sent)))
        if sent % 256 == 0:
            await writer.drain()
    await writer.drain()
    target = sent
    while acked < target:
        await asyncio.sleep(0.01)
    acks.cancel()
    sampler.cancel()
    samples.append((time.monotonic() - start, acked))
    writer.write(bytes([0xE0, 0]))
    writer.close()
    return samples


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rate(samples: list[tuple[float, int]], lo: int, hi: int) -> float:
    """Messages/s while the queue grew from ``lo`` to ``hi`` messages."""
    t_lo = next(t for t, n in samples if n >= lo)
    t_hi, n_hi = next(((t, n) for t, n in samples if n >= hi), samples[-1])
    n_lo = next(n for t, n in samples if n >= lo)
    return (n_hi - n_lo) / (t_hi - t_lo) if t_hi > t_lo else float("nan")


def longest_stall(samples: list[tuple[float, int]]) -> float:
    """Longest stretch (0.1 s resolution) without a single PUBACK: a save blocks the broker."""
    longest, since = 0.0, samples[0][0]
    for (_, n0), (t1, n1) in zip(samples, samples[1:], strict=False):
        if n1 == n0:
            longest = max(longest, t1 - since)
        else:
            since = t1
    return longest


def run(variant: str, extra: str, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-autosave-") as workdir:
        broker = Mosquitto(Path(workdir), extra=extra)
        broker.start()
        try:
            asyncio.run(offline_session(broker.port))
            samples = asyncio.run(publish(broker.port, args.messages, args.seconds, args.window))
            elapsed, acked = samples[-1]
            assert broker.process is not None
            rss = rss_mib(broker.process.pid)
            # Then other traffic (a topic nobody subscribes to) while the full backlog
            # sits in the queue, so that every autosave rewrites all of it.
            saves_before = broker.log().count("Saving in-memory database")
            steady = asyncio.run(
                publish(broker.port, 10**9, args.steady_seconds, args.window, "bench/steady")
            )
            steady_saves = broker.log().count("Saving in-memory database") - saves_before
            stopping = time.monotonic()
            broker.stop()  # SIGTERM: the final save of the whole queue
            stop_s = time.monotonic() - stopping
            db = broker.data_dir / "mosquitto.db"
            saves = broker.log().count("Saving in-memory database")
            half = acked // 2
            return {
                "variant": variant,
                "acked": acked,
                "seconds": round(elapsed, 2),
                "msg_per_s": round(acked / elapsed),
                "first_half_per_s": round(rate(samples, 1, half)),
                "second_half_per_s": round(rate(samples, half, acked)),
                "fill_stall_s": round(longest_stall(samples), 1),
                "steady_per_s": round(steady[-1][1] / steady[-1][0]),
                "steady_stall_s": round(longest_stall(steady), 1),
                "steady_saves": steady_saves,
                "saves": saves,
                "db_mib": round(db.stat().st_size / 2**20, 1) if db.exists() else 0.0,
                "rss_mib": round(rss, 1),
                "sigterm_stop_s": round(stop_s, 2),
            }
        finally:
            broker.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broker_autosave", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--messages", type=int, default=360_000)
    parser.add_argument("--seconds", type=float, default=25.0, help="cap per variant")
    parser.add_argument("--window", type=int, default=1000, help="QoS-1 messages in flight")
    parser.add_argument("--variant", choices=list(VARIANTS), action="append")
    parser.add_argument("--steady-seconds", type=float, default=8.0,
                        help="then other traffic, with the backlog queued")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.messages} messages of {len(payload(0))} B, "
          f"window {args.window}, 1 publisher, loopback")  # fmt: skip
    for _ in range(args.repeat):
        for variant in args.variant or list(VARIANTS):
            result = run(variant, VARIANTS[variant], args)
            print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()
