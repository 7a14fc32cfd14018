"""The sample build with everything in S3 (moto on 127.0.0.1): archive in one bucket, repo and
work area in another, reads of the cube through the virtual chunk container over the endpoint.

Every request goes through a counting proxy, so the tests also see what the build costs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.conftest import spec_dict, write_spec
from tests.support.faultproxy import FAULT_503, FAULT_RESET, FaultProxy
from tests.support.s3server import REGION, S3Server
from vcube import scan, steps, storage, template, validate, workarea
from vcube.places import Places
from vcube.repo import history
from vcube.run_local import run_local
from vcube.spec import DatasetSpec

VCUBE = [sys.executable, "-m", "vcube.cli"]
_ids = itertools.count()

# GETs of source objects per scanned file by `vcube scan` (sample files: 12x10 grid, 5 levels,
# ~415 KB each; shards of 3 files). Measured 3.67: the first file of a shard walks read by read
# (64 KiB blocks: 5 GETs, one after another), the next ones come prefetched in one round trip of
# ~3 parallel GETs (the previous walk's reads widened by 24 KiB, in 16 KiB blocks). On big
# shards the first file's cost fades; on full-grid files the steady state is ~50 parallel GETs,
# ~3 MB, one round trip per file (tests/support/measure_remote.py). Any growth fails the test.
GET_BUDGET_PER_FILE = 4
# Bytes of source objects read per scanned file: issue 6's ceiling for real files.
BYTES_BUDGET_PER_FILE = 4_000_000


def _storage_opts(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "region": REGION, "force_path_style": True, "allow_http": True}


def s3_spec(
    path: Path, endpoint: str, archive: str, cubes: str, *, prefix: str = "data"
) -> tuple[Path, DatasetSpec]:
    """datasets/sample.yaml pointed at s3://archive/prefix/ and s3://cubes/{cube,work}."""
    raw = spec_dict(f"s3://{archive}/{prefix}/", f"s3://{cubes}/cube")
    raw["source"]["storage"] = _storage_opts(endpoint)
    raw["target"]["storage"] = _storage_opts(endpoint)
    raw["target"]["work"] = f"s3://{cubes}/work"
    return write_spec(path, raw)


