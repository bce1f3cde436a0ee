"""One real 3-node RabbitMQ cluster for the cluster tests, with the roles' logins.

Started once for the package (a cold start costs about 15 s of the 2 cores) and stopped
after its last test, by pid; every test here that breaks a node brings it back.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tracker_api.ops.cluster import Cluster, Layout, tools_missing
from tracker_api.ops.cluster_roles import provision

# The RabbitMQ plugin that ties a client id to its login, as make cluster and compose run it.
SESSION_OWNER_SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "plugin"

LOGINS = ("tracker", "reader", "1", "2")


@dataclass
class ProvisionedCluster:
    cluster: Cluster
    passwords: dict[str, str]

    @property
    def layout(self) -> Layout:
        return self.cluster.layout


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    why = tools_missing()
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.cluster)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="package")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProvisionedCluster]:
    layout = Layout.free(tmp_path_factory.mktemp("rabbit"))
    passwords = {name: secrets.token_urlsafe(12) for name in LOGINS}
    with Cluster(layout, session_owner=SESSION_OWNER_SOURCE) as cluster:
        provision(layout, layout.nodes[0], passwords)
        yield ProvisionedCluster(cluster, passwords)
