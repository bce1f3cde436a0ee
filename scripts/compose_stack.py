"""The compose stacks under podman, for real: `make test-compose` (tests/compose) uses this.

    python -m scripts.compose_stack prepare     # tools and images
    python -m scripts.compose_stack up base     # docker-compose.yml (profile mosquitto)
    python -m scripts.compose_stack up cluster  # the RabbitMQ `cluster` profile
    python -m scripts.compose_stack down        # everything of the test project, volumes too

No Docker engine runs on the machines this project is built on, and no public registry is
reachable, so the stacks run under Debian's podman with local stand-ins for the upstream
images. Every stage is timed (printed as ``compose-stack: <stage>: N.N s``):

1. tools: podman, runc, mmdebstrap, netavark, aardvark-dns and iptables from Debian's
   packages when missing (as root, or with sudo); podman-compose 1.6.0 from PyPI in a venv
   of its own under the cache directory (Debian's 1.0.3 knows no ``${VAR:-}``, profiles or
   depends_on conditions).
2. a containers.conf in a temporary directory (CONTAINERS_CONF), nothing under /etc: runtime
   runc (crun refuses a hybrid cgroup hierarchy), ulimits no higher than this machine's hard
   limits (setrlimit above them is refused), images never pulled.
3. images: a Debian base from mmdebstrap (the host's CA bundle inside, so pip and apt work
   behind this machine's proxy), built only when podman's storage lacks it; the stand-ins
   of tests/compose/standins/ from it, tagged with the names the compose files and
   Dockerfiles use (layer cache: seconds when nothing changed); then the project's images
   from the unchanged Dockerfile and mqtt/Dockerfile (BUILDAH_FORMAT=docker keeps the
   HEALTHCHECK).
4. up, in stages: podman-compose ``up -d --no-deps`` one stage at a time, since with podman
   4.3 it neither honours ``service_healthy`` nor creates dependent containers reliably;
   one-shot jobs are waited for and must exit 0, services must pass their own healthcheck,
   run here by ``podman healthcheck run`` (there is no systemd to run it on a timer).
5. down: podman-compose ``down -v``, then whatever it leaves (``--scale`` replicas,
   anonymous volumes, the network) removed by the project's labels.

When this machine cannot run containers at all (no root for the tools, or the runtime fails
on a trivial container), ``prepare`` raises Unavailable with the reason: the compose tests
skip with it (a missing kernel feature is not a defect of the project) and the command line
exits 3. Everything after that check must work.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit.net import free_port
from devkit.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
CLUSTER_FILE = REPO / "deploy" / "cluster.compose.yml"
STANDINS = REPO / "tests" / "compose" / "standins"
PROJECT = "mqtt-tracker-test"
PODMAN_COMPOSE_VERSION = "1.6.0"
BASE_IMAGE = "localhost/mqtt-tracker-standin-base:bookworm"
# Stand-in directory -> the upstream name it is tagged with (what the compose files and
# Dockerfiles name; tests/integration/test_compose.py checks nothing else is named).
STANDIN_TAGS = {
    "python": "python:3.11-slim",
    "mosquitto": "eclipse-mosquitto:2",
    "postgres": "postgres:16",
    "rabbitmq": "rabbitmq:3.10-management",
    "haproxy": "haproxy:2.8",
}
TRACKER_IMAGE = "mqtt-tracker:latest"
MOSQUITTO_IMAGE = "mqtt-tracker-mosquitto:latest"
RABBITMQ_IMAGE = "mqtt-tracker-rabbitmq:latest"
DEBIAN_TOOLS = {  # command (or file) -> Debian package
    "podman": "podman",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "iptables": "iptables",
    "/usr/lib/podman/netavark": "netavark",
    "/usr/lib/podman/aardvark-dns": "aardvark-dns",
}
NODES = ("rabbit-1", "rabbit-2", "rabbit-3")
BASE_PROFILE = "mosquitto"
CLUSTER_PROFILE = "cluster"
TIMINGS: list[tuple[str, float]] = []
NOTES: list[str] = []  # what the tests measured beside the timings, for the run's summary
LOCAL_ENV = REPO / "var" / "compose-stack.env"  # the stacks' .env when run by hand


class Unavailable(Exception):
    """This machine cannot run containers (or install what runs them): a skip, not a defect."""


class StackError(Exception):
    """A stage failed: a defect of the stack, the images or this script."""


def say(line: str) -> None:
    print(f"compose-stack: {line}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Time a stage; every stage's duration is kept in TIMINGS and printed."""
    start = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - start
        TIMINGS.append((stage, took))
        say(f"{stage}: {took:.1f} s")


