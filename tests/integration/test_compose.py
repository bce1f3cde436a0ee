"""docker-compose.yml, Dockerfile and .env.example: the container deployment, without Docker.

No Docker engine runs here, so nothing is started in a container. The compose file is
checked by ``docker-compose config`` (the Debian package, v1.29, installed by
``scripts/ensure-test-tools.sh``), the real parser: YAML anchors and merges, interpolation
including ``${VAR:?message}``, validation against the compose-spec schema it ships,
relative paths resolved. The tests assert on the configuration it prints.

Beyond what ``config`` can say, one test boots the production ``mqtt/mosquitto.conf`` on a
real ``mosquitto`` with the container paths mapped to the compose mounts, writes its
password file with the ``mqtt-users`` job's own script, and runs the compose healthcheck
against it. Everything here takes a few seconds.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from devkit.broker import session_owner_plugin
from devkit.net import free_port, port_open
from devkit.postgres import PostgresCluster
from devkit.waiting import wait_until
from tests.helpers.accounts import seeded_sqlite
from tests.helpers.fakes import FakePublisher
from tests.helpers.postgres import throwaway_postgres
from tracker_api.__main__ import cli
from tracker_api.app import create_app
from tracker_api.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CLUSTER_FILE = REPO / "deploy" / "cluster.compose.yml"
SECRETS = {
    "MQTT_TRACKER_PASSWORD": "tracker-secret",
    "MQTT_READER_PASSWORD": "reader-secret",
    "POSTGRES_PASSWORD": "postgres-secret",
}
SERVICES = {"mqtt-users", "mosquitto", "postgres", "migrate", "seed", "tracker"}
DEPENDS_ON = {
    "mqtt-users": {},
    "mosquitto": {"mqtt-users": "service_completed_successfully"},
    "postgres": {},
    "migrate": {"postgres": "service_healthy"},
    "seed": {"migrate": "service_completed_successfully"},
    "tracker": {
        "mosquitto": "service_healthy",
        "postgres": "service_healthy",
        "migrate": "service_completed_successfully",
    },
}
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def compose_variables() -> set[str]:
    """Every variable the base file and the cluster file interpolate."""
    text = COMPOSE_FILE.read_text() + CLUSTER_FILE.read_text()
    return set(REFERENCE.findall(text.replace("$$", "")))


# --- docker-compose config -------------------------------------------------------------

DOCKER_COMPOSE = shutil.which("docker-compose")
pytestmark = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose not installed: scripts/ensure-test-tools.sh"
)


@dataclass
class Resolved:
    returncode: int
    config: dict[str, Any] | None
    errors: str


def isolated_env(**values: str) -> dict[str, str]:
    """The caller's environment without anything compose could pick up from it."""
    drop = compose_variables() | set(SECRETS)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in drop and not key.startswith(("TRACKER_", "COMPOSE_"))
    }
    return {**env, **values}


def compose_config(env: dict[str, str], empty_env_file: Path) -> Resolved:
    # --env-file: a developer's own .env must not satisfy (or spoil) what we test.
    result = subprocess.run(
        [DOCKER_COMPOSE or "docker-compose", "--env-file", str(empty_env_file)]
        + ["-f", str(COMPOSE_FILE), "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    config: dict[str, Any] | None = None
    if result.returncode == 0:
        config = yaml.safe_load(result.stdout)
    return Resolved(result.returncode, config, result.stderr)


Resolver = Callable[..., Resolved]


def without(variable: str) -> dict[str, str]:
    return {key: value for key, value in SECRETS.items() if key != variable}


# Every resolution the tests below ask for, so they can run side by side up front.
VARIANTS = [SECRETS, {**SECRETS, "POSTGRES_PASSWORD": ""}, *(without(v) for v in SECRETS)]


@pytest.fixture(scope="module")
def resolve(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    """resolve(**variables) -> what ``docker-compose config`` makes of the file with them;
    each computed once per module (about a second a run), all of them in parallel."""
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")
    answers: dict[tuple[tuple[str, str], ...], Resolved] = {}

    def run(**values: str) -> Resolved:
        key = tuple(sorted(values.items()))
        if key not in answers:
            answers[key] = compose_config(isolated_env(**values), empty_env_file)
        return answers[key]

    with ThreadPoolExecutor(len(VARIANTS)) as pool:
        list(pool.map(lambda values: run(**values), VARIANTS))
    return run


@pytest.fixture(scope="module")
def config(resolve: Resolver) -> dict[str, Any]:
    resolved = resolve(**SECRETS)
    assert resolved.returncode == 0, resolved.errors
    assert resolved.config is not None
    return resolved.config


# --- reading what docker-compose config prints -------------------------------------------


@dataclass
class Mount:
    type: str  # "bind" or "volume"
    source: str
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        kind = "bind" if source.startswith("/") else "volume"
        found.append(Mount(kind, source, target, mode == ["ro"]))
    return found


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host ip, published port or range, container port) for each published port: compose
    prints a port given as a mapping as a mapping, and one given as a string as a string."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip", ""), str(port["published"]), int(port["target"])))
        else:
            spec = str(port).split("/")[0]
            *host, target = spec.split(":")
            host_ip, published = ["", "", *host][-2:]
            found.append((host_ip, published, int(target)))
    return found


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL", test
    return str(test[1]).replace("$$", "$")


