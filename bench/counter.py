"""A lean delivery counter: subscribes to track/# (QoS 1, persistent session) and keeps
the set of eventIds it received, writing ``{"unique": n, "messages": m}`` to a status
file every 100 ms. Run by ``python -m bench``; stops on SIGTERM. On a cluster, ``--port``
once per node: it fails over between them as the tracker does.

    python -m bench.counter --port 1883 --username reader --status /tmp/count.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from tracker_api.mqtt import BrokerAddress, Message, MqttClient
from tracker_contract.ids import client_id_for


async def count(args: argparse.Namespace) -> None:
    seen: set[bytes] = set()
    messages = 0
    status = Path(args.status)

    def on_message(message: Message) -> None:
        nonlocal messages
        messages += 1
        # The eventId is the first field the tracker writes: no full JSON parse needed.
        start = message.payload.find(b'"eventId":"') + 11
        seen.add(message.payload[start : message.payload.find(b'"', start)])
        client.ack(message)

    client = MqttClient(
        [
            BrokerAddress(port=port, username=args.username, password=args.password)
            for port in args.port
        ],  # fmt: skip
        args.client_id or client_id_for(args.username, "bench-counter"),
        clean_session=False,
        subscriptions=[("track/#", 1)],
        on_message=on_message,
    )
    client.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        temporary = status.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"unique": len(seen), "messages": messages, "connected": client.connected})
        )
        os.replace(temporary, status)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass
    await client.stop()
    if args.ids:
        Path(args.ids).write_bytes(b"".join(event_id + b"\n" for event_id in seen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--port", type=int, action="append", required=True, help="a node (repeat for each)"
    )
    parser.add_argument("--username")
    parser.add_argument("--password", default=os.environ.get("BENCH_COUNTER_PASSWORD"))
    parser.add_argument("--client-id", help="default <username>:bench-counter")
    parser.add_argument("--status", required=True)
    parser.add_argument("--ids", help="on SIGTERM, write every eventId received here")
    import uvloop

    uvloop.run(count(parser.parse_args()))


if __name__ == "__main__":
    main()