def run(
    command: Sequence[str],
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command; StackError with the tail of its output when ``check`` and it fails."""
    done = subprocess.run(
        list(command),
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        output = "\n".join(
            (done.stdout or "").splitlines()[-15:] + (done.stderr or "").splitlines()[-15:]
        )
        raise StackError(f"{' '.join(command[:4])} … exited {done.returncode}\n{output}")
    return done


def cache_dir() -> Path:
    """Where the podman-compose venv and the lock live: outside the checkout, kept across
    runs on one machine (MQTT_TRACKER_CACHE to choose)."""
    chosen = os.environ.get("MQTT_TRACKER_CACHE")
    if chosen:
        return Path(chosen)
    if os.geteuid() == 0:
        return Path("/var/cache/mqtt-tracker")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mqtt-tracker"


# --- 1. tools ---------------------------------------------------------------------------------


def missing_debian_tools() -> list[str]:
    missing = []
    for tool, package in DEBIAN_TOOLS.items():
        found = Path(tool).exists() if tool.startswith("/") else shutil.which(tool)
        if not found and not (not tool.startswith("/") and Path("/usr/sbin", tool).exists()):
            missing.append(package)
    return missing


def install_debian_tools() -> None:
    missing = missing_debian_tools()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise Unavailable(f"no apt-get to install {' '.join(missing)}")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise Unavailable(f"not root and no sudo to install {' '.join(missing)}")
        sudo = ["sudo", "-n"]
    say(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        run([*sudo, "apt-get", "update", "-qq"], env=env)
        run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env
        )
    except StackError as error:
        raise Unavailable(f"could not install {' '.join(missing)}: {error}") from None


def podman_compose() -> Path:
    """podman-compose PODMAN_COMPOSE_VERSION in its own venv under the cache directory;
    a venv without the stamp written last is an interrupted install, redone."""
    venv = cache_dir() / f"podman-compose-{PODMAN_COMPOSE_VERSION}"
    binary, stamp = venv / "bin" / "podman-compose", venv / ".installed"
    if stamp.exists():
        return binary
    say(f"installing podman-compose {PODMAN_COMPOSE_VERSION} into {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, f"podman-compose=={PODMAN_COMPOSE_VERSION}"])
    stamp.touch()
    return binary


# --- 2. the container engine's configuration ----------------------------------------------------


def containers_conf(directory: Path) -> Path:
    """A containers.conf for these runs only (CONTAINERS_CONF points at it)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    path = directory / "containers.conf"
    path.write_text(
        "# Written by scripts/compose_stack.py for one run of the compose tests.\n"
        "[containers]\n"
        # A limit above the hard one cannot be set: take this machine's (bounded).
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        # crun: "cgroups in hybrid mode not supported"; runc runs on v1, hybrid and v2.
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
    )
    return path


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Secrets:
    """Test passwords, new for each run, and the host ports the stacks publish on."""

    tracker: str = field(default_factory=lambda: secrets.token_hex(12))
    reader: str = field(default_factory=lambda: secrets.token_hex(12))
    device: str = field(default_factory=lambda: secrets.token_hex(12))
    postgres: str = field(default_factory=lambda: secrets.token_hex(12))
    cookie: str = field(default_factory=lambda: secrets.token_hex(16))
    mqtt_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)

    def env_file(self) -> str:
        """The stacks' .env: what an operator writes after copying .env.example."""
        values = {
            "MQTT_TRACKER_PASSWORD": self.tracker,
            "MQTT_READER_PASSWORD": self.reader,
            "POSTGRES_PASSWORD": self.postgres,
            "RABBITMQ_ERLANG_COOKIE": self.cookie,
            # Account 1's device login: reads track/1, publishes ingest/1, sends events.
            "MQTT_EXTRA_USERS": f"1:{self.device}",
            "MQTT_PUBLISH": f"127.0.0.1:{self.mqtt_port}",
            "API_PUBLISH": f"127.0.0.1:{self.api_port}",
            "CLUSTER_PUBLISH": f"127.0.0.1:{self.cluster_port}",
            "TRACKER_IMAGE": TRACKER_IMAGE,
            "MOSQUITTO_IMAGE": MOSQUITTO_IMAGE,
            "RABBITMQ_IMAGE": RABBITMQ_IMAGE,
        }
        return "".join(f"{key}={value}\n" for key, value in values.items())

    @classmethod
    def load(cls, path: Path) -> Secrets:
        """The values an earlier ``env_file`` wrote."""
        values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        port = lambda key: int(values[key].rpartition(":")[2])  # noqa: E731
        return cls(
            tracker=values["MQTT_TRACKER_PASSWORD"],
            reader=values["MQTT_READER_PASSWORD"],
            device=values["MQTT_EXTRA_USERS"].partition(":")[2],
            postgres=values["POSTGRES_PASSWORD"],
            cookie=values["RABBITMQ_ERLANG_COOKIE"],
            mqtt_port=port("MQTT_PUBLISH"),
            api_port=port("API_PUBLISH"),
            cluster_port=port("CLUSTER_PUBLISH"),
        )


