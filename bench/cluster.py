"""`python -m bench --cluster`: the 3-node RabbitMQ cluster beside the single Mosquitto.

Started by the bench on free ports under its work directory and stopped after, by pid
(tracker_api/ops/cluster.py). The tracker lists every node in TRACKER_MQTT_URL and the
counter every node too, on a persistent session:

1. full speed: req/s, p50/p99 and the zero-loss check, as the single broker's peak;
2. one node kill: a steady paced load (devkit/paced_load.py), SIGKILL of the node
   the tracker is connected to, then its restart: the 503/504 counts, the longest gap
   without a 200, and the events answered 200 the counter never received (must be 0).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from bench import archive
from bench.stack import (
    EVENT_PATH,
    REPO,
    Stack,
    counter_process,
    drain,
    metrics_text,
    read_status,
    say,
    seed,
    settle,
    tracker_process,
    wrk,
)
from devkit.net import free_port
from devkit.paced_load import PACE, Load, connected_node
from devkit.waiting import wait_until
from tracker_api.ops.cluster import Cluster, Layout, tools_missing
from tracker_api.ops.cluster_roles import provision

BEFORE, AFTER = 2.0, 3.0  # seconds of paced load before the kill, and after the restart


def measure_cluster(stack: Stack, seconds: float, connections: int) -> dict[str, Any]:

    why = tools_missing()
    if why:
        say(f"cluster: skipped ({why})")
        return {"skipped": why}
    workdir = stack.workdir
    layout = Layout.free(workdir / "rabbit")
    say("cluster: 3 RabbitMQ nodes (quorum queues), the tracker on all of them")
    with Cluster(layout, session_owner=REPO / "deploy" / "rabbitmq" / "plugin") as cluster:
        provision(layout, layout.nodes[0], stack.passwords)
        ports = [node.mqtt_port for node in cluster.nodes]
        database_url = f"sqlite:///{workdir / 'tracker-cluster.db'}"
        seed(database_url)
        port, status, ids = free_port(), workdir / "counter-cluster.json", workdir / "ids"
        base = f"http://127.0.0.1:{port}"
        # Device ingest as make cluster runs it: one elected consumer of ingest/+ (ADR 14).
        env = stack.serve_env(port, ports, database_url) | {"TRACKER_INGEST_MODE": "leader"}
        archive_url = database_url if stack.archive else None
        with (
            counter_process(stack, ports, status, workdir / "counter-cluster.log", ids) as counter,
            tracker_process(env, workdir / "tracker-cluster.log"),
        ):
            wrk(base + EVENT_PATH, 2, connections)  # warm-up
            say(f"cluster peak: wrk -c{connections} {seconds:.0f}s")
            lag_before = archive.lag_buckets(metrics_text(base))
            result = settle(
                base, wrk(base + EVENT_PATH, seconds, connections), status, archive_url, lag_before
            )

            victim = connected_node(base, cluster)
            if victim is None:
                raise RuntimeError("the tracker is connected to no node of the cluster")
            say(f"node kill: {PACE} req/s paced, SIGKILL {victim.short} (the tracker's node)")
            with Load(base, "kill") as load:
                wait_until(
                    lambda: load.ok_count() > PACE * BEFORE,
                    BEFORE * 5,
                    message="timed out waiting for the paced load",
                    error=click.ClickException,
                )
                cluster.kill(victim)
                killed_at = time.monotonic()
                cluster.restart(victim)
                restarted_s = time.monotonic() - killed_at
                wait_until(
                    lambda: time.monotonic() - killed_at > restarted_s + AFTER,
                    60,
                    message="timed out waiting for the paced load after the restart",
                    error=click.ClickException,
                )
            ok, unknown, statuses, gap = load.figures()
            received = drain(lambda: int(read_status(status)["unique"]), 1 << 62, 3.0)[0]
            counter.terminate()
            counter.wait(15)
        delivered = set(Path(ids).read_text().split())
    lost = ok - delivered
    result["node_kill"] = {
        "node": victim.short,
        "rate": PACE,
        "requests": len(load.answers),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "non_200": sum(count for code, count in statuses.items() if code != 200),
        "longest_gap_s": round(gap, 2),
        "restart_s": round(restarted_s, 1),
        "acknowledged": len(ok),
        "lost": len(lost),
        "answered_504_delivered": len(unknown & delivered),
        "delivered_total": received,
    }
    kill = result["node_kill"]
    say(f"  {kill['requests']} requests: {kill['statuses']}; longest gap without a 200 "
        f"{kill['longest_gap_s']} s; {kill['acknowledged']} answered 200, lost {kill['lost']}; "
        f"node back in {kill['restart_s']} s")  # fmt: skip
    return result
