"""HAProxy in front of tracker instances, as `make cluster` and the chaos tests run it.

A tracker counts as up while GET /readyz answers 200 (broker connected, database
answering): checked every second, down after two failures, up again after one success.
A request whose connection fails, or that gets no answer at all, is retried on another
instance: an instance killed mid-request costs a retry rather than an error. Such an event
may then be published twice; a client that must not cause that sends an Idempotency-Key
(ADR 11), which makes both copies one eventId.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")


def haproxy_config(port: int, backends: Sequence[int], header: str) -> str:
    """A configuration listening on 127.0.0.1:``port`` for trackers on ``backends``."""
    servers = [
        f"    server tracker-{i} 127.0.0.1:{backend} check inter 1s fall 2 rise 1"
        for i, backend in enumerate(backends, 1)
    ]
    return "\n".join(
        [
            f"# {header}",
            "global",
            "    maxconn 4096",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    retry-on conn-failure empty-response",
            "    retries 2",
            # Every retry on another instance: by default HAProxy retries the one that
            # just failed, and a killed tracker then costs a 503 per request it was sent.
            "    option redispatch 1",
            # The client's address for the trackers that trust this balancer
            # (TRACKER_FORWARDED_ALLOW_IPS): failed logins are counted per client.
            "    option forwardfor",
            "frontend api",
            f"    bind 127.0.0.1:{port}",
            # Whatever a client says it forwarded is dropped: only ours is believed.
            "    http-request del-header X-Forwarded-For",
            "    default_backend trackers",
            "backend trackers",
            "    balance roundrobin",
            "    option httpchk GET /readyz",
            *servers,
            "",
        ]
    )