@dataclass
class Container:
    name: str
    service: str
    state: str
    exit_code: int


@dataclass
class Leftovers:
    containers: list[str]
    volumes: list[str]
    networks: list[str]

    def __bool__(self) -> bool:
        return bool(self.containers or self.volumes or self.networks)


class Stack:
    """The compose project PROJECT under podman, with its own config, env file and ports."""

    def __init__(self, workdir: Path, passwords: Secrets | None = None) -> None:
        self.workdir = workdir
        self.secrets = passwords or Secrets()
        self.env_path = workdir / "stack.env"
        self.env_path.write_text(self.secrets.env_file())
        self.env_path.chmod(0o600)
        self.conf = containers_conf(workdir)
        self.podman_compose: Path | None = None

    # --- environment and commands -----------------------------------------------------------

    def engine_env(self) -> dict[str, str]:
        """The caller's environment without anything compose could take from it, plus this
        run's containers.conf."""
        dropped = ("TRACKER_", "COMPOSE_", "MQTT_", "POSTGRES_", "RABBITMQ_", "API_", "CLUSTER_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env.pop("SEED_DEMO", None)
        env.update(CONTAINERS_CONF=str(self.conf), BUILDAH_FORMAT="docker")
        return env

    def podman(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], env=self.engine_env(), check=check, timeout=timeout)

    def compose(
        self,
        *args: str,
        profiles: Sequence[str],
        cluster: bool = False,
        check: bool = True,
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        """podman-compose on the test project: the base file, with the cluster file when
        ``cluster``; ``profiles`` through COMPOSE_PROFILES, as .env.example sets them."""
        if self.podman_compose is None:
            self.podman_compose = podman_compose()
        files = ["-f", str(COMPOSE_FILE)] + (["-f", str(CLUSTER_FILE)] if cluster else [])
        command = [str(self.podman_compose), "-p", PROJECT, "--env-file", str(self.env_path)]
        environment = {**self.engine_env(), "COMPOSE_PROFILES": ",".join(profiles), **env}
        return run([*command, *files, *args], env=environment, check=check)

    # --- what runs ----------------------------------------------------------------------------

    def containers(self) -> list[Container]:
        listed = self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format", "json"
        )
        found = []
        for item in json.loads(listed.stdout or "[]"):
            labels = item.get("Labels") or {}
            found.append(
                Container(
                    name=item["Names"][0],
                    service=labels.get("com.docker.compose.service", ""),
                    state=item.get("State", ""),
                    exit_code=int(item.get("ExitCode", 0)),
                )
            )
        return found

    def containers_of(self, service: str) -> list[Container]:
        return sorted((c for c in self.containers() if c.service == service), key=lambda c: c.name)

    def container(self, service: str) -> str:
        """The name of the service's (first) container."""
        found = self.containers_of(service)
        if not found:
            raise StackError(f"{service}: no container")
        return found[0].name

    def logs(self, name: str, lines: int = 30) -> str:
        done = self.podman("logs", "--tail", str(lines), name, check=False)
        return (done.stdout + done.stderr).strip()

    # --- waiting ----------------------------------------------------------------------------

    def run_job(
        self, service: str, profiles: Sequence[str], cluster: bool = False, **env: str
    ) -> str:
        """Start a one-shot job and wait for it: StackError unless it exits 0. Its output."""
        self.compose("up", "-d", "--no-deps", service, profiles=profiles, cluster=cluster, **env)
        name = self.container(service)
        code = self.podman("wait", name, timeout=300).stdout.strip()
        if code != "0":
            raise StackError(f"job {service} exited {code}:\n{self.logs(name)}")
        return self.logs(name)

    def healthy(self, name: str) -> bool:
        """Run the container's own healthcheck once; StackError when it has stopped."""
        state = self.podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state not in ("running", "created", "configured", "initialized"):
            raise StackError(f"{name} is {state}:\n{self.logs(name)}")
        return self.podman("healthcheck", "run", name, check=False, timeout=60).returncode == 0

    def wait_healthy(self, services: Sequence[str], timeout: float = 120) -> None:
        names = [c.name for service in services for c in self.containers_of(service)]
        for name in names:
            wait_until(
                lambda name=name: self.healthy(name),  # type: ignore[misc]
                timeout,
                interval=0.5,
                message=f"{name} healthy: not within {timeout:.0f} s",
                error=StackError,
            )

    def start(
        self,
        services: Sequence[str],
        profiles: Sequence[str],
        cluster: bool = False,
        scale: dict[str, int] | None = None,
    ) -> None:
        scaling = [f"--scale={name}={n}" for name, n in (scale or {}).items()]
        self.compose(
            "up", "-d", "--no-deps", *scaling, *services, profiles=profiles, cluster=cluster
        )

    # --- the two stacks -----------------------------------------------------------------------

    def up_base(self) -> None:
        """docker-compose.yml with .env.example's profile, as an operator starts it."""
        profiles = [BASE_PROFILE]
        with timed("base stack up"):
            self.run_job("mqtt-users", profiles)
            self.start(["mosquitto", "postgres"], profiles)
            self.wait_healthy(["mosquitto", "postgres"])
            self.run_job("migrate", profiles)
            self.run_job("seed", profiles)
            self.start(["tracker"], profiles)
            self.wait_healthy(["tracker"])
            wait_ready(self.secrets.api_port)

    def up_cluster(self, trackers: int = 2) -> None:
        """The `cluster` profile alone: 3 RabbitMQ nodes, PostgreSQL, the cluster's own
        database (with the demo accounts: SEED_DEMO=true), trackers behind HAProxy."""
        profiles = [CLUSTER_PROFILE]
        with timed("cluster stack up"):
            self.run_job("cluster-logins", profiles, cluster=True)
            self.start([*NODES, "postgres"], profiles, cluster=True)
            self.wait_healthy(["postgres"])
            self.run_job("cluster-database", profiles, cluster=True, SEED_DEMO="true")
            self.wait_healthy(NODES, timeout=180)
            scale = {"cluster-tracker": trackers}
            self.start(["cluster-tracker"], profiles, cluster=True, scale=scale)
            self.wait_healthy(["cluster-tracker"])
            self.start(["cluster-haproxy"], profiles, cluster=True)
            wait_ready(self.secrets.cluster_port)

    def leftovers(self) -> Leftovers:
        label = f"label=io.podman.compose.project={PROJECT}"
        names = "{{.Names}}"
        containers = self.podman("ps", "-a", "--filter", label, "--format", names).stdout.split()
        volumes = self.podman("volume", "ls", "--filter", label, "--format", "{{.Name}}")
        networks = self.podman("network", "ls", "--filter", label, "--format", "{{.Name}}")
        return Leftovers(containers, volumes.stdout.split(), networks.stdout.split())

    def anonymous_volumes(self) -> set[str]:
        """Volumes mounted by the project's containers that no compose file names."""
        found = set()
        for container in self.containers():
            mounts = self.podman("inspect", "--format", "{{json .Mounts}}", container.name)
            for mount in json.loads(mounts.stdout or "[]") or []:
                name = mount.get("Name") or ""
                if mount.get("Type") == "volume" and not name.startswith(f"{PROJECT}_"):
                    found.add(name)
        return found

    def down(self, stage: str = "down") -> Leftovers:
        """Remove everything of the project; what podman-compose ``down -v`` left behind
        (which the sweep by label removed). Nothing to remove: nothing done, nor timed."""
        if not self.leftovers():
            return Leftovers([], [], [])
        with timed(stage):
            profiles = [BASE_PROFILE, CLUSTER_PROFILE]
            anonymous = self.anonymous_volumes()
            self.compose("down", "-v", "-t", "10", profiles=profiles, cluster=True, check=False)
            left = self.leftovers()
            for name in left.containers:
                self.podman("rm", "-f", "-v", "-t", "10", name, check=False)
            for name in left.volumes + sorted(anonymous):
                self.podman("volume", "rm", "-f", name, check=False)
            for name in left.networks:
                self.podman("network", "rm", "-f", name, check=False)
            return left


