"""Integration fixtures: one moto S3 server on 127.0.0.1 for the whole session, fault proxies.

The dummy AWS credentials exist only in this test session's environment (set here, undone at
the end); child processes started by tests (`vcube ...`) inherit them. Every test that uses the
server gets the `s3` marker automatically.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.s3server import S3Server, dummy_aws_session

S3_FIXTURES = {"s3_server", "make_bucket", "fault_proxy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if S3_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)


@pytest.fixture(scope="session")
def aws_test_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Dummy credentials and no other AWS configuration, for this session only."""
    with dummy_aws_session(tmp_path_factory.mktemp("aws-config")) as env:
        yield env


@pytest.fixture(scope="session")
def s3_server(aws_test_env: dict[str, str]) -> Iterator[S3Server]:
    """The session's S3 server (moto, child process, 127.0.0.1, free port)."""
    with S3Server() as server:
        yield server


_bucket_ids = itertools.count()


@pytest.fixture
def make_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Create a bucket with a name unique in the session: `make_bucket("archive")`."""

    def make(label: str = "b") -> str:
        stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:30]
        name = f"{label}-{next(_bucket_ids)}-{stem}".strip("-")[:63].rstrip("-")
        return s3_server.create_bucket(name)

    return make


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[Callable[..., FaultProxy]]:
    """Start proxies in front of the session's server: `fault_proxy(latency=0.02, ...)`.

    Each is stopped at the end of the test (and would stop by itself after `lifetime`).
    """
    started: list[FaultProxy] = []

    def start(**kw: object) -> FaultProxy:
        kw.setdefault("lifetime", 600.0)
        proxy = FaultProxy("127.0.0.1", s3_server.port, **kw).start()  # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def sample_archive_dir(tmp_path: Path) -> Path:
    """Where a test writes its sample archive (a tmp dir; helper for readability)."""
    return tmp_path / "archive"
