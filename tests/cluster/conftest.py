"""Cluster fixtures: the local control plane + real Argo controller, once per test session.

`cluster` starts it through tests/cluster/controlplane.py (`make cluster-up` does the same) with
the artifact repository on this session's own S3 server (`cluster_s3`, which a test may stop
and restart on its port), and stops it at the end. The Go binaries are built, if missing, when
collection finishes (outside any test's timeout; a cold build takes minutes). Nothing is
skipped: if the binaries cannot be built or the cluster does not come up, every test using it
fails with the reason. Tests that use `cluster` get the `cluster` marker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import controlplane
from tests.support.s3server import S3Server, dummy_aws_session

CLUSTER_FIXTURES = {"cluster", "cluster_s3", "kubectl"}
_build_error: list[str] = []


def _uses_cluster(item: pytest.Item) -> bool:
    return bool(CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_cluster(item):
            item.add_marker(pytest.mark.cluster)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before the first test runs, if a selected test needs the cluster."""
    if not any(_uses_cluster(item) for item in session.items):
        return
    t0 = time.monotonic()
    try:
        controlplane.binaries(build=True)
    except controlplane.ClusterError as e:
        _build_error.append(str(e))
        return
    took = time.monotonic() - t0
    if took > 5:
        print(f"\ncluster binaries built in {took:.0f} s")


@dataclass(frozen=True)
class Cluster:
    """A running local cluster: `env` has KUBECONFIG and the S3 endpoint for child processes."""

    env: dict[str, str]
    kubeconfig: Path
    s3: S3Server
    layout: controlplane.Layout


@pytest.fixture(scope="session")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Dummy AWS credentials and no other AWS configuration, for this session only."""
    with dummy_aws_session(tmp_path_factory.mktemp("cluster-aws-config")) as env:
        yield env


@pytest.fixture(scope="session")
def cluster_s3(cluster_env: dict[str, str]) -> Iterator[S3Server]:
    """The S3 server of the cluster's artifact repository (and of the tests' cubes)."""
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster(cluster_s3: S3Server, cluster_env: dict[str, str]) -> Iterator[Cluster]:
    """The local cluster, started once per session (a build error fails, never skips)."""
    if _build_error:
        pytest.fail(f"cluster binaries could not be built: {_build_error[0]}", pytrace=False)
    layout = controlplane.Layout(controlplane.STATE)
    t0 = time.monotonic()
    try:
        env = controlplane.up(s3_endpoint=cluster_s3.endpoint, layout=layout)
    except controlplane.ClusterError as e:
        pytest.fail(f"local cluster did not start: {e}", pytrace=False)
    print(f"\ncluster up in {time.monotonic() - t0:.1f} s")
    try:
        yield Cluster(
            env={**cluster_env, **env},
            kubeconfig=Path(env["KUBECONFIG"]),
            s3=cluster_s3,
            layout=layout,
        )
    finally:
        controlplane.down(layout, quiet=True)


@pytest.fixture
def kubectl(cluster: Cluster) -> controlplane.Kubectl:
    """`kubectl("get", "pods", ...)` against the cluster; raises with stderr on failure."""
    return controlplane.Kubectl(cluster.layout)