def wait_ready(port: int, timeout: float = 60) -> None:
    """GET /readyz on 127.0.0.1:port answers 200 (the broker and the database reachable)."""
    url = f"http://127.0.0.1:{port}/readyz"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    wait_until(
        ready,
        timeout,
        interval=0.5,
        message=f"GET {url}: not within {timeout:.0f} s",
        error=StackError,
    )


# --- 3. images ----------------------------------------------------------------------------------


def image_exists(stack: Stack, name: str) -> bool:
    return stack.podman("image", "exists", name, check=False).returncode == 0


def build_base(stack: Stack) -> None:
    """A minimal Debian bookworm from this machine's apt sources, with its CA bundle (a
    proxy's CA too, where the network has one) and a policy-rc.d that keeps packages from
    starting services during a build."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    mirror = [str(sources)] if sources.exists() else ["http://deb.debian.org/debian"]
    hooks = [
        "--skip=chroot/policy-rc.d",
        '--extract-hook=printf "#!/bin/sh\\nexit 101\\n" > "$1/usr/sbin/policy-rc.d"; '
        'chmod 0755 "$1/usr/sbin/policy-rc.d"',
        "--customize-hook=upload /etc/ssl/certs/ca-certificates.crt "
        "/usr/local/share/ca-certificates/host-bundle.crt",
        '--customize-hook=chroot "$1" update-ca-certificates >/dev/null 2>&1',
    ]
    tarball = stack.workdir / "base.tar"
    command = ["mmdebstrap", "--quiet", "--variant=minbase", "--include=ca-certificates"]
    run([*command, *hooks, "bookworm", str(tarball), *mirror], env=stack.engine_env())
    stack.podman("import", "-q", "--change", 'CMD ["bash"]', str(tarball), BASE_IMAGE)
    tarball.unlink()


def build(stack: Stack, tag: str, context: Path) -> None:
    """``podman build`` (layer cache on); the image the tag named before is removed when it
    was replaced, so that repeated runs do not pile up unnamed images."""
    inspect = ("image", "inspect", "--format", "{{.Id}}", tag)
    before = stack.podman(*inspect, check=False).stdout.strip()
    stack.podman("build", "-q", "-t", tag, str(context))
    if before and before != stack.podman(*inspect).stdout.strip():
        stack.podman("rmi", before, check=False)  # still used by a container: kept


def build_images(stack: Stack) -> None:
    """The stand-ins, then the project's images, as compose would build them."""
    with timed("stand-in images"):
        for directory, tag in STANDIN_TAGS.items():
            build(stack, f"docker.io/library/{tag}", STANDINS / directory)
    with timed("project images (Dockerfile, mqtt/Dockerfile, deploy/rabbitmq/Dockerfile)"):
        build(stack, TRACKER_IMAGE, REPO)
        build(stack, MOSQUITTO_IMAGE, REPO / "mqtt")
        build(stack, RABBITMQ_IMAGE, REPO / "deploy" / "rabbitmq")


