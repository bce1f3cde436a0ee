"""Where the nodes of a RabbitMQ cluster on one machine live: their names, ports and
directories (``Layout``, ``Node``), and the configuration and environment each node starts
with. Pure description; ``cluster.Cluster`` runs it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tracker_api.ops.ports import free_ports

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # Debian's: /usr/sbin wraps it with `su rabbitmq`
HOST = "127.0.0.1"
HOST_ERLANG = "{127,0,0,1}"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
KICK_AFTER = 5.0  # seconds a node may take to boot before kick_client_id_tracking
# Fixed ports of `make cluster`: MQTT 1884-1886 beside `make run`'s Mosquitto on 1883.
LAYOUT_FILE = "layout.json"
FIXED_MQTT, FIXED_AMQP, FIXED_DIST, FIXED_EPMD, FIXED_CTL = 1884, 5682, 25682, 4379, 35692
CTL_PORTS = 11  # rabbitmqctl takes the first free one of ctl_port .. ctl_port + 10
# The plugin that refuses a login another login's MQTT client id at login
# (deploy/rabbitmq/plugin; docs/adr/0016-sessions-belong-to-their-logins.md).
SESSION_OWNER = "rabbitmq_session_owner"
SESSION_OWNER_BACKEND = "rabbit_auth_backend_session_owner"


class ClusterError(RuntimeError):
    """The cluster could not be started, joined or commanded; the message says why."""


class NodeUnavailable(ClusterError):
    """The node did not answer (down, booting, unreachable): another node may."""


def tools_missing() -> str | None:
    """Why the cluster cannot run here, or None when it can."""
    needed = [RABBITMQ_BIN / "rabbitmq-server", RABBITMQ_BIN / "rabbitmqctl"]
    absent = [str(path) for path in needed if not path.exists()]
    if shutil.which("epmd") is None:
        absent.append("epmd")
    if absent:
        return f"not installed: {', '.join(absent)} (run scripts/ensure-cluster-tools.sh)"
    return None


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
    ctl_port: int  # the first of rabbitmqctl's own distribution ports (CTL_PORTS)

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
        ports = free_ports(3 * size + 2, block=CTL_PORTS)  # every one as wide as the widest
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
    def plugins(self) -> Path:
        """Plugins of our own, searched before the installed ones (RABBITMQ_PLUGINS_DIR)."""
        return self.base / "plugins"

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
            "# Generated by tracker_api/ops/cluster.py; changes are overwritten at the next start.",
            f"listeners.tcp.default = {HOST}:{node.amqp_port}",
            f"mqtt.listeners.tcp.default = {HOST}:{node.mqtt_port}",
            "mqtt.allow_anonymous = false",
            "mqtt.vhost = /",
            "mqtt.exchange = amq.topic",
            # Each persistent session (clean_session=False) is a Raft-replicated queue: a
            # QoS-1 PUBACK comes after a majority of the nodes has the message.
            "mqtt.durable_queue_type = quorum",
            # The default (10) caps a subscriber at about 2k msg/s here; the archive commits
            # 2,000 at a time and needs room for the next batch meanwhile.
            "mqtt.prefetch = 5000",
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


def enabled_plugins(session_owner: bool) -> str:
    """enabled_plugins of every node: MQTT, and the session owner's backend when built."""
    plugins = ["rabbitmq_mqtt", *([SESSION_OWNER] if session_owner else [])]
    return f"[{','.join(plugins)}].\n"


def advanced_config(session_owner: bool) -> str:
    """advanced.config of every node. With the session owner's backend, authorisation asks
    the internal backend and then it, and a login needs both to agree (it only narrows:
    an MQTT login's client id must be ``<login>`` or ``<login>:...``)."""
    if not session_owner:
        return "[].\n"
    chain = f"[rabbit_auth_backend_internal, {SESSION_OWNER_BACKEND}]"
    return f"[{{rabbit, [{{auth_backends, [{{rabbit_auth_backend_internal, {chain}}}]}}]}}].\n"


def installed_plugins() -> list[str]:
    """Where RabbitMQ looks for plugins by default (its rabbit_env on Debian)."""
    home = (RABBITMQ_BIN / "rabbitmq-server").resolve().parents[1]
    return ["/usr/lib/rabbitmq/plugins", str(home / "plugins")]


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
        "RABBITMQ_PLUGINS_DIR": ":".join([str(layout.plugins), *installed_plugins()]),
        "RABBITMQ_MNESIA_BASE": str(directory / "data"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        "RABBITMQ_CTL_DIST_PORT_MIN": str(layout.ctl_port),
        "RABBITMQ_CTL_DIST_PORT_MAX": str(layout.ctl_port + CTL_PORTS - 1),
        "RABBITMQ_CTL_ERL_ARGS": f"-kernel inet_dist_use_interface {HOST_ERLANG}",
        # The VM replaces the start script (our child is the node itself, so its pid is
        # the one to signal), and -noinput keeps it off stdin as the script would.
        "RABBITMQ_ALLOW_INPUT": "true",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            f"-noinput -kernel inet_dist_use_interface {HOST_ERLANG}"
        ),
    }
