"""Committing groups back to back (`commit.commit_groups`, what `vcube commit-all` runs): the next
group's results are read in a second thread while one commits, and the history is read once.
Its errors still belong to its own group, and the repository vcube opens has bounded caches
that readers do not inherit. Real netCDF4 files, a real local Icechunk repo."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icechunk
import pytest

from tests.integration.test_s3_build import s3_spec
from tests.support.faultproxy import FaultProxy
from tests.support.s3server import S3Server
from vcube import commit, repo, steps, storage, template, workarea
from vcube.layout import CommitError
from vcube.places import Places
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec


@pytest.fixture
def scanned(
    tmp_path: Path, make_spec: Callable[..., tuple[Path, DatasetSpec]]
) -> tuple[DatasetSpec, Places]:
    root = tmp_path / "archive"
    write_sample_archive(root, polygons=3, dates=2, months=2, grid=(6, 5), levels=2)
    _, spec = make_spec(root)
    steps.plan_step(spec)
    steps.init_step(spec)
    places = Places.of(spec)
    for sid in workarea.load_plan(places.work, spec).shards:
        steps.scan_step(spec, sid)
    return spec, places


def test_groups_commit_in_order_and_an_error_stays_with_its_group(
    scanned: tuple[DatasetSpec, Places], monkeypatch: pytest.MonkeyPatch
) -> None:
    """001's result is gone: its refs cannot be built, and the error is yielded for 001, after
    000 committed; 002 is still committed after it. Every group's results were read ahead, in
    the other thread."""
    spec, places = scanned
    plan = workarea.load_plan(places.work, spec)
    tmpl = template.load_template(places.work)
    gone = plan.groups["001"][0]
    Path(places.work.local_path, workarea.result_key(gone)).unlink()  # type: ignore[arg-type]
    read_in: dict[str, str] = {}
    read = commit.read_group_results

    def recording(*a: Any, **k: Any) -> list[bytes | None]:
        read_in[a[2]] = threading.current_thread().name
        return read(*a, **k)

    monkeypatch.setattr(commit, "read_group_results", recording)
    out = list(commit.commit_groups(places, plan, tmpl, ["000", "001", "002"]))

    assert [g for g, _, _ in out] == ["000", "001", "002"]
    assert out[0][1] is not None and out[0][1]["changed"] and out[0][2] is None
    assert isinstance(out[1][2], CommitError) and out[1][1] is None
    assert f"shard {gone} has not been scanned" in str(out[1][2])
    assert out[2][1] is not None and out[2][1]["changed"]
    # Every group's results were read ahead, never in the committing thread.
    assert set(read_in) == {"000", "001", "002"}
    assert all(name.startswith("vcube-prepare") for name in read_in.values()), read_in
    hist = repo.history(places.repo(), spec.target.branch)
    assert sorted(hist.groups) == ["000", "002"]


def test_commit_all_commits_through_the_pipeline(
    scanned: tuple[DatasetSpec, Places], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vcube commit-all` (commit_all_step) reads every group's results in the second thread."""
    _, places = scanned
    read_in: dict[str, str] = {}
    read = commit.read_group_results

    def recording(*a: Any, **k: Any) -> list[bytes | None]:
        read_in[a[2]] = threading.current_thread().name
        return read(*a, **k)

    monkeypatch.setattr(commit, "read_group_results", recording)
    out = steps.commit_all_step(places)
    assert out["committed"] == 3
    assert set(read_in) == {"000", "001", "002"}
    assert all(name.startswith("vcube-prepare") for name in read_in.values()), read_in


def test_the_history_is_read_once_and_again_when_another_writer_committed(
    scanned: tuple[DatasetSpec, Places], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committer reads the branch history once, then knows it from its own commits; when
    the tip is not its own last commit (another writer committed 002 in between), it reads the
    history again, and so does not commit 002 a second time."""
    spec, places = scanned
    plan = workarea.load_plan(places.work, spec)
    tmpl = template.load_template(places.work)
    reads: list[str | None] = []
    read = commit.history

    def counted(r: icechunk.Repository, branch: str) -> repo.History:
        h = read(r, branch)
        reads.append(h.tip)
        return h

    monkeypatch.setattr(commit, "history", counted)
    run = commit.commit_groups(places, plan, tmpl, ["000", "001", "002"])
    first = next(run)
    assert first[1] is not None and first[1]["changed"]
    assert len(reads) == 1
    other = Places.of(spec)  # another writer, its own Repository
    theirs = commit.commit_group(other, plan, tmpl, "002")
    assert theirs["changed"] and len(reads) == 2  # its own read
    rest = list(run)
    assert [g for g, _, _ in rest] == ["001", "002"]
    assert rest[0][1] is not None and rest[0][1]["changed"]
    assert rest[1][1] is not None and not rest[1][1]["changed"]
    assert rest[1][1]["snapshot"] == theirs["snapshot"]
    assert reads[2] == theirs["snapshot"]  # read again: the tip was theirs
    assert len(reads) == 3  # and not for 002: the committer knew it after 001
    ancestry = list(places.repo().ancestry(branch=spec.target.branch))
    committed = [s.metadata["group"] for s in ancestry if s.metadata.get("vcube") == "group"]
    assert sorted(committed) == ["000", "001", "002"]


@pytest.mark.parametrize(("cached_refs", "reads_back"), [(1, True), (15_000_000, False)])
def test_the_committer_runs_with_the_bounded_cache(
    s3_server: S3Server,
    make_bucket: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cached_refs: int,
    reads_back: bool,
) -> None:
    """The bound must be the one in effect, not only in the config: committing group 000 again
    re-reads its manifests from S3 once the chunk-ref cache cannot hold them (bounded to 1 ref
    here), and not with Icechunk's default. One Places from init on, as a local build runs (the
    repository created, then committed to by the same process: a `reopen`ed Repository kept
    the unbounded cache). The saved config, which xarray users open, has no bound."""
    monkeypatch.setattr(repo, "CACHED_CHUNK_REFS", cached_refs)
    root = tmp_path / "archive"
    write_sample_archive(root, polygons=2, dates=1, months=2, grid=(6, 5), levels=2)
    archive, cubes = make_bucket("archive"), make_bucket("cubes")
    s3_server.upload_dir(root, archive, "data")
    with FaultProxy("127.0.0.1", s3_server.port) as proxy:
        _, spec = s3_spec(tmp_path / "spec.yaml", proxy.endpoint, archive, cubes)
        places = Places.of(spec)
        steps.plan_step(places)
        steps.init_step(places)
        plan = workarea.load_plan(places.work, spec)
        for sid in plan.shards:
            steps.scan_step(places, sid)
        tmpl = template.load_template(places.work)
        assert commit.commit_group(places, plan, tmpl, "000")["changed"]
        digest, build = commit.inputs_digest, commit.build_group_refs
        monkeypatch.setattr(commit, "inputs_digest", lambda *a: digest(*a) + "-again")
        # written whole (its files unchanged, only new files' refs would be set: none)
        monkeypatch.setattr(
            commit, "build_group_refs", lambda *a, **k: build(*a, **{**k, "done": None})
        )
        n0 = len(proxy.stats.records)
        assert commit.commit_group(places, plan, tmpl, "000")["changed"]
        recs = proxy.stats.records[n0:]
        got = [r for r in recs if r.method == "GET" and "/manifests/" in r.target]
        assert bool(got) == reads_back, got
        saved = icechunk.Repository.fetch_config(storage.icechunk_storage(places.target))
        assert saved is not None
        assert saved.caching is None or saved.caching.num_chunk_refs != cached_refs
