"""A RabbitMQ cluster of several nodes on one machine, run from a base directory.

Used by `make cluster` (``scripts/cluster.py``), the cluster tests and the benchmark. Each
node has its own node name (``rabbit-N@localhost``), ports, data and log directories under
the base directory; all share one Erlang cookie (a ``HOME`` holding ``.erlang.cookie``) and
one private epmd on its own port, so a cluster never meets another one on the machine (a
test run next to `make cluster`, or the Debian package's node). Everything listens on
127.0.0.1 only.

The nodes run Debian's rabbitmq-server 3.10 with its MQTT plugin, configured so that each
persistent MQTT session is a quorum (Raft-replicated) queue: a QoS-1 PUBACK then means a
majority of the nodes has the message (docs/adr/0013-replicated-broker-cluster.md).

    with Cluster(Layout.fixed(base), size=3) as cluster:   # starts, joins, waits
        cluster.nodes[0].mqtt_port
        cluster.kill(cluster.nodes[1])                     # SIGKILL its Erlang VM
        cluster.restart(cluster.nodes[1])

Every process started here is stopped by its pid on exit; nothing else is touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tracker_api.ops.cluster_layout import (
    HOST,
    KICK_AFTER,
    RABBITMQ_BIN,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ClusterError,
    Layout,
    Node,
    NodeUnavailable,
    advanced_config,
    enabled_plugins,
    node_config,
    node_environment,
    tools_missing,
)
from tracker_api.ops.ports import free_ports, port_free, port_open

__all__ = [
    "Cluster",
    "ClusterError",
    "Layout",
    "Node",
    "NodeUnavailable",
    "ctl",
    "free_ports",
    "mqtt_session_queue",
    "on_any_node",
    "port_open",
    "tools_missing",
]

logger = logging.getLogger(__name__)

EX_UNAVAILABLE = 69  # rabbitmqctl's exit code when the node cannot be reached
T = TypeVar("T")


@dataclass
class Cluster:
    """Start, join, stop and break the nodes of a ``Layout``.

    Use it as a context manager: entering starts the cluster (reusing data directories
    that exist, so a second start is quick), leaving stops every process it started.
    """

    layout: Layout
    # The session owner's source (deploy/rabbitmq/plugin): built into the layout's plugins
    # folder and enabled, so no login may connect with another login's MQTT client id.
    # Without it only the session queues' permissions protect a session, and a login that
    # tries another's client id still closes the owner's connection once per attempt.
    session_owner: Path | None = None
    start_timeout: float = START_TIMEOUT
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    epmd: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.layout.nodes

    # --- files ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Directories, the shared cookie and each node's config files (idempotent)."""
        self.layout.home.mkdir(parents=True, exist_ok=True)
        self.layout.save()
        cookie = self.layout.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.touch(mode=0o400)
            cookie.chmod(0o600)
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        default_pass = secrets.token_urlsafe(24)
        self.layout.plugins.mkdir(exist_ok=True)
        if self.session_owner is not None:
            self.build_session_owner(self.session_owner)
        owned = self.session_owner is not None
        for node in self.nodes:
            for sub in ("data", "log"):
                (node.directory / sub).mkdir(parents=True, exist_ok=True)
            config = node.directory / "rabbitmq.conf"
            config.touch(mode=0o600)
            config.write_text(node_config(node, default_pass))
            (node.directory / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
            (node.directory / "enabled_plugins").write_text(enabled_plugins(owned))
            (node.directory / "advanced.config").write_text(advanced_config(owned))

    def build_session_owner(self, source: Path) -> None:
        try:
            built = subprocess.run(
                [str(source / "build.sh"), str(self.layout.plugins)],
                capture_output=True,
                text=True,
            )
            why = built.stderr.strip() if built.returncode != 0 else None
        except OSError as error:
            why = str(error)
        if why is not None:
            raise ClusterError(
                f"cannot build the session owner plugin ({source}): {why}"
                " (it needs erlc, from Debian's erlang-base)"
            )

    # --- processes ------------------------------------------------------------------

    def start(self) -> None:
        """Start every node in parallel, join the new ones, wait for all to run."""
        missing = tools_missing()
        if missing:
            raise ClusterError(missing)
        self.prepare()
        self.start_epmd()
        for node in self.nodes:
            self.start_node(node)
        # In parallel: a restarted node waits for the peers it last saw before it boots.
        self.each(self.wait_booted, self.nodes)
        self.join()
        self.wait_until_clustered()

    def each(self, action: Callable[[Node], object], nodes: Iterable[Node]) -> None:
        nodes = list(nodes)
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            for outcome in [pool.submit(action, node) for node in nodes]:
                outcome.result()

    def start_epmd(self) -> None:
        if self.epmd is not None and self.epmd.poll() is None:
            return
        epmd = shutil.which("epmd")
        assert epmd is not None  # tools_missing() checked
        if not port_free(self.layout.epmd_port):
            raise ClusterError(f"port {self.layout.epmd_port} (epmd) is already in use")
        self.epmd = subprocess.Popen(
            [epmd, "-port", str(self.layout.epmd_port), "-address", HOST],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        self.layout.epmd_pidfile.write_text(f"{self.epmd.pid}\n")
        deadline = time.monotonic() + 10
        while not port_open(self.layout.epmd_port):
            if self.epmd.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"epmd did not start on port {self.layout.epmd_port}")
            time.sleep(0.05)

    def start_node(self, node: Node) -> None:
        running = self.processes.get(node.name)
        if running is not None and running.poll() is None:
            return
        for port, what in ((node.mqtt_port, "MQTT"), (node.amqp_port, "AMQP")):
            if not port_free(port):
                raise ClusterError(f"port {port} ({node.short} {what}) is already in use")
        output = open(node.directory / "log" / "console.log", "ab")  # noqa: SIM115
        with closing(output):
            process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                cwd=node.directory,
                env=node_environment(self.layout, node),
                start_new_session=True,
            )
        self.processes[node.name] = process
        node.pidfile.write_text(f"{process.pid}\n")

    def pid(self, node: Node) -> int | None:
        """The pid of the node's Erlang VM (beam.smp), while it runs."""
        process = self.processes.get(node.name)
        if process is None or process.poll() is not None:
            return None
        return process.pid

    def wait_booted(self, node: Node) -> None:
        """Until the node's MQTT listener answers (its last boot step), or ClusterError."""
        process = self.processes[node.name]
        started = time.monotonic()
        deadline = started + self.start_timeout
        next_kick = started + KICK_AFTER
        retried = False
        while not port_open(node.mqtt_port):
            if process.poll() is not None:
                if retried:
                    raise ClusterError(f"{node.name} exited during start: see {node.log_file}")
                # A node booting beside its peers now and then gives up waiting for them
                # (Mnesia tables, the plugin's Raft members) and exits: once more, then fail.
                logger.warning("%s exited during start; starting it once more", node.name)
                retried = True
                self.start_node(node)
                process = self.processes[node.name]
            now = time.monotonic()
            if now > deadline:
                raise ClusterError(f"{node.name} did not start in time: see {node.log_file}")
            if now > next_kick:
                self.kick_client_id_tracking(node)
                next_kick = now + KICK_AFTER
            time.sleep(0.1)

    def kick_client_id_tracking(self, node: Node) -> None:
        """Restart the node's member of the MQTT plugin's Raft cluster (client id tracking).

        RabbitMQ 3.10's MQTT plugin, when a node that was a member restarts, asks its peers
        for the member list before it restarts its own member; when the peers are booting
        too, each waits for a leader that only the others' members could elect, for 100 s
        and again. Restarting the member from outside lets them elect one; the plugin's own
        restart of it later is then a no-op. Harmless on a node not yet a member.
        """
        try:
            self.ctl(node, "eval", "catch ra:restart_server(coordination, {mqtt_node, node()}).")
        except ClusterError as error:  # not up far enough yet: the next round will do
            logger.debug("%s", error)

    def join(self) -> None:
        """Join every node that is not yet a member to the first node's cluster."""
        first = self.nodes[0]
        members = self.cluster_nodes(first)
        for node in self.nodes[1:]:
            if node.name in members:
                continue
            logger.info("joining %s to %s", node.name, first.name)
            self.ctl(node, "stop_app")
            self.ctl(node, "reset")  # a fresh node; its data has nothing to keep yet
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")

    def cluster_nodes(self, node: Node, running: bool = False) -> set[str]:
        """Names of the cluster's disc members as ``node`` sees them (running ones only)."""
        status = self.ctl(node, "cluster_status", "--formatter", "json")
        key = "running_nodes" if running else "disk_nodes"
        return set(cli_json(status, dict).get(key, []))

    def wait_until_clustered(self, nodes: Iterable[Node] | None = None) -> None:
        """Until every node of ``nodes`` (all by default) runs in one cluster."""
        wanted = {node.name for node in (nodes if nodes is not None else self.nodes)}
        observer = next(node for node in self.nodes if node.name in wanted)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if wanted <= self.cluster_nodes(observer, running=True):
                    return
            except ClusterError:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster did not form in time: see {self.layout.base}")
            time.sleep(0.5)

    def stop_node(self, node: Node, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (the VM stops gracefully), then SIGKILL after ``timeout``."""
        process = self.processes.pop(node.name, None)
        if process is not None:
            stop_process(process, timeout)
        node.pidfile.unlink(missing_ok=True)

    def kill(self, node: Node) -> int:
        """SIGKILL the node's Erlang VM, as a crash would; returns the pid killed."""
        process = self.processes.pop(node.name)
        process.kill()
        process.wait()
        node.pidfile.unlink(missing_ok=True)
        return process.pid

    def restart(self, node: Node) -> None:
        """Start a stopped or killed node with its data and wait until it is back in."""
        self.start_node(node)
        self.wait_booted(node)
        self.wait_until_clustered()

    def stop(self) -> None:
        """Stop the nodes one by one, then epmd: only processes this object started.

        One by one, last first: nodes stopped together each see the others vanish and
        start the next time as a partitioned network, with the MQTT plugin's own Raft
        cluster waiting for a leader that never comes.
        """
        for node in reversed(self.nodes):
            self.stop_node(node)
        if self.epmd is not None:
            stop_process(self.epmd, 5.0)
            self.epmd = None
        self.layout.epmd_pidfile.unlink(missing_ok=True)

    # --- commands -------------------------------------------------------------------

    def ctl(self, node: Node, *args: str) -> str:
        return ctl(self.layout, node, *args)

    def queue_leader(self, queue: str) -> Node:
        """The node leading quorum queue ``queue`` (where its Raft log is appended first)."""
        for node in self.nodes:
            if self.pid(node) is None:
                continue
            rows = self.ctl(node, "list_queues", "name", "leader", "--formatter", "json", "-q")
            for row in cli_json(rows, list):
                if row.get("name") == queue:
                    return self.node_named(str(row["leader"]))
            break
        raise ClusterError(f"no quorum queue named {queue!r}")

    def node_named(self, name: str) -> Node:
        return self.layout.node(name)


def ctl(layout: Layout, node: Node, *args: str) -> str:
    """Run ``rabbitmqctl`` against ``node``; its output, or ClusterError saying why not."""
    command = [str(RABBITMQ_BIN / "rabbitmqctl"), "--node", node.name, *args]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            env=node_environment(layout, node),
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise NodeUnavailable(f"rabbitmqctl {args[0]} on {node.name} timed out") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip()
        # 69 (EX_UNAVAILABLE): the node is down or not running RabbitMQ, not a refusal.
        failed = NodeUnavailable if done.returncode == EX_UNAVAILABLE else ClusterError
        raise failed(f"rabbitmqctl {args[0]} on {node.name} failed: {why}")
    return done.stdout.decode(errors="replace")


def on_any_node(layout: Layout, action: Callable[[Node], T]) -> tuple[Node, T]:
    """``action`` on the first node that answers, trying each in turn: an operation on the
    cluster (its users, say) needs any one running node, not a given one. The node that
    answered and what ``action`` returned; NodeUnavailable naming each when none did."""
    unanswered = []
    for node in layout.nodes:
        try:
            return node, action(node)
        except NodeUnavailable as error:
            logger.info("%s", error)
            unanswered.append(node.short)
    raise NodeUnavailable(
        f"no node of the cluster under {layout.base} answered ({', '.join(unanswered)}): "
        "is `make cluster` running?"
    )


def mqtt_session_queue(client_id: str) -> str:
    """The queue RabbitMQ's MQTT plugin keeps a persistent QoS-1 session in."""
    return f"mqtt-subscription-{client_id}qos1"


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


JSON_START = re.compile(r"^[\[{]", re.MULTILINE)


CliJson = TypeVar("CliJson", dict[str, Any], list[Any])


def cli_json(text: str, kind: type[CliJson]) -> CliJson:
    """The JSON object or list (``kind``) a CLI printed, past any banner lines before it;
    ClusterError when it printed something else. A listing that printed no JSON at all
    has no rows."""
    match = JSON_START.search(text)
    if match is None:
        if kind is list:
            return kind()
        raise ClusterError(f"no JSON in the CLI's output: {text[:200]!r}")
    value = json.loads(text[match.start() :])
    if not isinstance(value, kind):
        raise ClusterError(f"expected a JSON {kind.__name__} from the CLI: {text[:200]!r}")
    return value