def shell_script(service: dict[str, Any]) -> str:
    return str(service["command"][-1]).replace("$$", "$")


# --- the resolved configuration -------------------------------------------------------------


def test_compose_file_resolves_to_the_six_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == SERVICES


def test_services_start_in_order_through_depends_on_conditions(config: dict[str, Any]) -> None:
    for name, expected in DEPENDS_ON.items():
        depends_on = config["services"][name].get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        conditions = {dependency: spec["condition"] for dependency, spec in depends_on.items()}
        assert conditions == expected, name


def test_broker_and_database_have_healthchecks_that_use_credentials(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    broker_check = healthcheck_command(services["mosquitto"])
    assert broker_check.startswith("mosquitto_sub ")
    assert "-u reader" in broker_check and '-P "$MQTT_READER_PASSWORD"' in broker_check
    assert services["mosquitto"]["environment"]["MQTT_READER_PASSWORD"] == "reader-secret"
    assert healthcheck_command(services["postgres"]).startswith("pg_isready ")


def test_tracker_gets_credentialed_mqtt_url_and_postgres_url(config: dict[str, Any]) -> None:
    environment = config["services"]["tracker"]["environment"]
    assert environment["TRACKER_MQTT_URL"] == "mqtt://tracker:tracker-secret@mosquitto:1883"
    assert environment["TRACKER_DATABASE_URL"] == (
        "postgresql+psycopg://tracker:postgres-secret@postgres:5432/tracker"
    )
    assert environment["TRACKER_HOST"] == "0.0.0.0"
    assert str(environment["TRACKER_PORT"]) == "9000"
    # The values must pass the service's own validation, as they would at start.
    settings = load_settings(
        database_url=environment["TRACKER_DATABASE_URL"], mqtt_url=environment["TRACKER_MQTT_URL"]
    )
    assert (settings.broker.username, settings.broker.password) == ("tracker", "tracker-secret")


def test_seed_job_runs_in_the_tracker_image_against_postgres(config: dict[str, Any]) -> None:
    seed, tracker = config["services"]["seed"], config["services"]["tracker"]
    assert seed["image"] == tracker["image"]
    assert seed["command"][:2] == ["sh", "-euc"]
    assert "exec python data/seed.py" in shell_script(seed)
    assert (
        seed["environment"]["TRACKER_DATABASE_URL"]
        == (tracker["environment"]["TRACKER_DATABASE_URL"])
    )
    assert Path(tracker["build"]["context"]) == REPO
    assert (REPO / "Dockerfile").is_file()


def run_seed_script(
    service: dict[str, Any], app: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """A seed job's script with `python data/seed.py` replaced by a stand-in that says it
    ran, so what the job decides is seen without a database."""
    script = shell_script(service).replace("python data/seed.py", "echo SEEDED")
    script = script.replace("python /deploy/create_database.py", "true")
    script = script.replace("tracker-api migrate", "true")
    return subprocess.run(
        ["sh", "-euc", script],
        cwd=app,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_the_seed_job_adds_demo_accounts_only_when_asked(
    config: dict[str, Any], resolve: Resolver, tmp_path: Path
) -> None:
    seed = config["services"]["seed"]
    assert seed["environment"]["SEED_DEMO"] == "false"
    # The tracker no longer waits for it: it is not part of a production start.
    assert "seed" not in config["services"]["tracker"]["depends_on"]
    quiet = run_seed_script(seed, tmp_path, SEED_DEMO="false")
    assert quiet.returncode == 0 and "SEEDED" not in quiet.stdout
    assert "seed: no demo accounts (SEED_DEMO=true adds them)" in quiet.stdout
    asked = resolve(**SECRETS, SEED_DEMO="true")
    assert asked.config is not None, asked.errors
    demo = asked.config["services"]["seed"]
    assert demo["environment"]["SEED_DEMO"] == "true"
    assert run_seed_script(demo, tmp_path, SEED_DEMO="true").stdout == "SEEDED\n"
    wrong = run_seed_script(seed, tmp_path, SEED_DEMO="yes")
    assert wrong.returncode == 1
    assert wrong.stderr == "seed: SEED_DEMO must be true or false, not 'yes'\n"


def test_migrations_run_once_before_any_tracker_starts(config: dict[str, Any]) -> None:
    migrate, tracker = config["services"]["migrate"], config["services"]["tracker"]
    assert migrate["image"] == tracker["image"]
    assert migrate["command"] == ["tracker-api", "migrate"]
    assert migrate["restart"] == "no"
    assert (
        migrate["environment"]["TRACKER_DATABASE_URL"]
        == tracker["environment"]["TRACKER_DATABASE_URL"]
    )
    # The command the job runs is one the image's console script has.
    assert "migrate" in cli.commands


def test_published_ports_are_single_ports_on_loopback_by_default(
    config: dict[str, Any], resolve: Resolver
) -> None:
    """podman refuses a host port range (9000-9009:9000), and the broker's listener is
    plain MQTT: each service publishes one port, on 127.0.0.1 unless told otherwise."""
    services = config["services"]
    assert published_ports(services["mosquitto"]) == [("127.0.0.1", "1883", 1883)]
    assert published_ports(services["tracker"]) == [("127.0.0.1", "9000", 9000)]
    assert "container_name" not in services["tracker"]
    # The scalable form: a host address without a port, each replica takes a free one.
    scalable = resolve(**SECRETS, API_PUBLISH="127.0.0.1:")
    assert scalable.config is not None, scalable.errors
    [(host_ip, published, target)] = published_ports(scalable.config["services"]["tracker"])
    assert (host_ip, published, target) == ("127.0.0.1", "", 9000)


def test_profiles_keep_the_two_stacks_apart(
    config: dict[str, Any], cluster: dict[str, Any]
) -> None:
    """Every service of the base file but PostgreSQL is the `mosquitto` profile, every
    service of the cluster file the `cluster` profile: COMPOSE_PROFILES=cluster starts the
    cluster and the database it needs, and no Mosquitto."""
    for name, service in config["services"].items():
        expected = None if name == "postgres" else ["mosquitto"]
        assert service.get("profiles") == expected, name
    for name in CLUSTER_SERVICES:
        assert cluster[name]["profiles"] == ["cluster"], name
        for dependency in cluster[name].get("depends_on", {}):
            assert cluster[dependency].get("profiles") != ["mosquitto"], (name, dependency)
    assert env_example()["COMPOSE_PROFILES"] == "mosquitto"


def test_every_path_mounted_from_the_repo_exists(config: dict[str, Any]) -> None:
    binds = [m for s in config["services"].values() for m in mounts(s) if m.type == "bind"]
    assert binds
    for mount in binds:
        source = Path(mount.source)
        assert source.is_relative_to(REPO), f"{source} is outside the repository"
        assert source.exists(), f"{source.relative_to(REPO)} is mounted but does not exist"
        # The image's entrypoint chowns /mosquitto recursively: never our checkout.
        assert mount.read_only, f"{source.relative_to(REPO)} must be mounted read-only"


def test_broker_config_paths_all_land_on_mounts(config: dict[str, Any]) -> None:
    services = config["services"]
    targets = {m.target: m for m in mounts(services["mosquitto"])}
    paths = broker_paths()
    assert set(paths) == {"password_file", "acl_file", "persistence_location", "include_dir"}
    for key, path in paths.items():
        assert any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets), (
            f"{key} {path} is not on any mount of the mosquitto service"
        )
    # The password file lives on the volume the mqtt-users job writes, under the same path.
    password_dir = str(Path(paths["password_file"]).parent)
    writer = {m.target: m for m in mounts(services["mqtt-users"])}[password_dir]
    assert writer.type == "volume" and not writer.read_only
    assert targets[password_dir].source == writer.source
    assert f'mv -f "$new" {paths["password_file"]}' in shell_script(services["mqtt-users"])


@pytest.mark.parametrize("variable", sorted(SECRETS))
def test_missing_secret_stops_compose_with_its_message(resolve: Resolver, variable: str) -> None:
    resolved = resolve(**without(variable))
    assert resolved.returncode != 0
    assert f"set {variable}" in resolved.errors


def test_empty_secret_counts_as_missing(resolve: Resolver) -> None:
    resolved = resolve(**{**SECRETS, "POSTGRES_PASSWORD": ""})
    assert resolved.returncode != 0
    assert "set POSTGRES_PASSWORD" in resolved.errors


# --- files next to the compose file -------------------------------------------------------


def broker_paths() -> dict[str, str]:
    keys = ("password_file", "acl_file", "persistence_location", "include_dir")
    found = {}
    for line in (REPO / "mqtt" / "mosquitto.conf").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in keys:
            found[key] = value.strip()
    return found


def test_dockerfile_runs_tracker_api_as_non_root_with_a_python_healthcheck() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = [line.strip() for line in dockerfile.splitlines() if line.strip()]
    froms = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert froms and all(image == "python:3.11-slim" for image in froms)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert instructions[-1] == 'CMD ["tracker-api"]'
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK") :].split("\n\n")[0]
    assert '"python"' in healthcheck and "/healthz" in healthcheck and "curl" not in healthcheck
    assert "pip install --no-deps ." in dockerfile  # the project itself, from pyproject.toml


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: everything is excluded first"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    assert not allowed & {".env", "var", ".venv"}
    copied = re.findall(r"^COPY (?!--from)(\S+)", (REPO / "Dockerfile").read_text(), re.M)
    for source in copied:
        if source != ".":
            assert source.rstrip("/") in allowed, f"Dockerfile copies {source}, ignored"


def test_the_build_context_holds_every_package_the_wheel_ships() -> None:
    """`pip install .` in the image finds the packages pyproject.toml names: a top-level
    package the allow-list forgets installs a tracker-api that cannot import it."""
    import tomllib

    from setuptools import find_packages

    lines = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = find_packages(REPO, include=find["packages"]["find"]["include"])
    top_level = {name.split(".")[0] for name in packages}
    assert top_level == {"tracker_contract", "tracker_api", "subscriber"}
    assert top_level <= allowed, f"not in the build context: {sorted(top_level - allowed)}"


def env_example() -> dict[str, str]:
    """The variables .env.example sets (not those commented out), with their values."""
    found = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            found[match[1]] = match[2]
    return found


def test_env_example_leaves_the_secrets_empty_so_an_unedited_copy_starts_nothing(
    resolve: Resolver,
) -> None:
    example = env_example()
    for variable in SECRETS:
        assert example[variable] == "", f"{variable}: no placeholder a stack could start with"
    copied = resolve(**example)
    assert copied.returncode != 0
    assert any(f"set {variable}" in copied.errors for variable in SECRETS), copied.errors


def test_env_example_names_every_variable_compose_and_the_tracker_use() -> None:
    assigned: dict[str, bool] = {}  # name -> commented out
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^(# )?([A-Z][A-Z0-9_]*)=", line)
        if match:
            assigned[match[2]] = bool(match[1])
    for variable in compose_variables():
        assert variable in assigned, f".env.example lacks {variable}"
    for variable in SECRETS:
        assert assigned[variable] is False, f"{variable} must be set, not commented"
    for field in Settings.model_fields:
        variable = f"TRACKER_{field.upper()}"
        assert variable in assigned, f".env.example lacks {variable}"
        assert assigned[variable], f"{variable}: keep the tracker's defaults commented"


# --- the production broker configuration, booted for real ---------------------------------


def tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


@pytest.fixture
def production_broker(
    config: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[int, dict[str, Any]]]:
    if not (tool("mosquitto") and tool("mosquitto_passwd") and tool("mosquitto_sub")):
        pytest.skip("mosquitto is not installed: run scripts/ensure-mosquitto.sh")
    services = config["services"]
    # Container path -> host path: binds to the checkout, named volumes to temp dirs.
    mapping = {}
    for mount in mounts(services["mosquitto"]):
        if mount.type == "bind":
            mapping[mount.target] = mount.source
        else:
            host = tmp_path / mount.source
            host.mkdir(exist_ok=True)
            mapping[mount.target] = str(host)

    def to_host(text: str) -> str:
        for target in sorted(mapping, key=len, reverse=True):
            text = text.replace(target, mapping[target])
        return text

    # The mqtt-users job's own script; chown is a no-op (no `mosquitto` user needed here).
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "chown").write_text("#!/bin/sh\nexit 0\n")
    (shims / "chown").chmod(0o755)
    passwd_dir = str(Path(tool("mosquitto_passwd") or "").parent)
    env = {
        "PATH": f"{shims}:{passwd_dir}:{os.environ['PATH']}",
        **{key: str(value) for key, value in services["mqtt-users"]["environment"].items()},
    }
    script = to_host(shell_script(services["mqtt-users"]))
    subprocess.run(["sh", "-euc", script], env=env, check=True, capture_output=True, timeout=10)

    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    lines = [f"user {getpass.getuser()}"]  # stay the test's user: it owns the temp dirs
    for line in to_host((REPO / "mqtt" / "mosquitto.conf").read_text()).splitlines():
        if line.startswith("listener 1883"):
            line = f"listener {port} 127.0.0.1"
        elif line.startswith("log_dest"):
            line = f"log_dest file {tmp_path / 'mosquitto.log'}"
        elif line.startswith("plugin "):  # built into the image by mqtt/Dockerfile
            line = f"plugin {session_owner_plugin()}"
        lines.append(line)
    conf.write_text("\n".join(lines) + "\n")
    broker = subprocess.Popen([tool("mosquitto") or "", "-c", str(conf)], start_new_session=True)
    try:
        wait_until(
            lambda: port_open(port) or broker.poll() is not None, timeout=5, message="broker"
        )
        assert broker.poll() is None, (tmp_path / "mosquitto.log").read_text()
        yield port, services
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(5)


def test_production_broker_config_boots_on_the_compose_mounts_and_passes_its_healthcheck(
    production_broker: tuple[int, dict[str, Any]],
) -> None:
    port, services = production_broker
    check = healthcheck_command(services["mosquitto"]).replace("-p 1883", f"-p {port}")

    def run_check(password: str) -> int:
        env = {**os.environ, "MQTT_READER_PASSWORD": password}
        return subprocess.run(
            ["sh", "-c", check], env=env, capture_output=True, timeout=10
        ).returncode

    assert run_check("reader-secret") == 0
    assert run_check("wrong") != 0  # the healthcheck notices a broken password file


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MQTT_TRACKER_PASSWORD", "change-me-tracker"),
        ("MQTT_READER_PASSWORD", "CHANGEME"),
        ("MQTT_EXTRA_USERS", "1:device-secret 2:change-me"),
    ],
)
def test_the_mqtt_users_job_refuses_a_placeholder_password_and_writes_nothing(
    config: dict[str, Any], tmp_path: Path, variable: str, value: str
) -> None:
    job = config["services"]["mqtt-users"]
    auth = tmp_path / "auth"
    auth.mkdir()
    script = shell_script(job).replace("/mosquitto/auth", str(auth))
    env = {
        "PATH": os.environ["PATH"],
        **{key: str(item) for key, item in job["environment"].items()},
        variable: value,
    }
    done = subprocess.run(["sh", "-euc", script], env=env, capture_output=True, text=True)
    name = "MQTT_EXTRA_USERS (2)" if variable == "MQTT_EXTRA_USERS" else variable
    assert done.returncode == 1
    assert done.stderr == (
        f"mqtt-users: {name} is a placeholder (change-me...): set a real password\n"
    )
    assert list(auth.iterdir()) == []


