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
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's: /usr/sbin wraps it with `su rabbitmq`
HOST = "127.0.0.1"
HOST_ERLANG = "{127,0,0,1}"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
KICK_AFTER = 5.0  # seconds a node may take to boot before kick_client_id_tracking
# Fixed ports of `make cluster`: MQTT 1884-1886 beside `make run`'s Mosquitto on 1883.
LAYOUT_FILE = "layout.json"
FIXED_MQTT, FIXED_AMQP, FIXED_DIST, FIXED_EPMD, FIXED_CTL = 1884, 5682, 25682, 4379, 35692


class ClusterError(RuntimeError):
    """The cluster could not be started, joined or commanded; the message says why."""


def tools_missing() -> str | None:
    """Why the cluster cannot run here, or None when it can."""
    needed = [RABBITMQ_BIN / "rabbitmq-server", RABBITMQ_BIN / "rabbitmqctl"]
    absent = [str(path) for path in needed if not path.exists()]
    if shutil.which("epmd") is None:
        absent.append("epmd")
    if absent:
        return f"not installed: {', '.join(absent)} (run scripts/ensure-cluster-tools.sh)"
    return None


def free_ports(count: int) -> list[int]:
    """Ports free right now on 127.0.0.1, all different (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Node:
    """One node's name, ports and directories."""

    index: int  # 1-based, as in its name
    base: Path
    mqtt_port: int
    amqp_port: int
    dist_port: int

    @property
    def name(self) -> str:
        return f"rabbit-{self.index}@localhost"

    @property
    def short(self) -> str:
        return f"rabbit-{self.index}"

    @property
    def directory(self) -> Path:
        return self.base / self.short

    @property
    def log_file(self) -> Path:
        return self.directory / "log" / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "beam.pid"


@dataclass(frozen=True)
class Layout:
    """Where a cluster lives and which ports it uses."""

    base: Path
    nodes: tuple[Node, ...]
    epmd_port: int
    ctl_port: int  # rabbitmqctl's own distribution ports: ctl_port .. ctl_port + 10

    @classmethod
    def fixed(cls, base: Path, size: int = 3) -> Layout:
        """The ports of `make cluster`: MQTT 1884.., AMQP 5682.., distribution 25682.."""
        nodes = tuple(
            Node(i + 1, base, FIXED_MQTT + i, FIXED_AMQP + i, FIXED_DIST + i) for i in range(size)
        )
        return cls(base, nodes, FIXED_EPMD, FIXED_CTL)

    @classmethod
    def free(cls, base: Path, size: int = 3) -> Layout:
        """Ports free right now, for tests running beside anything else."""
        ports = free_ports(3 * size + 2)
        nodes = tuple(
            Node(i + 1, base, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]) for i in range(size)
        )
        return cls(base, nodes, ports[-2], ports[-1])

    def save(self) -> None:
        """Record the ports beside the data, for tools that join a running cluster later."""
        record = {
            "epmd_port": self.epmd_port,
            "ctl_port": self.ctl_port,
            "nodes": [[n.mqtt_port, n.amqp_port, n.dist_port] for n in self.nodes],
        }
        (self.base / LAYOUT_FILE).write_text(json.dumps(record) + "\n")

    @classmethod
    def load(cls, base: Path) -> Layout:
        """The layout a cluster under ``base`` was last started with, or ClusterError."""
        try:
            record = json.loads((base / LAYOUT_FILE).read_text())
            nodes = tuple(Node(i + 1, base, *ports) for i, ports in enumerate(record["nodes"]))
            return cls(base, nodes, record["epmd_port"], record["ctl_port"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ClusterError(f"no cluster was started under {base}: {error}") from None

    def node(self, which: str) -> Node:
        """A node by number (``2``), short name (``rabbit-2``) or full name."""
        for node in self.nodes:
            if which in (str(node.index), node.short, node.name):
                return node
        known = ", ".join(node.short for node in self.nodes)
        raise ClusterError(f"no node {which!r} in this cluster (nodes: {known})")

    @property
    def home(self) -> Path:
        """HOME of every node and rabbitmqctl: RabbitMQ 3.10 reads the cookie there."""
        return self.base / "home"

    @property
    def epmd_pidfile(self) -> Path:
        return self.base / "epmd.pid"

    def ports(self) -> list[tuple[int, str]]:
        """Every port a running cluster listens on, with what it is (for busy-port messages)."""
        named = [(self.epmd_port, "epmd")]
        for node in self.nodes:
            named += [
                (node.mqtt_port, f"{node.short} MQTT"),
                (node.amqp_port, f"{node.short} AMQP"),
                (node.dist_port, f"{node.short} distribution"),
            ]
        return named


def node_config(node: Node, default_pass: str) -> str:
    """rabbitmq.conf of one node (sysctl format)."""
    return "\n".join(
        [
            "# Generated by tracker_api/cluster.py; changes are overwritten at the next start.",
            f"listeners.tcp.default = {HOST}:{node.amqp_port}",
            f"mqtt.listeners.tcp.default = {HOST}:{node.mqtt_port}",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            # Each persistent session (clean_session=False) is a Raft-replicated queue: a
            # QoS-1 PUBACK comes after a majority of the nodes has the message.
            "mqtt.durable_queue_type = quorum",
            # The default (10) caps a subscriber at about 2k msg/s here.
            "mqtt.prefetch = 1000",
            # Every login is limited by its permissions, not by where it connects from.
            "loopback_users = none",
            # The first boot creates this administrator; the roles' provisioning deletes it,
            # and its password is random meanwhile: administration is rabbitmqctl's (cookie).
            "default_user = guest",
            f"default_pass = {default_pass}",
            "log.console = false",
            "log.file.level = info",
            "",
        ]
    )


def node_environment(layout: Layout, node: Node) -> dict[str, str]:
    """The environment rabbitmq-server and rabbitmqctl need to find and be this node."""
    directory = node.directory
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(layout.home),
        "ERL_EPMD_PORT": str(layout.epmd_port),
        "ERL_EPMD_ADDRESS": HOST,
        "RABBITMQ_NODENAME": node.name,
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(node.amqp_port),
        "RABBITMQ_DIST_PORT": str(node.dist_port),
        "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(directory / "data"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        "RABBITMQ_CTL_DIST_PORT_MIN": str(layout.ctl_port),
        "RABBITMQ_CTL_DIST_PORT_MAX": str(layout.ctl_port + 10),
        "RABBITMQ_CTL_ERL_ARGS": f"-kernel inet_dist_use_interface {HOST_ERLANG}",
        # The VM replaces the start script (our child is the node itself, so its pid is
        # the one to signal), and -noinput keeps it off stdin as the script would.
        "RABBITMQ_ALLOW_INPUT": "true",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            f"-noinput -kernel inet_dist_use_interface {HOST_ERLANG}"
        ),
    }


