"""A refresh costs what changed: a new month in every series scans only the new files.

Shard scans reuse the per-file results of the shard's previous result (same key, size and
version, same template), so the result is the same bytes as a clean scan, each changed group is
committed once, and the cube equals a clean build of the grown archive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import xarray as xr

from tests.archives import write_daily_archive
from tests.conftest import SMALL, write_spec
from tests.integration.test_s3_build import s3_spec
from tests.support.faultproxy import FaultProxy
from tests.support.s3server import S3Server
from vcube import scan, steps, storage, template, validate, workarea
from vcube.places import Places
from vcube.run_local import run_local
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec


def _tip(spec: DatasetSpec) -> str:
    return str(Places.of(spec).repo().lookup_branch(spec.target.branch))


def _commits_since(spec: DatasetSpec, tip: str) -> list[dict[str, Any]]:
    """The metadata of the snapshots committed after `tip`, newest first."""
    out: list[dict[str, Any]] = []
    for snap in Places.of(spec).repo().ancestry(branch=spec.target.branch):
        if snap.id == tip:
            return out
        out.append(dict(snap.metadata))
    raise AssertionError(f"{tip} is not in the history of {spec.target.branch}")


def _scan_bytes(spec: DatasetSpec) -> dict[str, bytes]:
    work = Places.of(spec).work
    return {
        sid: storage.read_bytes(work, workarea.result_key(sid))
        for sid in workarea.load_plan(Places.of(spec).work, spec).shards
    }


def _virtual_refs(spec: DatasetSpec) -> dict[str, tuple[str, int, int, int]]:
    tmpl = template.load_template(Places.of(spec).work)
    names = [v.name for v in tmpl.variables.values() if v.kind == "virtual"]
    store = Places.of(spec).repo().readonly_session(spec.target.branch).store
    return validate.cube_refs(store, names)


def test_one_new_month_everywhere_scans_only_the_new_files(tmp_path: Path, make_spec) -> None:
    """Done-when 2 of issue 10 on the embedded executor."""
    root = tmp_path / "archive"
    write_sample_archive(root, **{**SMALL, "months": 2})
    _, spec = make_spec(root)
    first = run_local(spec, workers=2, progress=False)
    assert (first["scanned_files"], first["reused_files"]) == (8, 0)
    tip = _tip(spec)

    write_sample_archive(root, **SMALL)  # 3 months: one new file in each of the 4 series
    t0 = time.perf_counter()
    refresh = run_local(spec, workers=2, progress=False, samples=12)
    refresh_s = time.perf_counter() - t0
    # Only the 4 new files were opened; the 8 others came from the shards' previous results.
    assert (refresh["scanned_files"], refresh["reused_files"]) == (4, 8)
    kinds = [m.get("vcube") for m in _commits_since(spec, tip)]
    groups = sorted(m["group"] for m in _commits_since(spec, tip) if m.get("vcube") == "group")
    assert groups == ["000", "001"], "each group committed exactly once"
    assert kinds.count("group") == 2 and len(kinds) == 3  # + init growing elapsed_time

    _, clean = make_spec(root, name="clean")
    t0 = time.perf_counter()
    full = run_local(clean, workers=2, progress=False, samples=12)
    clean_s = time.perf_counter() - t0
    assert (full["scanned_files"], full["reused_files"]) == (12, 0)
    print(f"refresh {refresh_s:.2f} s (4 files scanned), clean build {clean_s:.2f} s (12)")

    with (
        validate.open_cube(spec, decode_times=False) as a,
        validate.open_cube(clean, decode_times=False) as b,
    ):
        assert a.sizes["elapsed_time"] == 3
        xr.testing.assert_identical(a.load(), b.load())
    refs = _virtual_refs(spec)
    assert refs and refs == _virtual_refs(clean)
    # The spec digests are equal (the target is not part of them): so are the scan results.
    assert spec.digest() == clean.digest()
    assert _scan_bytes(spec) == _scan_bytes(clean)


def test_reused_scans_are_the_bytes_of_a_clean_scan(tmp_path: Path) -> None:
    """Files of different lengths (leap years: the shard's arrays are padded to the longest),
    per-file time units, a contiguous variable and variable-length strings: a shard made of
    reused and new per-file scans is byte for byte a scan of all its files; a replaced file is
    scanned again."""
    root = tmp_path / "archive"
    # 2004 holds 366 days: the first results pad 2003's 365 to it, and 2003 is reused from there.
    _, raw = write_daily_archive(root, years=(2003, 2004), chunk=1, repo=tmp_path / "cube")
    _, spec = write_spec(tmp_path / "spec.yaml", raw)
    run_local(spec, workers=1, progress=False, samples=1)
    write_daily_archive(root, years=(2005, 2006), chunk=1, repo=tmp_path / "cube")
    # Another version of one old file (same bytes, new mtime): it is scanned again.
    replaced = sorted(root.rglob("*2003*.nc"))[1]
    os.utime(replaced, (replaced.stat().st_atime, replaced.stat().st_mtime + 10))
    steps.plan_step(spec)
    init = steps.init_step(spec)  # scans the layout shard (with reuse) to learn the lengths
    plan = workarea.load_plan(Places.of(spec).work, spec)
    assert init["files_scanned"] == 2 and plan.layout_shards == ["m00"]
    summaries = init["scans"] + [
        steps.scan_step(spec, sid) for sid in plan.shards if sid not in plan.layout_shards
    ]
    scanned = sum(s["files_scanned"] for s in summaries)
    reused = sum(s["files_reused"] for s in summaries)
    assert plan.n_files == 8 and (scanned, reused) == (5, 3)  # 2 new per member + the replaced
    reusing = _scan_bytes(spec)
    work = Places.of(spec).work
    for sid in plan.shards:
        storage.delete(work, workarea.result_key(sid))
    clean = [steps.scan_step(spec, sid) for sid in plan.shards]
    assert sum(s["files_scanned"] for s in clean) == 8
    assert _scan_bytes(spec) == reusing
    res = scan.read_result(next(iter(reusing.values())))
    lengths = [f["steps"][-1] for f in res.meta["files"]]
    assert sorted(set(lengths)) == [365, 366]  # the padding case is exercised
    assert res.values["label"].dtype.kind == "U"


def test_reuse_needs_the_same_template(tmp_path: Path, sample_archive: Path, make_spec) -> None:
    """A result made against another template is not reused (every file is scanned again)."""
    _, spec = make_spec(sample_archive)
    steps.plan_step(spec)
    steps.init_step(spec)
    plan = workarea.load_plan(Places.of(spec).work, spec)
    sid = next(s for s in plan.shards if s not in plan.layout_shards)
    steps.scan_step(spec, sid)
    work = Places.of(spec).work
    data = storage.read_bytes(work, workarea.result_key(sid))
    tmpl = template.load_template(Places.of(spec).work)
    assert len(scan.reusable_scans(data, tmpl, spec.cube.dim_names)) == plan.shards[sid]["files"]
    other = template.load_template(Places.of(spec).work)
    other.variables.pop(next(v.name for v in other.virtual_varying()))
    assert other.digest != tmpl.digest
    assert scan.reusable_scans(data, other, spec.cube.dim_names) == {}
    assert scan.reusable_scans(b"not a zip", tmpl, spec.cube.dim_names) == {}


def test_scan_step_reports_files_scanned_as_outputs(tmp_path: Path, make_spec) -> None:
    """The counts are Argo output parameters of the scan pods (one file per scalar)."""
    root = tmp_path / "archive"
    write_sample_archive(root, **{**SMALL, "months": 2})
    path, spec = make_spec(root)
    run_local(spec, workers=1, progress=False, samples=1)
    write_sample_archive(root, **SMALL)
    vcube = [sys.executable, "-m", "vcube.cli"]
    for verb in (["plan"], ["init"]):
        subprocess.run([*vcube, *verb, str(path)], check=True, capture_output=True)
    plan = workarea.load_plan(Places.of(spec).work, spec)
    sid = next(s for s in plan.shards if s not in plan.layout_shards)  # init scanned those
    out = tmp_path / "outputs"
    r = subprocess.run(
        [*vcube, "scan", str(path), "--shard", sid, "--outputs-dir", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    summary = json.loads(r.stdout)
    assert (summary["files_scanned"], summary["files_reused"]) == (1, 2)
    assert (out / "files_scanned").read_text().strip() == "1"
    assert (out / "files_reused").read_text().strip() == "2"
    assert summary["files"] == 3


def test_refresh_over_s3_reads_only_the_new_files(
    s3_server: S3Server, tmp_path: Path, aws_test_env: dict[str, str]
) -> None:
    """The same on the local S3 server (ETags as versions): the scans of the refresh GET only
    the new objects, and the result equals a clean build in another bucket."""
    local = tmp_path / "archive"
    old = write_sample_archive(local, **{**SMALL, "months": 2})
    archive = s3_server.create_bucket("refresh-archive")
    s3_server.upload_dir(local, archive, "data")
    with FaultProxy("127.0.0.1", s3_server.port) as fp:
        _, spec = s3_spec(
            tmp_path / "a.yaml", fp.endpoint, archive, s3_server.create_bucket("refresh-a")
        )
        assert run_local(spec, workers=1, progress=False, samples=1)["scanned_files"] == 8
        tip = _tip(spec)
        grown = write_sample_archive(local, **SMALL)
        new = [p.relative_to(local).as_posix() for p in grown if p not in old]
        assert len(new) == 4
        s3_server.upload_dir(local, archive, "data")  # same bytes again for the old files
        start = fp.stats.requests
        steps.plan_step(spec)
        init = steps.init_step(spec)
        plan = workarea.load_plan(Places.of(spec).work, spec)
        scans = [steps.scan_step(spec, s) for s in plan.shards if s not in plan.layout_shards]
        assert init["files_scanned"] + sum(s["files_scanned"] for s in scans) == 4
        got = {
            r.target.split("?")[0].split(f"/{archive}/data/", 1)[1]
            for r in fp.stats.records[start:]
            if r.method == "GET" and f"/{archive}/data/" in r.target.split("?")[0]
        }
        assert sorted(got) == sorted(new), "only the new objects are read"
        steps.commit_all_step(spec)
        steps.validate_step(spec, samples=2)
        groups = [m["group"] for m in _commits_since(spec, tip) if m.get("vcube") == "group"]
        assert sorted(groups) == ["000", "001"]

        _, clean = s3_spec(
            tmp_path / "b.yaml", fp.endpoint, archive, s3_server.create_bucket("refresh-b")
        )
        assert run_local(clean, workers=1, progress=False, samples=1)["scanned_files"] == 12
        with (
            validate.open_cube(spec, decode_times=False) as a,
            validate.open_cube(clean, decode_times=False) as b,
        ):
            xr.testing.assert_identical(a.load(), b.load())
        assert _virtual_refs(spec) == _virtual_refs(clean)
        assert _scan_bytes(spec) == _scan_bytes(clean)


def _vcube(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vcube.cli", *args], check=check, capture_output=True, text=True
    )


def test_a_new_month_is_scanned_by_fewer_pods_than_shards(tmp_path: Path, make_spec) -> None:
    """The fan-out of a refresh packs shards with little to scan (`vcube.packing`): plan's
    groups.json for one new month everywhere is one work item of one scan pod, and `vcube scan
    --shard A,B,C,D` writes each shard's result as a scan per shard does (the bytes of a clean
    build's), its summary and outputs adding up over the shards."""
    root = tmp_path / "archive"
    write_sample_archive(root, **{**SMALL, "months": 2})
    path, spec = make_spec(root)
    out = tmp_path / "out"
    _vcube("plan", str(path), "--outputs-dir", str(out))
    first = json.loads((out / "groups.json").read_text())
    # A full build: an item per group, a pod per shard (nothing to reuse).
    assert first == [
        {"group": "000", "shards": ["000-01", "000-04"]},
        {"group": "001", "shards": ["001-01", "001-04"]},
    ]
    run_local(spec, workers=2, progress=False, samples=1)

    write_sample_archive(root, **SMALL)  # one new file in each of the 4 series
    planned = json.loads(_vcube("plan", str(path), "--outputs-dir", str(out)).stdout)
    items = json.loads((out / "groups.json").read_text())
    assert items == [{"group": "p0000", "shards": ["000-01,000-04,001-01,001-04"]}]
    assert (planned["todo"], planned["work_items"], planned["scan_pods"]) == (2, 1, 1)
    assert planned["scan_pods"] < planned["shards"] == 4
    init = json.loads(_vcube("init", str(path)).stdout)
    assert init["files_scanned"] == 2  # the layout shards 000-01 and 000-04
    pod = tmp_path / "pod"
    summary = json.loads(
        _vcube(
            "scan", str(path), "--shard", items[0]["shards"][0], "--outputs-dir", str(pod)
        ).stdout
    )
    assert (summary["shards"], summary["files"]) == (4, 12)
    assert (summary["files_scanned"], summary["files_reused"]) == (2, 10)
    assert (pod / "files").read_text() == "12"  # the Argo output parameter of the scan
    assert (pod / "files_scanned").read_text() == "2"
    committed = json.loads(_vcube("commit-all", str(path)).stdout)
    assert (committed["groups"], committed["committed"]) == (2, 2)

    _, clean = make_spec(root, name="clean")
    run_local(clean, workers=2, progress=False, samples=1)
    assert _scan_bytes(spec) == _scan_bytes(clean)
    with (
        validate.open_cube(spec, decode_times=False) as a,
        validate.open_cube(clean, decode_times=False) as b,
    ):
        xr.testing.assert_identical(a.load(), b.load())


def test_a_bad_file_in_packed_scans_fails_its_shard_after_the_others(
    tmp_path: Path, make_spec
) -> None:
    """Exit 1 naming the file, as a scan of its shard alone; the other shards of the pod are
    scanned all the same (their groups need not wait), and only the bad shard is marked failed."""
    root = tmp_path / "archive"
    old = set(write_sample_archive(root, **{**SMALL, "months": 2}))
    path, spec = make_spec(root)
    run_local(spec, workers=2, progress=False, samples=1)
    new = sorted(set(write_sample_archive(root, **SMALL)) - old)
    bad = next(p for p in new if "001/01/" in p.as_posix())
    bad.write_bytes(b"not an HDF5 file")
    _vcube("plan", str(path))
    _vcube("init", str(path))
    r = _vcube("scan", str(path), "--shard", "001-01,001-04,000-04", check=False)
    assert r.returncode == 1, r.stderr
    assert bad.name in r.stderr
    work = Places.of(spec).work
    plan = workarea.load_plan(work, spec)
    tmpl = template.load_template(work)
    for sid in ("001-04", "000-04"):
        meta = scan.read_meta(storage.read_bytes(work, workarea.result_key(sid)))
        assert meta["digest"] == scan.result_digest(plan.shards[sid]["digest"], tmpl)
        assert not storage.exists(work, workarea.error_key(sid))
    assert bad.name in json.loads(storage.read_bytes(work, workarea.error_key("001-01")))["error"]
    # Two bad shards in one pod: one failure naming both.
    other = next(p for p in new if "000/01/" in p.as_posix())
    other.write_bytes(b"not an HDF5 file either")
    _vcube("plan", str(path))
    r = _vcube("scan", str(path), "--shard", "001-01,000-01", check=False)
    assert r.returncode == 1, r.stderr
    assert "2 of 2 shards failed" in r.stderr
    assert bad.name in r.stderr and other.name in r.stderr
