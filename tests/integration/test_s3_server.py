"""The local S3 test bed itself: moto honours what Icechunk relies on, through the proxy too."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import icechunk
import numpy as np
import obstore
import pytest
import zarr
from botocore.exceptions import ClientError
from obstore.exceptions import AlreadyExistsError, PreconditionError

from tests.support.faultproxy import FAULT_503, FAULT_RESET, FaultProxy
from tests.support.s3server import REGION, S3Server


def test_session_env_has_dummy_credentials_only(s3_server: S3Server) -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_PROFILE" not in os.environ
    assert s3_server.endpoint.startswith("http://127.0.0.1:")


def test_conditional_writes_are_honoured_boto3(
    s3_server: S3Server, make_bucket: Callable[[str], str]
) -> None:
    bucket = make_bucket("cond")
    c = s3_server.boto3_client()
    first = c.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch='"not-the-etag"')
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    c.put_object(Bucket=bucket, Key="k", Body=b"4", IfMatch=first["ETag"])
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"4"


def test_conditional_writes_are_honoured_obstore(
    s3_server: S3Server, make_bucket: Callable[[str], str]
) -> None:
    store = s3_server.obstore_store(make_bucket("cond"))
    put = obstore.put(store, "k", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        obstore.put(store, "k", b"2", mode="create")
    with pytest.raises(PreconditionError):
        obstore.put(store, "k", b"3", mode={"e_tag": '"stale"'})
    obstore.put(store, "k", b"4", mode={"e_tag": put["e_tag"]})
    assert bytes(obstore.get(store, "k").bytes()) == b"4"


def test_range_get_reports_the_whole_object_size_and_etag(
    s3_server: S3Server, make_bucket: Callable[[str], str]
) -> None:
    bucket = make_bucket("range")
    s3_server.put_bytes(bucket, "obj", bytes(1000))
    result = obstore.get(s3_server.obstore_store(bucket), "obj", options={"range": (10, 20)})
    assert bytes(result.bytes()) == bytes(10)
    assert result.meta["size"] == 1000
    assert result.meta["e_tag"]


def test_upload_dir_and_paginated_listing(
    s3_server: S3Server, make_bucket: Callable[[str], str], tmp_path: Path
) -> None:
    for i in range(3):
        (tmp_path / "d" / f"{i:03d}").mkdir(parents=True)
        (tmp_path / "d" / f"{i:03d}" / "f.nc").write_bytes(b"x" * i)
    bucket = make_bucket("up")
    keys = s3_server.upload_dir(tmp_path / "d", bucket, "pre/fix")
    assert keys == ["pre/fix/000/f.nc", "pre/fix/001/f.nc", "pre/fix/002/f.nc"]
    assert s3_server.list_keys(bucket, "pre/") == keys


def _icechunk_repo(endpoint: str, bucket: str, prefix: str, *, create: bool) -> icechunk.Repository:
    storage = icechunk.s3_storage(
        bucket=bucket,
        prefix=prefix,
        region=REGION,
        endpoint_url=endpoint,
        allow_http=True,
        force_path_style=True,
        from_env=True,
    )
    if create:
        return icechunk.Repository.create(storage)
    return icechunk.Repository.open(storage)


def test_icechunk_detects_a_conflicting_commit_on_moto(
    s3_server: S3Server, make_bucket: Callable[[str], str]
) -> None:
    """Two sessions from the same snapshot: the second commit must be refused, not lost."""
    bucket = make_bucket("ice")
    repo = _icechunk_repo(s3_server.endpoint, bucket, "repo", create=True)
    s = repo.writable_session("main")
    root = zarr.group(s.store)
    root.create_array("a", shape=(4,), chunks=(1,), dtype="i4", fill_value=0)
    s.commit("init")

    s1 = repo.writable_session("main")
    s2 = repo.writable_session("main")
    zarr.open_array(s1.store, path="a")[0] = 1
    zarr.open_array(s2.store, path="a")[1] = 2
    s1.commit("one")
    with pytest.raises(icechunk.ConflictError):
        s2.commit("two")
    s2.rebase(icechunk.ConflictDetector())
    s2.commit("two, rebased")

    read = _icechunk_repo(s3_server.endpoint, bucket, "repo", create=False)
    a = zarr.open_array(read.readonly_session("main").store, path="a", mode="r")
    np.testing.assert_array_equal(a[:], [1, 2, 0, 0])
    assert [snap.message for snap in read.ancestry(branch="main")][:3] == [
        "two, rebased",
        "one",
        "init",
    ]


def test_icechunk_survives_faults_through_the_proxy(
    s3_server: S3Server,
    make_bucket: Callable[[str], str],
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    """Icechunk's own retries absorb 503s and resets: the test bed's faults are survivable."""
    bucket = make_bucket("icefault")
    proxy = fault_proxy(fault_rate=0.1, fault_kinds=[FAULT_503, FAULT_RESET], seed=7)
    repo = _icechunk_repo(proxy.endpoint, bucket, "repo", create=True)
    for i in range(3):
        s = repo.writable_session("main")
        root = zarr.open_group(s.store)
        arr = (
            root.create_array("a", shape=(3, 8), chunks=(1, 8), dtype="f8", fill_value=0)
            if i == 0
            else root["a"]
        )
        arr[i] = np.arange(8) + i
        s.commit(f"row {i}")
    assert proxy.stats.faults, "no fault was injected: the test proves nothing"
    clean = _icechunk_repo(s3_server.endpoint, bucket, "repo", create=False)
    a = zarr.open_array(clean.readonly_session("main").store, path="a", mode="r")
    np.testing.assert_array_equal(a[:], np.arange(8) + np.arange(3)[:, None])