@dataclass
class Cluster:
    """Start, join, stop and break the nodes of a ``Layout``.

    Use it as a context manager: entering starts the cluster (reusing data directories
    that exist, so a second start is quick), leaving stops every process it started.
    """

    layout: Layout
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
        for node in self.nodes:
            for sub in ("data", "log"):
                (node.directory / sub).mkdir(parents=True, exist_ok=True)
            config = node.directory / "rabbitmq.conf"
            config.touch(mode=0o600)
            config.write_text(node_config(node, default_pass))
            (node.directory / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
            (node.directory / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

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
        if port_open(self.layout.epmd_port):
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
            if port_open(port):
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
        while not port_open(node.mqtt_port):
            if process.poll() is not None:
                raise ClusterError(f"{node.name} exited during start: see {node.log_file}")
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
        return set(parse_json(status).get(key, []))

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
            for row in parse_json_list(rows):
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
        raise ClusterError(f"rabbitmqctl {args[0]} on {node.name} timed out") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise ClusterError(f"rabbitmqctl {args[0]} on {node.name} failed: {why}")
    return done.stdout.decode(errors="replace")


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


def parse_json(text: str) -> dict[str, list[str]]:
    """The JSON object a CLI printed, past any banner lines before it."""
    match = JSON_START.search(text)
    if match is None:
        raise ClusterError(f"no JSON in the CLI's output: {text[:200]!r}")
    value = json.loads(text[match.start() :])
    if not isinstance(value, dict):
        raise ClusterError(f"expected a JSON object from the CLI: {text[:200]!r}")
    return value


def parse_json_list(text: str) -> list[dict[str, object]]:
    match = JSON_START.search(text)
    if match is None:
        return []
    value = json.loads(text[match.start() :])
    return value if isinstance(value, list) else []
