"""`make cluster`: the scale-out system on one machine, in the foreground; Ctrl-C stops it.

1. a 3-node RabbitMQ cluster (MQTT on 127.0.0.1:1884-1886, quorum-queue sessions) under
   var/cluster/, with the roles of mqtt/acl and local credentials (first run: random
   passwords in var/cluster/credentials.env, 0600);
2. a throwaway PostgreSQL under var/cluster/postgres (port 5442), seeded (idempotent); its
   superuser signs in with a password (scram-sha-256) from var/cluster/credentials.env,
   never by trust, over TCP and the socket alike;
3. two trackers (ports 9001 and 9002), each given every broker node (failing over);
4. HAProxy on 127.0.0.1:9000 in front of them, checking GET /readyz.

A tracker, HAProxy or node that dies is named in one line and started again with backoff
(1 s, 2 s … 30 s) while the rest keeps serving. Ctrl-C, SIGTERM and SIGHUP stop HAProxy,
the trackers, the cluster, then PostgreSQL. Every child also gets SIGTERM from the kernel
if this process dies without a word (SIGKILL).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import create_engine, text

from devkit.loadbalancer import haproxy_binary
from devkit.loadbalancer import haproxy_config as haproxy_config_text
from scripts.foreground import (
    Supervised,
    Supervisor,
    Watchdog,
    announcer,
    command_line_help,
    make_state_dir,
    refuse_busy,
    run_in_foreground,
    shown,
    spawn,
    stop_child,
    wait_for,
)
from tracker_api.config import describe
from tracker_api.ops import cluster_layout as rabbit
from tracker_api.ops.cluster import Cluster, ClusterError, Layout, Node
from tracker_api.ops.cluster_roles import provision
from tracker_api.ops.ports import port_open

REPO = Path(__file__).resolve().parents[1]


class ClusterSettings(BaseSettings):
    """Where `make cluster` keeps its files and which ports it takes (CLUSTER_*, VAR_DIR).

    Each RabbitMQ port is the first node's; node N takes it + N - 1. The trackers take the
    two ports after CLUSTER_PORT, rabbitmqctl the eleven from CLUSTER_CTL_PORT.
    """

    model_config = SettingsConfigDict(env_prefix="CLUSTER_", extra="ignore", frozen=True)

    var_dir: Path = Field(
        REPO / "var", validation_alias="VAR_DIR", description="state under VAR_DIR/cluster"
    )
    port: int = Field(9000, ge=1, le=65533, description="HAProxy; the trackers take +1 and +2")
    pg_port: int = Field(5442, ge=1, le=65535, description="PostgreSQL")
    mqtt_port: int = Field(
        rabbit.FIXED_MQTT, ge=1, le=65533, description="MQTT of rabbit-1; node N takes +N-1"
    )
    amqp_port: int = Field(rabbit.FIXED_AMQP, ge=1, le=65533, description="AMQP, likewise")
    dist_port: int = Field(
        rabbit.FIXED_DIST, ge=1, le=65533, description="Erlang distribution, likewise"
    )
    epmd_port: int = Field(rabbit.FIXED_EPMD, ge=1, le=65535, description="the cluster's epmd")
    ctl_port: int = Field(
        rabbit.FIXED_CTL, ge=1, le=65525, description="rabbitmqctl, this one and the next ten"
    )

    def layout(self, size: int = 3) -> Layout:
        nodes = tuple(
            Node(i + 1, VAR, self.mqtt_port + i, self.amqp_port + i, self.dist_port + i)
            for i in range(size)
        )
        return Layout(VAR, nodes, self.epmd_port, self.ctl_port)


def settings_help() -> str:
    """The variables `make cluster` reads, with their defaults, for --help."""
    rows = []
    for name, field in ClusterSettings.model_fields.items():
        variable = field.validation_alias or f"CLUSTER_{name.upper()}"
        default = shown(field.default) if isinstance(field.default, Path) else field.default
        rows.append(f"  {variable:<18} {str(default):<7} {field.description}")
    return "settings (environment or make variables):\n" + "\n".join(rows)


say = announcer("make cluster")
# Before anything reads the settings or looks at ports: --help must never start a cluster.
# (Only when run: a test imports this module with arguments of its own.)
if __name__ == "__main__":
    command_line_help("python -m scripts.cluster", __doc__, settings_help())
try:
    SETTINGS = ClusterSettings()
except ValidationError as error:
    sys.exit(f"[make cluster] invalid configuration: {describe(error, prefix='CLUSTER_')}")
VAR = SETTINGS.var_dir.resolve() / "cluster"
CREDENTIALS = VAR / "credentials.env"
LB_PORT = SETTINGS.port
PG_PORT = SETTINGS.pg_port
LOGINS = ("tracker", "reader", "1")


def tracker_ports() -> list[int]:
    return [LB_PORT + 1, LB_PORT + 2]


def refuse_busy_ports(layout: Layout) -> None:
    named = [*layout.ports(), (LB_PORT, "HAProxy"), (PG_PORT, "PostgreSQL")]
    named += [(port, f"tracker {i}") for i, port in enumerate(tracker_ports(), 1)]
    for port, what in named:
        refuse_busy(port, what, "make cluster")


POSTGRES_PASSWORD = "CLUSTER_POSTGRES_PASSWORD"
TAIL_API = "MQTT_TAIL_API"


def credentials() -> dict[str, str]:
    """The logins' passwords and PostgreSQL's, created on the first run; a file from an
    earlier run gets what it lacks (PostgreSQL's password, where mqtt-tail --since reads)."""
    if CREDENTIALS.exists():
        pairs = (line.split("=", 1) for line in CREDENTIALS.read_text().splitlines())
        stored = dict(pair for pair in pairs if len(pair) == 2)
        wanted = {TAIL_API: f"http://127.0.0.1:{LB_PORT}"}
        if POSTGRES_PASSWORD not in stored:
            wanted[POSTGRES_PASSWORD] = secrets.token_urlsafe(18)
        if any(stored.get(name) != value for name, value in wanted.items()):
            stored.update(wanted)
            write_credentials(stored)
        passwords = {login: stored[f"CLUSTER_{login.upper()}_PASSWORD"] for login in LOGINS}
        return {**passwords, "postgres": stored[POSTGRES_PASSWORD]}
    passwords = {login: secrets.token_urlsafe(18) for login in (*LOGINS, "postgres")}
    VAR.mkdir(parents=True, exist_ok=True)
    write_credentials(
        {
            **{f"CLUSTER_{login.upper()}_PASSWORD": passwords[login] for login in LOGINS},
            POSTGRES_PASSWORD: passwords["postgres"],
            "MQTT_TAIL_USERNAME": "reader",
            "MQTT_TAIL_PASSWORD": passwords["reader"],
            TAIL_API: f"http://127.0.0.1:{LB_PORT}",
        }
    )
    say(f"created the cluster's logins in {shown(CREDENTIALS)} (mode 0600)")
    return passwords


def write_credentials(values: dict[str, str]) -> None:
    """var/cluster/credentials.env, readable by its owner only (passwords)."""
    CREDENTIALS.touch(mode=0o600)
    os.chmod(CREDENTIALS, 0o600)
    CREDENTIALS.write_text("".join(f"{name}={value}\n" for name, value in values.items()))


def ready_through(port: int) -> bool:
    """Whether GET /readyz on ``port`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:  # refused, reset, or an HTTPError (503: no ready tracker yet)
        return False


def indented_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as error:
        return f"    ({error.strerror})"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


def haproxy_config() -> Path:
    config = VAR / "haproxy.cfg"
    config.write_text(
        haproxy_config_text(LB_PORT, tracker_ports(), "Generated by scripts/cluster.py.")
    )
    return config


class Postgres:
    """A throwaway PostgreSQL cluster (refuses root: as root it runs as `postgres`).

    Its superuser signs in with a password (scram-sha-256), over TCP and the socket alike:
    with `trust`, any local user could connect as the superuser and run programs as the
    server's account (COPY ... TO PROGRAM)."""

    def __init__(self) -> None:
        search = ":".join(
            [os.environ.get("PATH", ""), *map(str, Path("/usr/lib/postgresql").glob("*/bin"))]
        )
        self.initdb = shutil.which("initdb", path=search)
        self.pg_ctl = shutil.which("pg_ctl", path=search)
        self.root = VAR / "postgres"
        self.data = self.root / "data"
        self.password = ""  # the superuser's, from credentials.env: set before start()
        # As root, PostgreSQL runs as `postgres`, also for a stop after a failed start.
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False  # pg_ctl start was run: stop() has a server of ours to stop

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres:{quote(self.password)}@127.0.0.1:{PG_PORT}/postgres"

    def run(self, *args: str) -> None:
        done = subprocess.run([*self.prefix, *args], capture_output=True, timeout=60)
        if done.returncode != 0:
            why = (done.stderr or done.stdout).decode(errors="replace").strip()
            as_user = " (as the postgres user: every directory above it must let it in)"
            raise ClusterError(
                f"PostgreSQL: {Path(args[0]).name} failed{as_user if self.prefix else ''}: {why}"
            )

    def start(self) -> None:
        if not (self.initdb and self.pg_ctl):
            sys.exit(
                "[make cluster] PostgreSQL (initdb, pg_ctl) not found: apt-get install postgresql"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)  # its socket and the password file are nobody else's
        if not self.data.exists():
            self.initialise()
        options = f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -k {self.root}"
        log = str(self.root / "postgres.log")
        self.started = True  # before: a start that fails halfway is stopped, too
        self.run(self.pg_ctl, "-D", str(self.data), "-o", options, "-w", "-l", log, "start")
        if trusting(self.data / "pg_hba.conf"):
            self.require_password()

    def initialise(self) -> None:
        """initdb with the superuser's password and scram-sha-256 for every connection."""
        password_file = self.root / "initdb.pw"
        password_file.touch(mode=0o600)
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(password_file, user.pw_uid, user.pw_gid)
        try:
            self.run(
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
            )
        finally:
            password_file.unlink(missing_ok=True)

    def require_password(self) -> None:
        """A data directory an earlier `make cluster` made with `trust`: the superuser gets
        the password, then every rule of pg_hba.conf asks for it (a reload, no restart)."""
        engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{PG_PORT}/postgres")
        try:
            with engine.begin() as connection:
                connection.execute(text("SET password_encryption = 'scram-sha-256'"))
                # ALTER ROLE takes no bind parameters: quoted as a literal by the server.
                literal = connection.execute(
                    text("SELECT quote_literal(:password)"), {"password": self.password}
                ).scalar_one()
                connection.execute(text(f"ALTER ROLE postgres PASSWORD {literal}"))
        finally:
            engine.dispose()
        hba = self.data / "pg_hba.conf"
        hba.write_text(without_trust(hba.read_text()))
        self.run(self.pg_ctl, "-D", str(self.data), "reload")
        say("PostgreSQL: the superuser now signs in with the password in credentials.env")

    def stop(self) -> None:
        """Stop the server this object started; a server it did not start is left alone."""
        if self.started and self.data.joinpath("postmaster.pid").exists():
            self.run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")


def trusting(hba: Path) -> bool:
    """Whether a pg_hba.conf lets anyone in without a password."""
    rules = (line.split("#", 1)[0].split() for line in hba.read_text().splitlines())
    return any(rule and rule[-1] == "trust" for rule in rules)


def without_trust(text: str) -> str:
    """pg_hba.conf with each `trust` rule asking for a scram-sha-256 password instead."""
    lines = []
    for line in text.splitlines():
        rule = line.split("#", 1)[0].split()
        if rule and rule[-1] == "trust":
            line = line.replace("trust", "scram-sha-256")
        lines.append(line)
    return "\n".join(lines) + "\n"


def spawn_logged(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return spawn(args, env=env, output=output)


def recorded(process: subprocess.Popen[bytes], pidfile: Path) -> subprocess.Popen[bytes]:
    """``process``, its pid written to ``pidfile`` (for a person who wants to kill it)."""
    pidfile.write_text(f"{process.pid}\n")
    return process


class Stack:
    def __init__(self) -> None:
        self.layout = SETTINGS.layout()
        self.cluster = Cluster(self.layout, session_owner=REPO / "deploy" / "rabbitmq" / "plugin")
        self.postgres = Postgres()
        self.seed: subprocess.Popen[bytes] | None = None
        self.nodes: list[Supervised] = []
        self.services: list[Supervised] = []  # the trackers, then HAProxy
        self.watchdog: Watchdog | None = None
        # Set right before the cluster starts (a start that fails halfway is undone, too):
        # a run refused earlier stops nothing, least of all another run's cluster.
        self.cluster_started = False

    def run(self) -> int:
        refuse_busy_ports(self.layout)
        make_state_dir(SETTINGS.var_dir.resolve())
        passwords = credentials()
        started = time.monotonic()
        # The nodes, epmd and PostgreSQL are not our children: should we die without a
        # word, the watchdog stops them, one node at a time as Cluster.stop does.
        nodes = [(node.pidfile, signal.SIGTERM) for node in reversed(self.layout.nodes)]
        self.watchdog = Watchdog(
            [
                *nodes,
                (self.layout.epmd_pidfile, signal.SIGTERM),
                (self.postgres.data / "postmaster.pid", signal.SIGINT),  # its fast shutdown
            ]
        )
        # PostgreSQL first: it is quick, and its failures should not wait for the nodes.
        self.postgres.password = passwords["postgres"]
        self.postgres.start()
        env = {**os.environ, "TRACKER_DATABASE_URL": self.postgres.url}
        # Its own session too: a Ctrl-C meanwhile stops it with SIGTERM, quietly.
        self.seed = spawn([sys.executable, str(REPO / "data" / "seed.py")], env=env)
        if self.seed.wait() != 0:
            say(f"seeding failed (code {self.seed.returncode})")
            return 1
        self.cluster_started = True
        self.cluster.start()
        # The brokers' logins only: PostgreSQL's password is no MQTT login.
        provision(self.layout, self.layout.nodes[0], {login: passwords[login] for login in LOGINS})
        nodes = ", ".join(f"{node.short} :{node.mqtt_port}" for node in self.layout.nodes)
        say(f"RabbitMQ cluster up: {nodes}")
        self.nodes = [self.supervised_node(node) for node in self.layout.nodes]
        if not self.start_trackers(env, passwords["tracker"]) or not self.start_haproxy(env):
            return 1
        self.banner(time.monotonic() - started)
        return self.supervise()

    def supervise(self) -> int:
        """Until a signal: a tracker, HAProxy or a node that dies is reported and started
        again with backoff; the rest keeps serving meanwhile."""
        supervisor = Supervisor(say, [*self.nodes, *self.services])
        while True:
            supervisor.tick()
            time.sleep(0.2)

    def supervised_node(self, node: Node) -> Supervised:
        def start() -> subprocess.Popen[bytes]:
            self.cluster.start_node(node)  # with its data: it rejoins the cluster
            return self.cluster.processes[node.name]

        return Supervised(
            f"{node.short} (MQTT :{node.mqtt_port})",
            self.cluster.processes[node.name],
            start=start,
            ready=lambda: port_open(node.mqtt_port),  # the last step of its boot
            meanwhile="its clients move to the other nodes, which hold every session",
            back=lambda pid: (
                f"{node.short} restarted (pid {pid}), serving MQTT on :{node.mqtt_port} again"
            ),
            # Restarted beside booting peers, the MQTT plugin may wait for a leader.
            nudge=lambda: self.cluster.kick_client_id_tracking(node),
        )

    def start_trackers(self, env: dict[str, str], password: str) -> bool:
        """Both trackers, supervised, ready; False (said why) when one is not."""
        # Every tracker gets every node: each starts at its own (by pid) and fails over.
        hosts = ",".join(f"127.0.0.1:{node.mqtt_port}" for node in self.layout.nodes)
        url = f"mqtt://tracker:{password}@{hosts}"
        trackers = []
        for i, port in enumerate(tracker_ports(), 1):
            instance = {
                **env,
                "TRACKER_PORT": str(port),
                "TRACKER_MQTT_URL": url,
                # One state dir for all: its client id slots give each tracker its own
                # id. RabbitMQ tracks client ids cluster-wide, and two trackers with one id
                # would take the connection from each other, over and over.
                "TRACKER_STATE_DIR": str(VAR / "trackers"),
                # RabbitMQ 3.10 has no shared subscriptions ($share/...): one tracker,
                # elected through PostgreSQL, consumes ingest/+ (ADR 14).
                "TRACKER_INGEST_MODE": "leader",
            }
            tracker = self.supervised_tracker(i, port, instance)
            self.services.append(tracker)
            trackers.append(tracker)
        for i, (tracker, port) in enumerate(zip(trackers, tracker_ports(), strict=True), 1):
            if not wait_for(tracker.ready, tracker.process, 30):
                log = VAR / f"tracker-{i}.log"
                why = "did not get ready in 30 s" if tracker.process.poll() is None else "exited"
                say(f"the tracker on :{port} {why}; the end of {shown(log)}:\n{indented_tail(log)}")
                return False
        return True

    def supervised_tracker(self, i: int, port: int, env: dict[str, str]) -> Supervised:
        def start() -> subprocess.Popen[bytes]:
            tracker = [sys.executable, "-m", "tracker_api"]
            return recorded(spawn_logged(tracker, VAR / f"tracker-{i}.log", env), self.pidfile(i))

        return Supervised(
            f"tracker {i} (:{port})",
            start(),
            start=start,
            ready=lambda: ready_through(port),
            meanwhile="HAProxy sends every request to the other tracker",
            back=lambda pid: f"tracker {i} restarted on :{port} (pid {pid}), ready",
        )

    def pidfile(self, tracker: int) -> Path:
        return VAR / f"tracker-{tracker}.pid"

    def start_haproxy(self, env: dict[str, str]) -> bool:
        """HAProxy, supervised, passing requests to a ready tracker; False (said why) if not."""
        haproxy = haproxy_binary()
        if haproxy is None:
            say("haproxy not found: run scripts/ensure-cluster-tools.sh")
            return False
        config = haproxy_config()

        def start() -> subprocess.Popen[bytes]:
            return spawn_logged([haproxy, "-db", "-f", str(config)], VAR / "haproxy.log", env)

        balancer = Supervised(
            f"HAProxy (:{LB_PORT})",
            start(),
            start=start,
            ready=lambda: port_open(LB_PORT),
            meanwhile=f"the trackers still answer on {tracker_ports()}",
            back=lambda pid: f"HAProxy restarted on :{LB_PORT} (pid {pid})",
        )
        self.services.append(balancer)
        if not wait_for(balancer.ready, balancer.process, 10):
            say(f"HAProxy did not start: see {shown(VAR / 'haproxy.log')}")
            return False
        # HAProxy listens before its first health check: until a tracker passed one, every
        # request would get a 503, so the banner waits for a ready tracker through it.
        if not wait_for(lambda: ready_through(LB_PORT), balancer.process, 15):
            say(f"no tracker became ready behind HAProxy: see {shown(VAR)}/tracker-*.log")
            return False
        return True

    def banner(self, took: float) -> None:
        bin_dir = shown(Path(sys.executable).parent)
        hosts = " ".join(f"--host 127.0.0.1:{node.mqtt_port}" for node in self.layout.nodes)
        say(f"started in {took:.1f} s")
        say(f"API on http://127.0.0.1:{LB_PORT} (HAProxy; trackers on {tracker_ports()})")
        say("try it, in another terminal:")
        try:
            print(f"    curl 'http://127.0.0.1:{LB_PORT}/1?data=hello'")
            print(
                f"    set -a; . {shown(CREDENTIALS)}; set +a; "
                f"{bin_dir}/mqtt-tail {hosts} --account +"
            )
        except OSError:
            pass
        say("a tracker, HAProxy or broker node that dies is restarted, the rest serving on")
        say("Ctrl-C stops everything")

    def stop(self) -> None:
        stop_child(self.seed)
        for service in reversed(self.services):  # HAProxy, the trackers, then the nodes
            stop_child(service.process)
        for i in range(1, len(tracker_ports()) + 1):
            self.pidfile(i).unlink(missing_ok=True)
        if self.cluster_started:
            self.cluster.stop()  # every node it started, restarted ones included
        try:
            self.postgres.stop()
        except ClusterError as error:
            say(f"PostgreSQL did not stop cleanly: {error}")
        if self.watchdog is not None:
            self.watchdog.stand_down()


if __name__ == "__main__":
    sys.exit(run_in_foreground(Stack(), say, failures=(ClusterError,)))
