"""Reading what rabbitmqctl prints: the one JSON helper of the cluster tooling."""

from __future__ import annotations

import pytest

from tracker_api.ops.cluster import ClusterError, cli_json


def test_the_json_after_any_banner_lines_is_read() -> None:
    printed = 'Cluster status of node rabbit-1@localhost ...\n{"disk_nodes": ["rabbit-1"]}\n'

    assert cli_json(printed, dict) == {"disk_nodes": ["rabbit-1"]}
    assert cli_json('Listing users ...\n[{"user": "tracker"}]\n', list) == [{"user": "tracker"}]


def test_a_listing_that_printed_nothing_has_no_rows() -> None:
    assert cli_json("", list) == []


@pytest.mark.parametrize(
    ("printed", "kind"),
    [("", dict), ("Error: nodedown\n", dict), ("[1]\n", dict), ('{"a": 1}\n', list)],
)
def test_no_json_or_the_wrong_kind_is_a_cluster_error(
    printed: str, kind: type[dict[str, object]] | type[list[object]]
) -> None:
    with pytest.raises(ClusterError):
        cli_json(printed, kind)  # type: ignore[type-var]
