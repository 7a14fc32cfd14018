"""`vcube commit-all`: one committer that commits each group as soon as its scans are complete,
while the scans go on (issue 10's fan-in). Real netCDF4 files, a real local Icechunk repo, the
CLI in child processes (killed with SIGKILL in one test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from vcube import steps, workarea
from vcube.places import Places
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec

VCUBE = [sys.executable, "-m", "vcube.cli"]
POLYGONS = 6
GROUPS = [f"{p:03d}" for p in range(POLYGONS)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("commit-all") / "archive"
    write_sample_archive(root, polygons=POLYGONS, dates=2, months=2, grid=(6, 5), levels=2)
    return root


@pytest.fixture
def planned(
    archive: Path, make_spec: Callable[..., tuple[Path, DatasetSpec]]
) -> tuple[Path, DatasetSpec]:
    spec_file, spec = make_spec(archive)
    steps.plan_step(spec)
    steps.init_step(spec)
    return spec_file, spec


def _group_commits(spec: DatasetSpec) -> list[str]:
    repo = Places.of(spec).repo()
    return [
        str(s.metadata["group"])
        for s in repo.ancestry(branch=spec.target.branch)
        if (s.metadata or {}).get("vcube") == "group"
    ]


def _committed(spec: DatasetSpec) -> list[str]:
    """What another process sees on the branch: the repo opened afresh (no cached Repository)."""
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(spec.target.repo))
    return [
        str(x.metadata["group"])
        for x in repo.ancestry(branch=spec.target.branch)
        if (x.metadata or {}).get("vcube") == "group"
    ]


def _landed(spec: DatasetSpec, n: int) -> bool:
    return len(_committed(spec)) >= n


def _scan_group(spec: DatasetSpec, group: str) -> None:
    for sid in workarea.load_plan(Places.of(spec).work, spec).groups[group]:
        steps.scan_step(spec, sid)


def _wait_for(
    pred: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the committer exited {proc.returncode}: {err[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_commits_groups_while_scans_go_on(
    planned: tuple[Path, DatasetSpec], tmp_path: Path
) -> None:
    spec_file, spec = planned
    progress = tmp_path / "progress"
    proc = subprocess.Popen(
        [*VCUBE, "commit-all", str(spec_file), "--run-id", "run-1", "--poll", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ARGO_PROGRESS_FILE": str(progress)},
    )
    try:
        _wait_for(progress.exists, 120, "the committer to start", proc)
        # init scanned the shards it learns the layout from: those groups are complete already.
        pre = sorted(
            g for g, e in steps.status_step(spec)["groups"].items() if e["state"] == "waiting"
        )
        assert "003" not in pre and "004" not in pre
        _wait_for(lambda: sorted(_committed(spec)) == pre, 120, f"{pre}", proc)
        # Groups complete out of order; each is committed while the others are not scanned.
        _scan_group(spec, "004")
        _wait_for(lambda: sorted(_committed(spec)) == sorted([*pre, "004"]), 120, "004", proc)
        assert progress.read_text() == f"{len(pre) + 1}/{POLYGONS}"
        _scan_group(spec, "003")
        done = sorted([*pre, "003", "004"])
        _wait_for(lambda: sorted(_committed(spec)) == done, 120, "003 and 004", proc)
        assert proc.poll() is None  # still waiting for the rest
        assert progress.read_text() == f"{len(done)}/{POLYGONS}"
        for g in GROUPS:
            if g not in done:
                _scan_group(spec, g)
        res = subprocess.run(
            [*VCUBE, "scans-done", str(spec_file), "--run-id", "run-1"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(res.stdout)["marker"] == "fanin/run-1/scans-done"
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["groups"] == POLYGONS
    assert summary["committed"] == POLYGONS
    assert progress.read_text() == f"{POLYGONS}/{POLYGONS}"
    commits = _group_commits(spec)
    assert sorted(commits) == GROUPS  # each group exactly once
    # newest first: the groups init completed, then 004, then 003, then the rest
    assert commits[-len(pre) - 2 :] == ["003", "004", *sorted(pre, reverse=True)]
    val = steps.validate_step(spec, samples=2)
    assert val["files_checked_for_chunks"] == POLYGONS * 4
    # Nothing left: a second committer has nothing to do and commits nothing.
    again = subprocess.run(
        [*VCUBE, "commit-all", str(spec_file)], capture_output=True, text=True, check=True
    )
    assert json.loads(again.stdout)["groups"] == 0
    assert len(_group_commits(spec)) == POLYGONS


def test_incomplete_groups_fail_by_name_once_scans_are_over(
    archive: Path, make_spec: Callable[..., tuple[Path, DatasetSpec]], tmp_path: Path
) -> None:
    bad_root = tmp_path / "bad-archive"
    subprocess.run(["cp", "-a", str(archive), str(bad_root)], check=True)
    bad = sorted((bad_root / "004" / "04").glob("*.nc"))[0]
    bad.write_bytes(b"not an HDF5 file")
    spec_file, spec = make_spec(bad_root, name="bad")
    steps.plan_step(spec)
    steps.init_step(spec)
    plan = workarea.load_plan(Places.of(spec).work, spec)
    for g in GROUPS:
        if g == "005":
            continue  # never scanned
        for sid in plan.groups[g]:
            try:
                steps.scan_step(spec, sid)
            except Exception:
                assert sid == "004-04"
    steps.scans_done_step(spec, "run-2")
    res = subprocess.run(
        [*VCUBE, "commit-all", str(spec_file), "--run-id", "run-2", "--poll", "0.2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stderr
    msg = res.stderr.strip().splitlines()[-1]
    assert "2 of 6 groups not committed" in msg
    assert "004 (004-04: " in msg and bad.name in msg
    assert "005 (scans missing)" in msg
    assert sorted(_group_commits(spec)) == ["000", "001", "002", "003"]


def test_a_group_that_cannot_be_committed_does_not_stop_the_others(
    archive: Path, make_spec: Callable[..., tuple[Path, DatasetSpec]], tmp_path: Path
) -> None:
    """Group 003's times disagree with the cube's: it fails by name, 004 and 005 (after it in
    the plan's order) are still committed, and the branch holds no trace of 003."""
    import h5py
    import numpy as np

    bad_root = tmp_path / "bad-archive"
    subprocess.run(["cp", "-a", str(archive), str(bad_root)], check=True)
    for f in sorted((bad_root / "003").rglob("*.nc")):
        with h5py.File(f, "r+") as h:
            h["time"][...] = np.asarray(h["time"][...]) + 1.0
    spec_file, spec = make_spec(bad_root, name="shifted")
    steps.plan_step(spec)
    steps.init_step(spec)
    for g in GROUPS:
        _scan_group(spec, g)
    res = subprocess.run(
        [*VCUBE, "commit-all", str(spec_file)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 1, res.stderr
    msg = res.stderr.strip().splitlines()[-1]
    assert "1 of 6 groups not committed: 003 (group 003: " in msg, msg
    assert sorted(_group_commits(spec)) == ["000", "001", "002", "004", "005"]


def test_killed_committer_resumes_without_duplicates(planned: tuple[Path, DatasetSpec]) -> None:
    """kill -9 once the first commit has landed; the re-run commits the rest, each group once."""
    spec_file, spec = planned
    for g in GROUPS:
        _scan_group(spec, g)
    proc = subprocess.Popen(
        [*VCUBE, "commit-all", str(spec_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for(lambda: len(_committed(spec)) >= 1, 120, "the first commit")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    landed = _committed(spec)
    assert proc.returncode == -signal.SIGKILL, "the committer finished before the kill"
    assert 1 <= len(landed) < POLYGONS
    res = subprocess.run(
        [*VCUBE, "commit-all", str(spec_file)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["groups"] == POLYGONS - len(landed)
    assert sorted(_group_commits(spec)) == GROUPS
    assert steps.validate_step(spec, samples=2)["files_checked_for_chunks"] == POLYGONS * 4


def test_committer_killed_at_five_points_ends_like_a_clean_build(
    archive: Path, make_spec: Callable[..., tuple[Path, DatasetSpec]]
) -> None:
    """kill -9 of `vcube commit-all` at five moments of its run (start-up, then while the 2nd to
    5th commits are written); each re-run gives the clean build's cube, one commit per group."""
    import xarray as xr

    from vcube import validate

    def prepared(name: str) -> tuple[Path, DatasetSpec]:
        spec_file, spec = make_spec(archive, name=name)
        steps.plan_step(spec)
        steps.init_step(spec)
        for g in GROUPS:
            _scan_group(spec, g)
        return spec_file, spec

    def committer(spec_file: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*VCUBE, "commit-all", str(spec_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    clean_file, clean = prepared("clean")
    t0 = time.perf_counter()
    proc = committer(clean_file)
    _wait_for(lambda: len(_committed(clean)) >= 1, 120, "the clean run's first commit", proc)
    first_commit = time.perf_counter() - t0
    assert proc.wait(timeout=300) == 0
    with validate.open_cube(clean, decode_times=False) as ds:
        reference = ds.load()
    # Kill points: during start-up (nothing committed yet), then as soon as 1, 2, 3 and 4
    # commits are visible, i.e. somewhere in the next commit's write or commit.
    killed_with = []
    for n, after in enumerate([0, 1, 2, 3, 4]):
        spec_file, spec = prepared(f"kill{n}")
        proc = committer(spec_file)
        if after == 0:
            time.sleep(first_commit / 2)
        else:
            _wait_for(partial(_landed, spec, after), 120, f"commit {after}", proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"finished before kill {n}"
        landed = _committed(spec)
        assert set(landed) <= set(GROUPS) and len(set(landed)) == len(landed)
        killed_with.append(len(landed))
        res = subprocess.run(
            [*VCUBE, "commit-all", str(spec_file)], capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["groups"] == POLYGONS - len(landed)
        assert sorted(_group_commits(spec)) == GROUPS  # exactly one commit per group
        with validate.open_cube(spec, decode_times=False) as ds:
            xr.testing.assert_identical(ds.load(), reference)
    # The kills fell at different stages: before any commit and between or in commits.
    assert killed_with[0] == 0 and max(killed_with) >= 3, killed_with