# --- the scale-out stack: deploy/cluster.compose.yml added to the base file ------------------

COOKIES = {"RABBITMQ_ERLANG_COOKIE": "rabbit-cookie"}
NODES = ("rabbit-1", "rabbit-2", "rabbit-3")
CLUSTER_SERVICES = {*NODES, "cluster-logins", "cluster-database", "cluster-tracker"}
CLUSTER_SERVICES |= {"cluster-haproxy"}


def cluster_config(env: dict[str, str], empty_env_file: Path) -> Resolved:
    result = subprocess.run(
        [DOCKER_COMPOSE or "docker-compose", "--env-file", str(empty_env_file)]
        + ["-f", str(COMPOSE_FILE), "-f", str(CLUSTER_FILE), "--profile", "cluster", "config"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    config = yaml.safe_load(result.stdout) if result.returncode == 0 else None
    return Resolved(result.returncode, config, result.stderr)


CLUSTER_VARIANTS = [
    {**SECRETS, **COOKIES},
    SECRETS,
    {**SECRETS, **COOKIES, "POSTGRES_DB": "events", "TRACKER_HTTP_AUTH": "false"},
]


@pytest.fixture(scope="module")
def resolve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    """As ``resolve``, for the base file with the cluster file and its profile."""
    empty_env_file = tmp_path_factory.mktemp("cluster") / "empty.env"
    empty_env_file.write_text("")
    answers: dict[tuple[tuple[str, str], ...], Resolved] = {}

    def run(**values: str) -> Resolved:
        key = tuple(sorted(values.items()))
        if key not in answers:
            answers[key] = cluster_config(isolated_env(**values), empty_env_file)
        return answers[key]

    with ThreadPoolExecutor(len(CLUSTER_VARIANTS)) as pool:
        list(pool.map(lambda values: run(**values), CLUSTER_VARIANTS))
    return run


@pytest.fixture(scope="module")
def cluster(resolve_cluster: Resolver) -> dict[str, Any]:
    resolved = resolve_cluster(**SECRETS, **COOKIES)
    assert resolved.returncode == 0, resolved.errors
    assert resolved.config is not None
    services: dict[str, Any] = resolved.config["services"]
    return services


def conditions_of(service: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in service["depends_on"].items()}


def test_the_cluster_profile_resolves_with_every_node_in_the_trackers_url(
    cluster: dict[str, Any],
) -> None:
    assert set(cluster) == SERVICES | CLUSTER_SERVICES
    tracker = cluster["cluster-tracker"]
    url = tracker["environment"]["TRACKER_MQTT_URL"]
    assert url == "mqtt://tracker:tracker-secret@" + ",".join(f"{n}:1883" for n in NODES)
    assert all(conditions_of(tracker)[node] == "service_healthy" for node in NODES)
    for name in CLUSTER_SERVICES:
        assert cluster[name]["profiles"] == ["cluster"]
        for host_ip, _published, _target in published_ports(cluster[name]):
            assert host_ip == "127.0.0.1", f"{name} publishes beyond 127.0.0.1"
    haproxy = cluster["cluster-haproxy"]
    assert haproxy["environment"]["TRACKERS"] == "cluster-tracker"
    for name in CLUSTER_SERVICES:
        for mount in mounts(cluster[name]):
            if mount.type == "bind":
                assert Path(mount.source).is_file() and mount.read_only, mount


def test_rabbitmq_nodes_mount_quorum_sessions_the_mqtt_plugin_and_one_cookie(
    cluster: dict[str, Any],
) -> None:
    node = cluster["rabbit-1"]
    assert Path(node["build"]["context"]) == REPO / "deploy" / "rabbitmq"
    dockerfile = (REPO / "deploy" / "rabbitmq" / "Dockerfile").read_text()
    assert re.search(r"^FROM rabbitmq:3\.10", dockerfile, re.M)
    assert node["environment"]["RABBITMQ_ERLANG_COOKIE"] == "rabbit-cookie"
    binds = {Path(m.target).name: Path(m.source) for m in mounts(node) if m.type == "bind"}
    conf = binds["rabbitmq.conf"].read_text()
    assert "mqtt.durable_queue_type = quorum" in conf
    assert "mqtt.allow_anonymous = false" in conf
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    assert "rabbitmq_mqtt" in binds["enabled_plugins"].read_text()
    # A login's client ids are its own, checked at login (the session owner plugin).
    assert "rabbitmq_session_owner" in binds["enabled_plugins"].read_text()
    assert "rabbit_auth_backend_session_owner" in binds["advanced.config"].read_text()


def test_a_missing_cluster_cookie_stops_compose_with_its_message(
    resolve_cluster: Resolver,
) -> None:
    resolved = resolve_cluster(**SECRETS)
    assert resolved.returncode != 0
    assert "set RABBITMQ_ERLANG_COOKIE" in resolved.errors


def haproxy_section(config: str, name: str) -> list[str]:
    lines = [line for line in config.splitlines() if not line.lstrip().startswith("#")]
    start = lines.index(name) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def test_the_compose_load_balancer_asks_the_containers_own_nameservers() -> None:
    """127.0.0.11 is Docker's embedded DNS only; the nameservers of the container's
    resolv.conf are Docker's and podman's alike."""
    compose = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    [resolvers] = [line for line in compose.splitlines() if line.startswith("resolvers ")]
    section = haproxy_section(compose, resolvers)
    assert "    parse-resolv-conf" in section
    assert not [line for line in section if "nameserver" in line]
    name = resolvers.split()[1]
    assert f"resolvers {name} init-addr none" in compose


def test_the_compose_load_balancer_retries_and_times_out_as_make_cluster_does() -> None:
    from devkit.loadbalancer import haproxy_config

    generated = haproxy_config(9000, [9001, 9002], "test")
    compose = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    assert haproxy_section(compose, "defaults") == haproxy_section(generated, "defaults")
    assert "    option redispatch 1" in haproxy_section(compose, "defaults")


# --- the cluster stack's own database, on the base file's PostgreSQL server -----------------


def test_the_cluster_trackers_have_their_own_database_on_the_same_server(
    cluster: dict[str, Any], resolve_cluster: Resolver
) -> None:
    from sqlalchemy.engine import make_url

    base = make_url(cluster["tracker"]["environment"]["TRACKER_DATABASE_URL"])
    own = make_url(cluster["cluster-tracker"]["environment"]["TRACKER_DATABASE_URL"])
    # Not the base stack's database: its own accounts, archive and leases.
    assert own != base
    assert own.database == "tracker_cluster" == f"{base.database}_cluster"
    assert own.set(database=base.database) == base  # same server, user and password
    assert str(own.password) == "postgres-secret"
    # The base stack's jobs still write the base database.
    for job in ("migrate", "seed"):
        assert make_url(cluster[job]["environment"]["TRACKER_DATABASE_URL"]) == base
    # POSTGRES_DB names both.
    changed = resolve_cluster(**SECRETS, **COOKIES, POSTGRES_DB="events", TRACKER_HTTP_AUTH="false")
    assert changed.config is not None, changed.errors
    services = changed.config["services"]
    assert make_url(services["tracker"]["environment"]["TRACKER_DATABASE_URL"]).database == (
        "events"
    )
    own_url = services["cluster-tracker"]["environment"]["TRACKER_DATABASE_URL"]
    assert make_url(own_url).database == "events_cluster"
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "events"


def test_the_cluster_database_job_creates_migrates_and_seeds_before_any_cluster_tracker(
    cluster: dict[str, Any],
) -> None:
    job, tracker = cluster["cluster-database"], cluster["cluster-tracker"]
    assert job["image"] == tracker["image"] == cluster["tracker"]["image"]
    assert job["restart"] == "no"
    assert "ports" not in job
    url = job["environment"]["TRACKER_DATABASE_URL"]
    assert url == tracker["environment"]["TRACKER_DATABASE_URL"]
    assert job["command"][:2] == ["sh", "-euc"]
    assert shell_script(job).split("\n")[:2] == [
        "python /deploy/create_database.py",
        "tracker-api migrate",
    ]
    assert job["environment"]["SEED_DEMO"] == "false"
    script = {m.target: m for m in mounts(job)}["/deploy/create_database.py"]
    assert Path(script.source) == REPO / "deploy" / "create_database.py" and script.read_only
    assert conditions_of(job) == {"postgres": "service_healthy"}
    # The trackers wait for it, not for the base stack's jobs.
    assert conditions_of(tracker) == {
        **dict.fromkeys(NODES, "service_healthy"),
        "postgres": "service_healthy",
        "cluster-logins": "service_completed_successfully",
        "cluster-database": "service_completed_successfully",
    }
    assert "migrate" in cli.commands


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    yield from throwaway_postgres()


@pytest.mark.postgres
def test_the_cluster_database_jobs_script_sets_up_the_database_and_can_run_again(
    cluster: dict[str, Any], postgres: PostgresCluster, tmp_path: Path
) -> None:
    """The job's own script, with the image's paths mapped to the checkout, against a real
    PostgreSQL server: the database appears with the schema, and the demo accounts only
    when SEED_DEMO=true."""
    import psycopg
    from sqlalchemy.engine import make_url

    job = cluster["cluster-database"]
    composed = make_url(job["environment"]["TRACKER_DATABASE_URL"])
    url = composed.set(host="127.0.0.1", port=postgres.port, username="postgres", password=None)
    app = tmp_path / "app"  # the image's working directory: data/seed.py and nothing else
    (app / "data").mkdir(parents=True)
    (app / "data" / "seed.py").symlink_to(REPO / "data" / "seed.py")
    script = shell_script(job)
    for mount in mounts(job):
        script = script.replace(mount.target, mount.source)
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "TRACKER_DATABASE_URL": url.render_as_string(hide_password=False),
    }

    def run(**more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-euc", script],
            cwd=app,
            env={**env, **more},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def accounts() -> int:
        with psycopg.connect(
            host="127.0.0.1", port=postgres.port, user="postgres", dbname=str(composed.database)
        ) as connection:
            row = connection.execute("SELECT count(*) FROM accounts").fetchone()
        assert row is not None
        return int(row[0])

    first = run()
    assert first.returncode == 0, first.stderr
    assert f"create-database: created database {composed.database}" in first.stdout
    assert "no demo accounts (SEED_DEMO=true adds them)" in first.stdout
    assert accounts() == 0  # the schema, and no demo rows unless asked
    second = run(SEED_DEMO="true")
    assert second.returncode == 0, second.stderr
    assert "exists already" in second.stdout
    assert accounts() == 100  # data/seed.py's default


# --- the cluster stack's logins: deploy/cluster_logins.py, run by the cluster-logins job ----

LOGINS_SCRIPT = REPO / "deploy" / "cluster_logins.py"


def run_cluster_logins(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOGINS_SCRIPT), str(directory)],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_broker_nodes_boot_only_after_their_logins_were_written(
    cluster: dict[str, Any],
) -> None:
    job = cluster["cluster-logins"]
    assert job["environment"]["MQTT_TRACKER_PASSWORD"] == SECRETS["MQTT_TRACKER_PASSWORD"]
    assert job["command"] == ["python", "/deploy/cluster_logins.py", "/logins"]
    written = next(m for m in mounts(job) if m.source == "cluster-logins")
    assert written.target == "/logins" and not written.read_only
    for name in NODES:
        node = cluster[name]
        assert conditions_of(node)["cluster-logins"] == "service_completed_successfully"
        assert "RABBITMQ_DEFAULT_USER" not in node["environment"]
        volume = next(m for m in mounts(node) if m.source == "cluster-logins")
        assert volume.target == "/etc/rabbitmq/logins" and volume.read_only
    rabbit_conf = (REPO / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "load_definitions = /etc/rabbitmq/logins/rabbitmq-definitions.json" in rabbit_conf


def test_the_cluster_trackers_need_a_login_as_the_base_tracker_does(
    cluster: dict[str, Any], resolve_cluster: Resolver, tmp_path: Path
) -> None:
    base = cluster["tracker"]["environment"]
    environment = cluster["cluster-tracker"]["environment"]
    assert environment["TRACKER_HTTP_AUTH"] == base["TRACKER_HTTP_AUTH"] == "true"
    # The password file is the one the cluster-logins job writes, on a read-only mount.
    password_file = Path(environment["TRACKER_PASSWORD_FILE"])
    volume = {m.target: m for m in mounts(cluster["cluster-tracker"])}[str(password_file.parent)]
    assert volume.type == "volume" and volume.source == "cluster-logins" and volume.read_only
    assert password_file.name == "http-passwd"
    written = {m.source: m.target for m in mounts(cluster["cluster-logins"])}["cluster-logins"]
    assert cluster["cluster-logins"]["command"][-1] == written
    # With the file the cluster-logins job writes, the tracker refuses what has no login.
    logins = tmp_path / "logins"
    logins.mkdir()
    done = run_cluster_logins(logins, **SECRETS, MQTT_EXTRA_USERS="1:device-secret")
    assert done.returncode == 0, done.stderr
    url, engine = seeded_sqlite(tmp_path / "tracker.db")  # the accounts, not the server
    settings = load_settings(
        database_url=url,
        mqtt_url=environment["TRACKER_MQTT_URL"],
        http_auth=environment["TRACKER_HTTP_AUTH"],
        password_file=logins / password_file.name,
    )
    history = {"since": "1h"}
    try:
        with TestClient(create_app(settings, FakePublisher(), engine)) as client:
            assert client.get("/events", params=history).status_code == 401
            assert client.post("/1", json={"data": "x"}).status_code == 401
            wrong = client.get("/events", params=history, auth=("reader", "wrong"))
            assert wrong.status_code == 401
            reader = client.get("/events", params=history, auth=("reader", "reader-secret"))
            assert reader.status_code == 200
            sent = client.post("/1", json={"data": "x"}, auth=("1", "device-secret"))
            assert sent.status_code == 200
            # With logins on, events come as JSON POSTs only (docs/adr/0017).
            get = client.get("/1", params={"data": "x"}, auth=("1", "device-secret"))
            assert get.status_code == 405
    finally:
        engine.dispose()
    # TRACKER_HTTP_AUTH=false turns it off for both stacks alike.
    changed = resolve_cluster(**SECRETS, **COOKIES, POSTGRES_DB="events", TRACKER_HTTP_AUTH="false")
    assert changed.config is not None, changed.errors
    for name in ("tracker", "cluster-tracker"):
        assert changed.config["services"][name]["environment"]["TRACKER_HTTP_AUTH"] == "false"


def test_cluster_logins_writes_rabbitmq_the_roles_of_make_cluster(tmp_path: Path) -> None:
    import json

    from tracker_api.ops.cluster_roles import topic_regex
    from tracker_contract.roles import rights_of

    done = run_cluster_logins(
        tmp_path, **SECRETS, MQTT_EXTRA_USERS="42:device-secret 1.x:other-secret"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "http-passwd",
        "rabbitmq-definitions.json",
    ]
    definitions = tmp_path / "rabbitmq-definitions.json"
    content = json.loads(definitions.read_text())
    assert content["vhosts"] == [{"name": "/"}]
    assert [user["name"] for user in content["users"]] == ["tracker", "reader", "42", "1.x"]
    rules = {rule["user"]: rule for rule in content["topic_permissions"]}
    assert rules["1.x"]["read"] == topic_regex(rights_of("1.x").reads) == r"^track\.1\.x$"
    assert definitions.stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert definitions.stat().st_uid == 999  # the rabbitmq image's user


def test_cluster_logins_writes_the_trackers_password_file_with_each_login(
    tmp_path: Path,
) -> None:
    from tracker_api.passwords import PasswordFile

    extra = {"42": "device-secret", "1.x": "other-secret"}
    done = run_cluster_logins(
        tmp_path, **SECRETS, MQTT_EXTRA_USERS=" ".join(f"{u}:{p}" for u, p in extra.items())
    )
    assert done.returncode == 0, done.stderr
    path = tmp_path / "http-passwd"
    passwords = PasswordFile(path)
    expected = {
        "tracker": SECRETS["MQTT_TRACKER_PASSWORD"],
        "reader": SECRETS["MQTT_READER_PASSWORD"],
        **extra,
    }
    assert list(passwords.entries) == list(expected)  # these logins and no other
    for user, password in expected.items():
        assert passwords.check(user, password), user
        assert not passwords.check(user, password + "x"), user
    assert "device-secret" not in path.read_text()  # hashed, never in clear
    assert path.stat().st_mode & 0o777 == 0o400
    if os.geteuid() == 0:
        assert path.stat().st_uid == 10001  # the tracker image's user (Dockerfile)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "useradd --system --uid 10001" in dockerfile

    # Run again with a changed password: the file is replaced, the old password refused.
    again = run_cluster_logins(tmp_path, **{**SECRETS, "MQTT_READER_PASSWORD": "new-reader"})
    assert again.returncode == 0, again.stderr
    passwords = PasswordFile(path)
    assert list(passwords.entries) == ["tracker", "reader"]
    assert passwords.check("reader", "new-reader")
    assert not passwords.check("reader", SECRETS["MQTT_READER_PASSWORD"])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MQTT_READER_PASSWORD": "r"}, "set MQTT_TRACKER_PASSWORD"),
        ({**SECRETS, "MQTT_EXTRA_USERS": "42"}, "'42' has no password"),
        ({**SECRETS, "MQTT_EXTRA_USERS": "a/b:pw"}, "MQTT_EXTRA_USERS: "),
        ({**SECRETS, "MQTT_READER_PASSWORD": "change-me-reader"}, "is a placeholder"),
        ({**SECRETS, "MQTT_EXTRA_USERS": "1:CHANGEME"}, "'1' has a placeholder password"),
    ],
)
def test_cluster_logins_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    done = run_cluster_logins(tmp_path, **env)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- the stand-ins `make test-compose` builds for the upstream images -----------------------


