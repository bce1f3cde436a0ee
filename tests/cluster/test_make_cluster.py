"""`make cluster` (scripts/cluster.py) run as a person does: its own process group, its own
var directory and ports; an event through HAProxy reaches a reader on a cluster node; Ctrl-C
stops every process of the run, and so does a SIGKILL of the script (through its watchdog).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest

from devkit.paced_load import Load
from devkit.postgres import find
from devkit.waiting import wait_until
from tracker_api.ops.cluster import Cluster, Layout, Node
from tracker_api.ops.cluster_layout import CTL_PORTS
from tracker_api.ops.ports import free_ports

from .clients import connected

REPO = Path(__file__).resolve().parents[2]
MAKE_CLUSTER = [sys.executable, "-m", "scripts.cluster"]  # from REPO, as `make cluster` runs it
BANNER = "Ctrl-C stops everything"


@dataclass
class MakeCluster:
    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    output: Path = field(init=False)
    offset: int = 0

    def __post_init__(self) -> None:
        # Each the first of 11 free ports (rabbitmqctl's block is the widest): HAProxy and
        # the two trackers, PostgreSQL, each node's MQTT, AMQP and distribution, epmd.
        names = ("PORT", "PG_PORT", "MQTT_PORT", "AMQP_PORT", "DIST_PORT", "EPMD_PORT", "CTL_PORT")
        blocks = free_ports(len(names), block=CTL_PORTS)
        ports = {f"CLUSTER_{name}": first for name, first in zip(names, blocks, strict=True)}
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TRACKER_", "MQTT_TAIL_", "CLUSTER_"))
        }
        self.env.update(VAR_DIR=str(self.var_dir), **{k: str(v) for k, v in ports.items()})
        self.output = self.var_dir / "make-cluster.out"

    @property
    def lb_port(self) -> int:
        return int(self.env["CLUSTER_PORT"])

    @property
    def pg_port(self) -> int:
        return int(self.env["CLUSTER_PG_PORT"])

    def start(self) -> tuple[subprocess.Popen[bytes], float]:
        """The running script and how long it took to print its banner."""
        self.offset = self.output.stat().st_size if self.output.exists() else 0
        started = time.monotonic()
        with open(self.output, "ab") as out:
            process = subprocess.Popen(
                MAKE_CLUSTER,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own, as a shell's job
            )
        wait_until(
            lambda: BANNER in self.latest() or process.poll() is not None,
            timeout=150,
            interval=0.2,
            message=f"no banner:\n{self.latest()}",
        )
        assert process.poll() is None, self.latest()
        return process, time.monotonic() - started

    def latest(self) -> str:
        return self.output.read_text(errors="replace")[self.offset :]

    def refused(self) -> str:
        """What a start that must fail printed; it exits 1 without a traceback."""
        done = subprocess.run(
            MAKE_CLUSTER,
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert "Traceback" not in output
        return output

    def processes(self) -> list[tuple[int, str]]:
        """Every live process of this run: its var directory in its arguments or its
        environment, or the private epmd on its port."""
        marker = str(self.var_dir).encode()
        epmd = ["-port", self.env["CLUSTER_EPMD_PORT"]]
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                argv = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if int(entry.name) == os.getpid() or state == "Z" or not argv:
                continue
            words = [part.decode(errors="replace") for part in argv.split(b"\0") if part]
            is_epmd = "epmd" in words[0] and " ".join(epmd) in " ".join(words)
            if marker in argv or marker in environ or is_epmd:
                found.append((int(entry.name), " ".join(words)[:120]))
        return found

    def kill_leftovers(self) -> None:
        for pid, _ in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeCluster]:
    # Not under pytest's 0700 temp root: as root, PostgreSQL runs as `postgres`, which
    # must be able to reach its data directory.
    var_dir = Path(tempfile.mkdtemp(prefix="make-cluster-"))
    var_dir.chmod(0o755)
    run = MakeCluster(var_dir)
    try:
        yield run
    finally:
        run.kill_leftovers()  # a failed test must not leave nodes burning the cores
        shutil.rmtree(var_dir, ignore_errors=True)


def test_a_port_a_connection_holds_is_refused_before_anything_starts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Nothing listens there, but a server could not bind it: named, not started on."""
    run = MakeCluster(tmp_path_factory.mktemp("held"))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            held = client.getsockname()[1]
            run.env["CLUSTER_PG_PORT"] = str(held)
            done = run.refused()
    assert f"port {held} (PostgreSQL) is already in use by a connection's local end" in done
    assert not (run.var_dir / "cluster").exists()  # refused before creating anything