def _vcube(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VCUBE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


@contextlib.contextmanager
def _initialized(
    s3_server: S3Server, s3_archive: str, tmp_path: Path, *, scan: bool = False, **proxy: Any
) -> Iterator[tuple[FaultProxy, Path, DatasetSpec]]:
    """A new cubes bucket behind a proxy on the S3 server: planned, initialized, and with
    `scan` every shard scanned. Yields (proxy, spec file, spec)."""
    cubes = s3_server.create_bucket(f"cubes-{next(_ids)}")
    with FaultProxy("127.0.0.1", s3_server.port, **proxy) as fp:
        path, spec = s3_spec(tmp_path / "spec.yaml", fp.endpoint, s3_archive, cubes)
        steps.plan_step(spec)
        steps.init_step(spec)
        if scan:
            for sid in workarea.load_plan(Places.of(spec).work, spec).shards:
                steps.scan_step(spec, sid)
        yield fp, path, spec


def _archive_gets(proxy: FaultProxy, bucket: str) -> int:
    return len(proxy.stats.matching("GET", f"/{bucket}/"))


@dataclass
class Built:
    spec: DatasetSpec
    spec_path: Path
    proxy: FaultProxy
    archive: str
    cubes: str
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def s3_archive(s3_server: S3Server, sample_archive: Path) -> str:
    """The session's sample archive uploaded once: s3://<bucket>/data/..."""
    bucket = s3_server.create_bucket(f"archive-{next(_ids)}")
    s3_server.upload_dir(sample_archive, bucket, "data")
    return bucket


@pytest.fixture(scope="module")
def built(
    s3_server: S3Server, s3_archive: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    """A clean build through a counting proxy (no latency, no faults)."""
    cubes = s3_server.create_bucket(f"cubes-{next(_ids)}")
    proxy = FaultProxy("127.0.0.1", s3_server.port, lifetime=900).start()
    path, spec = s3_spec(
        tmp_path_factory.mktemp("s3built") / "spec.yaml", proxy.endpoint, s3_archive, cubes
    )
    summary = run_local(spec, workers=2, progress=False, samples=2)
    yield Built(spec, path, proxy, s3_archive, cubes, summary)
    proxy.stop()


def test_build_puts_everything_in_the_right_bucket(s3_server: S3Server, built: Built) -> None:
    assert built.summary["files"] == 12
    keys = s3_server.list_keys(built.cubes)
    assert any(k.startswith("cube/") for k in keys)
    assert any(k.startswith("work/scans/") for k in keys)
    assert all(k.startswith(("cube/", "work/")) for k in keys)
    # The archive bucket is only read.
    assert not built.proxy.stats.matching("PUT", f"/{built.archive}/")
    assert not built.proxy.stats.matching("DELETE", f"/{built.archive}/")


def test_files_read_back_through_the_virtual_container(built: Built) -> None:
    """Every variable of one file per group (the build's validate step sampled others)."""
    spec = built.spec
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    files = [validate.planned_files(spec, plan, [g])[-1] for g in plan.groups]
    before = len(built.proxy.stats.matching("GET", f"/{built.archive}/"))
    with validate.open_cube(spec, decode_times=False) as cube_ds:
        problems = validate.compare_files(
            spec, tmpl, cube_ds, files, include_static=True, decode_times=False
        )
        assert problems == []
    assert len(files) == 2
    # Chunks came from the archive over the endpoint (ranged GETs by Icechunk).
    ranged = [
        r
        for r in built.proxy.stats.matching("GET", f"/{built.archive}/")[before:]
        if r.range is not None
    ]
    assert ranged


def test_history_has_init_and_one_commit_per_group(built: Built) -> None:
    hist = history(Places.of(built.spec).repo(), built.spec.target.branch)
    assert hist.init is not None
    assert sorted(hist.groups) == ["000", "001"]
    repo = Places.of(built.spec).repo()
    kinds = [s.metadata.get("group") for s in repo.ancestry(branch=built.spec.target.branch)]
    assert sorted(k for k in kinds if k) == ["000", "001"]


def test_rerun_is_a_no_op(built: Built) -> None:
    start = built.proxy.stats.requests
    summary = run_local(built.spec, workers=1, progress=False, samples=1)
    assert summary["scanned_files"] == 0
    assert summary["up_to_date"] is True
    writes = [
        r
        for r in built.proxy.stats.records[start:]
        if r.method in ("PUT", "POST", "DELETE") and f"/{built.cubes}/cube/" in r.target
    ]
    assert writes == [], "a rerun must not write to the repo"


def test_opening_snippet_reads_the_cube_in_a_fresh_interpreter(
    built: Built, sample_archive: Path
) -> None:
    info = _vcube("info", str(built.spec_path))
    assert info.returncode == 0, info.stderr
    snippet = info.stdout
    assert "endpoint_url" in snippet
    code = snippet + "\nimport json\nprint(json.dumps(" + _SUMS_EXPR + "))\n"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # The same numbers from the original files on disk, placed by the plan.
    spec = built.spec
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    dims = ("polygon_id", "injection_date", "elapsed_time")
    shape = [d["length"] for d in plan.dims]
    expected = np.full(len(got), np.nan)
    for pf in validate.planned_files(spec, plan):
        region = validate.file_region(spec, tmpl, pf.pos)
        idx = tuple(r.start if isinstance(r, slice) else r for r in (region[d] for d in dims))
        with xr.open_dataset(sample_archive / pf.key) as ref:
            expected[np.ravel_multi_index(idx, shape)] = float(ref["DIC"].sum(skipna=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


_SUMS_EXPR = (
    "[float(x) for x in ds['DIC'].sum(dim=[d for d in ds['DIC'].dims if d not in "
    "('polygon_id', 'injection_date', 'elapsed_time')], skipna=True).values.ravel()]"
)


def test_scan_gets_per_file_within_budget(
    s3_server: S3Server, s3_archive: str, tmp_path: Path
) -> None:
    """Request accounting: GETs of source objects per scanned file, against a budget."""
    with _initialized(s3_server, s3_archive, tmp_path, lifetime=300) as (proxy, path, spec):
        plan = workarea.load_plan(Places.of(spec).work, spec)
        proxy.reset_stats()
        files = 0
        for sid in plan.shards:
            r = _vcube("scan", str(path), "--shard", sid)
            assert r.returncode == 0, r.stderr
            files += json.loads(r.stdout)["files"]
        gets = proxy.stats.matching("GET", f"/{s3_archive}/")
        heads = proxy.stats.matching("HEAD", f"/{s3_archive}/")
    per_file = len(gets) / files
    fetched = sum(g.body_bytes for g in gets) / files
    print(f"scan: {files} files, {per_file:.2f} GET/file, {len(heads)} HEAD, {fetched:.0f} B/file")
    assert files == 12
    assert per_file <= GET_BUDGET_PER_FILE, (
        f"{per_file:.2f} GETs per scanned file, budget {GET_BUDGET_PER_FILE}"
    )
    assert fetched <= BYTES_BUDGET_PER_FILE
    assert all(g.range is not None for g in gets), "a scan must never GET a whole source file"


def test_listing_paginates_and_reports_unexpected_keys(s3_server: S3Server, tmp_path: Path) -> None:
    """1,100 planned keys (more than one 1,000-key page) plus stray objects."""
    from concurrent.futures import ThreadPoolExecutor

    archive = s3_server.create_bucket(f"archive-{next(_ids)}")
    cubes = s3_server.create_bucket(f"cubes-{next(_ids)}")
    keys = [
        f"data/{p:03d}/01/alk-forcing.{p:03d}-1999-01.pop.h.{347 + m // 12:04d}-{m % 12 + 1:02d}.nc"
        for p in range(10)
        for m in range(110)
    ]
    stray = ["data/README.md", "data/000/01/notes.txt", "data/000/01/alk-forcing.000.tmp"]
    client = s3_server.boto3_client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=archive, Key=k, Body=b""), keys + stray))
    with FaultProxy("127.0.0.1", s3_server.port, lifetime=300) as proxy:
        path, _ = s3_spec(tmp_path / "spec.yaml", proxy.endpoint, archive, cubes)
        r = _vcube("plan", str(path), "--allow-missing")
        lists = [x for x in proxy.stats.matching("GET", f"/{archive}") if "list-type=2" in x.target]
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["files"] == 1100
    assert summary["unexpected"] == 3
    assert set(summary["unexpected_examples"]) == {k.removeprefix("data/") for k in stray}
    assert summary["groups"] == 10
    assert len(lists) >= 2, "1,103 keys cannot come in one 1,000-key page"


@pytest.mark.parametrize("racers", [("000", "001"), ("001", "001")])
def test_racing_commits_on_one_branch(
    s3_server: S3Server, s3_archive: str, tmp_path: Path, racers: tuple[str, str]
) -> None:
    """Two `vcube commit` processes at once: every group lands exactly once, even when both
    processes commit the same group (the loser sees it in the history after its rebase)."""
    # Latency widens the window in which both sessions hold the same parent snapshot.
    with _initialized(s3_server, s3_archive, tmp_path, scan=True, latency=0.01, lifetime=300) as (
        _,
        path,
        spec,
    ):
        procs = [
            subprocess.Popen(
                [*VCUBE, "commit", str(path), "--group", g],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=os.environ.copy(),
            )
            for g in racers
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        changed = []
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
            changed.append(json.loads(out)["changed"])
        assert changed.count(True) == len(set(racers))
        if len(set(racers)) == 1:
            steps.commit_step(spec, "000")
        repo = Places.of(spec).repo()
        groups = [s.metadata.get("group") for s in repo.ancestry(branch="main")]
        assert sorted(g for g in groups if g) == ["000", "001"]
        # validate_cube raises ValidationFailed on any problem; the summary says what it saw.
        res = validate.validate_cube(
            spec,
            workarea.load_plan(Places.of(spec).work, spec),
            template.load_template(Places.of(spec).work),
            samples=2,
        )
        assert (res["groups"], res["committed"]) == (2, 2)
        assert res["files_checked_for_chunks"] == 12
        assert res["files_compared"] == 2


def _dataset_equal(a: DatasetSpec, b: DatasetSpec) -> None:
    with (
        validate.open_cube(a, decode_times=False) as da,
        validate.open_cube(b, decode_times=False) as db,
    ):
        xr.testing.assert_identical(da.load(), db.load())


def _assert_same_scans(a: DatasetSpec, b: DatasetSpec) -> None:
    """Same refs, values and file versions in every shard result.

    Not the raw bytes: the results carry the spec's digest, and the two specs differ in their
    endpoint (two proxies), which is part of the source description.
    """
    plans = workarea.load_plan(Places.of(a).work, a), workarea.load_plan(Places.of(b).work, b)
    assert sorted(plans[0].shards) == sorted(plans[1].shards)
    for sid in plans[0].shards:
        ra, rb = (
            scan.read_result(storage.read_bytes(Places.of(s).work, workarea.result_key(sid)))
            for s in (a, b)
        )
        assert ra.meta["files"] == rb.meta["files"]
        for kind in ("offsets", "lengths", "values"):
            xa, xb = getattr(ra, kind), getattr(rb, kind)
            assert sorted(xa) == sorted(xb)
            for name in xa:
                np.testing.assert_array_equal(xa[name], xb[name], err_msg=f"{sid} {kind} {name}")


@pytest.mark.slow
def test_faults_and_latency_give_the_identical_cube(
    s3_server: S3Server, s3_archive: str, built: Built, tmp_path: Path
) -> None:
    """5% of requests answered 503 SlowDown or reset, 20 ms each: same cube as a clean build."""
    cubes = s3_server.create_bucket(f"cubes-{next(_ids)}")
    with FaultProxy(
        "127.0.0.1",
        s3_server.port,
        latency=0.02,
        fault_rate=0.05,
        fault_kinds=[FAULT_503, FAULT_RESET],
        seed=5,
        lifetime=600,
    ) as proxy:
        _, spec = s3_spec(tmp_path / "spec.yaml", proxy.endpoint, s3_archive, cubes)
        summary = run_local(spec, workers=2, progress=False, samples=1)
        faults = proxy.stats.faults
        proxy.fault_rate = 0.0  # compare without faults (the repo's container uses this proxy)
        assert summary["files"] == 12
        assert sum(faults.values()) >= 5, f"too few faults injected to prove anything: {faults}"
        assert faults[FAULT_503] and faults[FAULT_RESET]
        _assert_same_scans(spec, built.spec)
        _dataset_equal(spec, built.spec)
        hist = history(Places.of(spec).repo(), "main")
        assert sorted(hist.groups) == ["000", "001"]


# How long a step may take to give up once the server is gone (measured: 29-37 s, from
# obstore's and Icechunk's retry budgets).
GONE_TIMEOUT = 180


def _kill_when(proxy: FaultProxy, predicate: Any, timeout: float) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(proxy.stats):
                proxy.kill()
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_server_gone_fails_in_bounded_time_and_keeps_the_last_commit(
    s3_server: S3Server, s3_archive: str, tmp_path: Path
) -> None:
    with _initialized(s3_server, s3_archive, tmp_path, scan=True, lifetime=600) as (
        proxy,
        path,
        spec,
    ):
        steps.commit_step(spec, "000")
        direct = _direct(spec, s3_server)
        tip_before = history(Places.of(direct).repo(), "main").tip
        proxy.reset_stats()
        # The server goes away in the middle of the next commit (after its first write).
        watcher = _kill_when(proxy, lambda s: any(r.method == "PUT" for r in s.records), 120)
        t0 = time.monotonic()
        try:
            r = _vcube("commit", str(path), "--group", "001", timeout=GONE_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            pytest.fail(
                f"`vcube commit` still running {GONE_TIMEOUT} s after the server went away; "
                f"stderr: {(e.stderr or b'')[-2000:]!r}"
            )
        elapsed = time.monotonic() - t0
        watcher.join(1)
        assert not proxy.alive, "the proxy was never killed: the commit wrote nothing?"
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()[-1]
    assert "vcube" in err or "error" in err.lower()
    assert elapsed < GONE_TIMEOUT, f"took {elapsed:.0f} s to give up"
    # Through the real server: the branch is still at the last good commit.
    hist = history(Places.of(direct).repo(), "main")
    assert hist.tip == tip_before
    assert sorted(hist.groups) == ["000"]
    print(f"server gone: failed after {elapsed:.1f} s: {err}")


def _direct(spec: DatasetSpec, server: S3Server) -> DatasetSpec:
    """The same spec talking to the server directly (not through a proxy that may be dead)."""
    raw = spec.model_dump()
    raw["source"]["storage"]["endpoint"] = server.endpoint
    raw["target"]["storage"]["endpoint"] = server.endpoint
    return DatasetSpec.model_validate(raw)


def test_template_file_is_read_once(s3_server: S3Server, s3_archive: str, tmp_path: Path) -> None:
    """Deriving the template (VirtualiZarr's parse and vcube's own h5py checks) fetches every
    byte of the template file at most once: one reader, shared by both."""
    cubes = s3_server.create_bucket(f"cubes-{next(_ids)}")
    with FaultProxy("127.0.0.1", s3_server.port, lifetime=300) as fp:
        _, spec = s3_spec(tmp_path / "spec.yaml", fp.endpoint, s3_archive, cubes)
        steps.plan_step(spec)
        key = workarea.template_file(
            Places.of(spec).work, spec, workarea.load_plan(Places.of(spec).work, spec)
        ).key
        fp.reset_stats()
        template.derive_template(Places.of(spec).source, spec, key)
        reads = fp.stats.matching(None, f"/{s3_archive}/data/{key}")
    fetched = sum(r.body_bytes for r in reads)
    distinct = _union_length((r.range[0], r.range[0] + r.body_bytes) for r in reads if r.range)
    print(f"template: {len(reads)} requests, {fetched} B fetched, {distinct} B distinct")
    assert fetched == distinct, f"{fetched - distinct} B of {key} fetched more than once"
    assert all(r.range is not None for r in reads if r.method == "GET")


def _union_length(ranges: Iterable[tuple[int, int]]) -> int:
    """Bytes covered by [start, end) ranges, each byte counted once."""
    total, reach = 0, 0
    for a, z in sorted(ranges):
        total += max(0, z - max(a, reach))
        reach = max(reach, z)
    return total