def test_every_upstream_image_the_stacks_name_has_a_local_stand_in(
    cluster: dict[str, Any],
) -> None:
    """make test-compose cannot pull: each image a service runs without building it, and
    each FROM of the two Dockerfiles, must be one scripts/compose_stack.py builds."""
    from scripts.compose_stack import STANDIN_TAGS, STANDINS

    named = {s["image"] for s in cluster.values() if "build" not in s}
    for dockerfile in (
        REPO / "Dockerfile",
        REPO / "mqtt" / "Dockerfile",
        REPO / "deploy" / "rabbitmq" / "Dockerfile",
    ):
        named |= set(re.findall(r"^FROM (\S+)", dockerfile.read_text(), re.M))
    assert named == set(STANDIN_TAGS.values())
    for directory in STANDIN_TAGS:
        containerfile = (STANDINS / directory / "Containerfile").read_text()
        assert containerfile.startswith("# Stand-in for ")
        assert "FROM localhost/mqtt-tracker-standin-base:bookworm" in containerfile


def test_a_machine_whose_podman_cannot_run_says_why_in_one_line_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make test-compose skips, with the reason, where containers cannot run (a kernel
    without what podman needs); the podman here is one that fails as such a machine's does."""
    from scripts import compose_stack

    shims = tmp_path / "bin"
    shims.mkdir()
    failing = "#!/bin/sh\necho 'Error: kernel does not support overlay fs' >&2\nexit 125\n"
    (shims / "podman").write_text(failing)
    (shims / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    stack = compose_stack.Stack(tmp_path)
    for check in (compose_stack.check_storage, compose_stack.check_engine):
        with pytest.raises(compose_stack.Unavailable) as raised:
            check(stack)
        assert str(raised.value).endswith(": Error: kernel does not support overlay fs")