def test_a_second_run_refused_for_a_busy_port_leaves_the_running_one_alone(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A second `make cluster` of one checkout stops nothing it did not start: the first
    run's pidfiles (nodes, epmd, PostgreSQL's postmaster.pid) stay, and so does the
    process they name (a stand-in here: no cluster is booted)."""
    run = MakeCluster(tmp_path_factory.mktemp("second"))
    home = run.var_dir / "cluster"
    first_run = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        pidfiles = [Node(i, home, 0, 0, 0).pidfile for i in (1, 2, 3)]
        pidfiles += [home / "epmd.pid", home / "postgres" / "data" / "postmaster.pid"]
        for pidfile in pidfiles:
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.write_text(f"{first_run.pid}\n")
        with socket.socket() as haproxy:
            haproxy.bind(("127.0.0.1", run.lb_port))
            haproxy.listen()
            done = run.refused()
        assert f"port {run.lb_port} (HAProxy) is already in use by pid {os.getpid()}" in done
        assert "PostgreSQL" not in done
        assert [pidfile.read_text() for pidfile in pidfiles] == [f"{first_run.pid}\n"] * 5
        assert first_run.poll() is None
    finally:
        first_run.kill()
        first_run.wait()


def test_help_describes_the_settings_and_starts_nothing_beside_a_running_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`python -m scripts.cluster --help` while a cluster holds the ports (its epmd here): the
    help and exit 0, no refusal, nothing made."""
    run = MakeCluster(tmp_path_factory.mktemp("help"))
    with socket.socket() as epmd:
        epmd.bind(("127.0.0.1", int(run.env["CLUSTER_EPMD_PORT"])))
        epmd.listen()
        done = subprocess.run(
            [*MAKE_CLUSTER, "--help"],
            cwd=REPO,
            env=run.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("usage: python -m scripts.cluster")
    listed = re.findall(r"^  ([A-Z_]+) ", done.stdout, re.MULTILINE)
    assert {"VAR_DIR", "CLUSTER_PORT", "CLUSTER_PG_PORT", "CLUSTER_MQTT_PORT"} <= set(listed)
    readme = (REPO / "README.md").read_text()
    for variable in listed:  # and the README's table documents each one
        assert f"| `{variable}` |" in readme, variable
    assert "[make cluster]" not in done.stdout + done.stderr
    assert not (run.var_dir / "cluster").exists()


def test_cluster_users_tries_every_node_and_names_them_when_none_answers(
    tmp_path: Path,
) -> None:
    """No node runs (only the cluster's epmd, so rabbitmqctl starts none of its own): each
    node is asked in turn, and the one line says which were."""
    cluster = Cluster(Layout.free(tmp_path / "cluster"))
    cluster.prepare()
    cluster.start_epmd()
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "tracker-api"), "cluster-users", "list",
             "--cluster-dir", str(cluster.layout.base)],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    finally:
        cluster.stop()
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: no node of the cluster under {cluster.layout.base} answered "
        "(rabbit-1, rabbit-2, rabbit-3): is `make cluster` running?\n"
    )