def image_sizes(stack: Stack) -> dict[str, int]:
    """Bytes of the project's images and of the base they are built on (a stand-in here)."""
    names = (TRACKER_IMAGE, MOSQUITTO_IMAGE, f"docker.io/library/{STANDIN_TAGS['python']}")
    inspect = ("image", "inspect", "--format", "{{.Size}}")
    return {name: int(stack.podman(*inspect, name).stdout.strip()) for name in names}


def check_storage(stack: Stack) -> None:
    """Unavailable when podman cannot even set up its storage here (kernel, file system)."""
    done = stack.podman("info", check=False, timeout=120)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"podman cannot start here: {reason[0]}")


def check_engine(stack: Stack) -> None:
    """Unavailable when a trivial container cannot run here (kernel, cgroups, network)."""
    done = stack.podman("run", "--rm", BASE_IMAGE, "true", check=False, timeout=120)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"podman cannot run a container here: {reason[0]}")


def prepare(stack: Stack, rebuild_base: bool = False) -> None:
    """Tools, the base image when missing, a trial container, the images. Unavailable when
    this machine cannot run containers; StackError when a build fails."""
    with timed("tools"):
        install_debian_tools()
        stack.podman_compose = podman_compose()
    check_storage(stack)
    if rebuild_base or not image_exists(stack, BASE_IMAGE):
        with timed("base image (mmdebstrap)"):
            build_base(stack)
    check_engine(stack)
    build_images(stack)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One run of the compose stacks at a time on a machine: they share PROJECT's names."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "compose-stack.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another run of the compose stacks holds the lock: waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.compose_stack", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prepared = sub.add_parser("prepare", help="tools and images")
    prepared.add_argument("--rebuild-base", action="store_true", help="mmdebstrap again")
    up = sub.add_parser("up", help=f"start a stack (passwords and ports in {LOCAL_ENV})")
    up.add_argument("stack", choices=["base", "cluster"])
    sub.add_parser("down", help="remove every container, volume and network of the project")
    args = parser.parse_args(argv)
    LOCAL_ENV.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # By hand, one set of passwords and ports for every command: the volumes keep them.
    passwords = Secrets.load(LOCAL_ENV) if LOCAL_ENV.exists() else Secrets()
    try:
        with exclusive(), tempfile.TemporaryDirectory(prefix="compose-stack-") as workdir:
            stack = Stack(Path(workdir), passwords)
            shutil.copy(stack.env_path, LOCAL_ENV)
            if args.command == "prepare":
                prepare(stack, rebuild_base=args.rebuild_base)
            elif args.command == "up":
                stack.up_base() if args.stack == "base" else stack.up_cluster()
                say(f"{args.stack} stack up; passwords and ports in {LOCAL_ENV}")
            else:
                stack.down()
                LOCAL_ENV.unlink()
    except Unavailable as reason:
        say(f"this machine cannot run the compose stacks: {reason}")
        return 3
    except StackError as error:
        say(f"failed: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