def test_a_var_dir_postgres_cannot_enter_is_refused_with_the_reason(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only as root does PostgreSQL run as another user")
    run = MakeCluster(tmp_path_factory.mktemp("closed"))  # under pytest's 0700 root
    done = run.refused()
    assert "initdb failed (as the postgres user" in done
    assert run.processes() == []


def stored_credentials(var_dir: Path) -> dict[str, str]:
    lines = (var_dir / "cluster" / "credentials.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def reader_password(var_dir: Path) -> str:
    return stored_credentials(var_dir)["MQTT_TAIL_PASSWORD"]


def postgres_answer(host: str, port: int, password: str | None) -> str:
    """What PostgreSQL says to its superuser: the value of a query, or why it refused."""
    try:
        with psycopg.connect(
            host=host, port=port, user="postgres", dbname="postgres", password=password,
            connect_timeout=5,
        ) as connection:  # fmt: skip
            rules = connection.execute(
                "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'"
            ).fetchone()
            return f"trust rules: {rules[0] if rules else '?'}"
    except psycopg.OperationalError as error:
        return f"refused: {error}"


def assert_postgres_asks_for_the_password(var_dir: Path, port: int) -> None:
    """Over TCP and its socket, no password or a wrong one is refused; the one in
    credentials.env (mode 0600) works, and no rule of pg_hba.conf trusts anyone."""
    env_file = var_dir / "cluster" / "credentials.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    password = stored_credentials(var_dir)["CLUSTER_POSTGRES_PASSWORD"]
    socket_dir = str(var_dir / "cluster" / "postgres")
    for host in ("127.0.0.1", socket_dir):
        assert postgres_answer(host, port, None).startswith("refused: "), host
        assert "password authentication failed" in postgres_answer(host, port, "guess")
        assert postgres_answer(host, port, password) == "trust rules: 0"


def test_an_event_through_haproxy_reaches_a_node_killed_parts_come_back_and_ctrl_c_stops_all(
    make_cluster: MakeCluster,
) -> None:
    process, took = make_cluster.start()
    print(f"make cluster, first start: banner after {took:.1f} s")  # noqa: T201 - the measured figure
    try:
        assert make_cluster.processes(), "no process of the run found: the check sees nothing"
        nodes = Layout.load(make_cluster.var_dir / "cluster").nodes
        # The banner's mqtt-tail is given every node: it fails over as the trackers do.
        hosts = " ".join(f"--host 127.0.0.1:{node.mqtt_port}" for node in nodes)
        assert f"mqtt-tail {hosts} --account +" in make_cluster.latest()
        last = nodes[-1]
        password = reader_password(make_cluster.var_dir)
        with connected(last.mqtt_port, "reader", password) as reader:
            assert reader.subscribe("track/#") == 1
            # The banner promises ready trackers behind HAProxy, each connected for good
            # (round robin: these reach both): every request is a 200 from the first.
            url = f"http://127.0.0.1:{make_cluster.lb_port}/1"
            answers = [httpx.get(url, params={"data": f"hello {i}"}, timeout=10) for i in range(10)]
            assert [answer.status_code for answer in answers] == [200] * 10, answers[-1].text
            wait_until(lambda: len(reader.received()) == 10, timeout=10, message="not delivered")
            topic, payload = reader.received()[0]
            assert topic == "track/1" and b"hello 0" in payload
        assert_postgres_asks_for_the_password(make_cluster.var_dir, make_cluster.pg_port)
        # The archive marks its session on RabbitMQ too: the history says how far it is
        # complete, so mqtt-tail --since can check its seam here.
        history = f"http://127.0.0.1:{make_cluster.lb_port}/events"
        wait_until(
            lambda: httpx.get(
                history, params={"since": "1m"}, auth=("reader", password), timeout=5
            ).headers.get("x-archive-watermark"),
            timeout=20,
            message="no archive watermark through HAProxy",
        )
        # The trackers use that password, and mqtt-tail finds the API in the same file.
        assert stored_credentials(make_cluster.var_dir)["MQTT_TAIL_API"] == (
            f"http://127.0.0.1:{make_cluster.lb_port}"
        )
        sigkills_under_load_are_survived(make_cluster, process)
    except BaseException:  # the next test starts its own run: stop this one first
        os.killpg(process.pid, signal.SIGINT)
        process.wait(90)
        raise

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal
    assert process.wait(90) == 0, make_cluster.latest()
    output = make_cluster.latest()
    assert "Traceback" not in output and output.rstrip().endswith("stopped"), output
    assert make_cluster.processes() == []


def sigkills_under_load_are_survived(run: MakeCluster, process: subprocess.Popen[bytes]) -> None:
    """A SIGKILLed tracker, then a SIGKILLed node (rabbit-1, the one `cluster-users` asked
    first), under a steady load through HAProxy: each is named in one line and restarted
    with its backoff, the rest keeps serving (no refused connection), `cluster-users
    list` answers while rabbit-1 is down, and no killed process is left a zombie."""
    home = run.var_dir / "cluster"
    tracker_port, first = run.lb_port + 1, Layout.load(home).nodes[0]
    cluster_users = [str(Path(sys.executable).parent / "tracker-api"), "cluster-users"]
    with Load(f"http://127.0.0.1:{run.lb_port}", "kill", rate=40) as load:
        wait_until(lambda: load.ok_count() >= 20, timeout=15, message="no load got through")
        tracker = int((home / "tracker-1.pid").read_text())
        os.kill(tracker, signal.SIGKILL)
        wait_until(
            lambda: (
                f"tracker 1 (:{tracker_port}) was killed by SIGKILL; restarting it in 1 s "
                "(HAProxy sends every request to the other tracker)" in run.latest()
            ),
            timeout=10,
            message=run.latest(),
        )
        wait_until(
            lambda: f"tracker 1 restarted on :{tracker_port}" in run.latest(),
            timeout=60,
            message=run.latest(),
        )

        node = int(first.pidfile.read_text())
        os.kill(node, signal.SIGKILL)
        listed = subprocess.run(
            [*cluster_users, "list", "--cluster-dir", str(home)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        assert "reader" in listed.stdout and "tracker" in listed.stdout
        wait_until(
            lambda: (
                f"rabbit-1 (MQTT :{first.mqtt_port}) was killed by SIGKILL; restarting it "
                "in 1 s" in run.latest()
            ),
            timeout=10,
            message=run.latest(),
        )
        wait_until(
            lambda: "rabbit-1 restarted (pid" in run.latest(),
            timeout=150,
            interval=0.5,
            message=run.latest(),
        )
        served = load.ok_count()
        wait_until(lambda: load.ok_count() >= served + 20, timeout=30, message="no 200 after")

    assert process.poll() is None, run.latest()  # make cluster kept running all along
    assert "stopping" not in run.latest()
    for killed in (tracker, node):  # reaped, not left a zombie
        assert not Path(f"/proc/{killed}").exists(), f"pid {killed} is still there"
    _, _, statuses, gap = load.figures()
    figures = f"{dict(statuses)}, longest gap between 200s {gap:.1f} s"
    print(f"make cluster, a tracker and a node SIGKILLed under load: {figures}")  # noqa: T201
    assert statuses[0] == 0, statuses  # HAProxy never stopped: no request was refused
    assert statuses[200] > 0


def test_a_sigkilled_make_cluster_leaves_nothing_running_and_restarts_in_seconds(
    make_cluster: MakeCluster,
) -> None:
    process, took = make_cluster.start()  # the second start: data dirs from the first
    print(f"make cluster, second start: banner after {took:.1f} s")  # noqa: T201 - the measured figure
    assert "started in" in make_cluster.latest()
    assert len(make_cluster.processes()) >= 7  # 3 nodes, epmd, PostgreSQL, 2 trackers...

    process.kill()
    process.wait(5)
    wait_until(
        lambda: not make_cluster.processes(),
        timeout=60,
        interval=0.5,
        message=f"left running: {make_cluster.processes()}",
    )


# Starts only the PostgreSQL of scripts/cluster.py, as `make cluster` does, until stdin ends.
POSTGRES_ONLY = """
import sys
from scripts import cluster
postgres = cluster.Postgres()
postgres.password = sys.argv[1]
try:
    postgres.start()
    print("started", flush=True)
    sys.stdin.read()
finally:
    postgres.stop()
"""


def test_a_postgres_an_earlier_make_cluster_made_with_trust_is_switched_to_passwords() -> None:
    """Data directories made before passwords (initdb --auth=trust) are kept, and from
    the next start on their superuser needs the password of credentials.env."""
    run = MakeCluster(Path(tempfile.mkdtemp(prefix="make-cluster-trust-")))
    run.var_dir.chmod(0o755)
    root = run.var_dir / "cluster" / "postgres"
    root.mkdir(parents=True)
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    initdb = find("initdb")
    assert initdb is not None
    subprocess.run(
        [*prefix, initdb, "-D", str(root / "data"), "-U", "postgres", "--auth=trust"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    password = "s3cret-for-the-superuser"
    process = subprocess.Popen(
        [sys.executable, "-c", POSTGRES_ONLY, password],
        cwd=REPO, env=run.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        said = []
        for line in process.stdout:  # until it has started, or has ended
            if line == "started\n":
                break
            said.append(line)
        assert said == [
            "[make cluster] PostgreSQL: the superuser now signs in with the password in "
            "credentials.env\n"
        ]
        (run.var_dir / "cluster" / "credentials.env").write_text(
            f"CLUSTER_POSTGRES_PASSWORD={password}\n"
        )
        (run.var_dir / "cluster" / "credentials.env").chmod(0o600)
        assert_postgres_asks_for_the_password(run.var_dir, run.pg_port)
    finally:
        process.communicate(timeout=60)  # closes stdin: the server is stopped
        shutil.rmtree(run.var_dir, ignore_errors=True)
    assert process.returncode == 0
