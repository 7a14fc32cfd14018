"""A group committed again after files were appended to its shards (a new month) sets only the
new files' refs; anything else about the committed files makes it write the group whole.

The cube must equal a clean build either way, value for value and ref for ref. Real netCDF4
files, a real local Icechunk repo.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import xarray as xr

from tests.conftest import SMALL
from tests.integration.test_refresh import _virtual_refs
from vcube import commit, steps, template, validate, workarea
from vcube.places import Places
from vcube.repo import history
from vcube.run_local import run_local
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec


def _group_commits(spec: DatasetSpec) -> list[dict[str, Any]]:
    """The group commits' metadata, newest first."""
    repo = Places.of(spec).repo()
    return [
        dict(s.metadata)
        for s in repo.ancestry(branch=spec.target.branch)
        if s.metadata.get("vcube") == "group"
    ]


def _assert_equals_clean_build(spec: DatasetSpec, root: Path, make_spec: Any) -> None:
    _, clean = make_spec(root, name="clean")
    run_local(clean, workers=2, progress=False)
    with (
        validate.open_cube(spec, decode_times=False) as a,
        validate.open_cube(clean, decode_times=False) as b,
    ):
        xr.testing.assert_identical(a.load(), b.load())
    refs = _virtual_refs(spec)
    assert refs and refs == _virtual_refs(clean)


@pytest.fixture
def two_months(tmp_path: Path, make_spec: Any) -> tuple[Path, DatasetSpec, dict[str, int]]:
    """SMALL with 2 months built; the refs each group's commit set."""
    root = tmp_path / "archive"
    write_sample_archive(root, **{**SMALL, "months": 2})
    _, spec = make_spec(root)
    run_local(spec, workers=2, progress=False)
    first = {m["group"]: m["refs"] for m in _group_commits(spec)}
    assert sorted(first) == ["000", "001"]
    return root, spec, first


def test_a_new_month_sets_only_the_new_files_refs(
    two_months: tuple[Path, DatasetSpec, dict[str, int]], make_spec: Any
) -> None:
    root, spec, first = two_months
    write_sample_archive(root, **SMALL)  # a third month in each of the 4 series
    run_local(spec, workers=2, progress=False)
    again = {m["group"]: m for m in _group_commits(spec)[:2]}
    assert sorted(again) == ["000", "001"]
    for g, md in again.items():
        # 2 files per shard before, one new file each: half of what the first commit set.
        assert md["refs"] * 2 == first[g], (g, md["refs"], first[g])
        assert md[commit.APPENDABLE]["files"] == [3, 3]
    _assert_equals_clean_build(spec, root, make_spec)


def test_a_changed_committed_file_makes_its_group_written_whole(
    two_months: tuple[Path, DatasetSpec, dict[str, int]], tmp_path: Path, make_spec: Any
) -> None:
    """A committed file of group 000 has new content (other values, so other chunk sizes): the
    digest no longer matches, so 000 is written whole (stale refs looked for); 001 appends."""
    root, spec, first = two_months
    write_sample_archive(root, **SMALL)
    other = tmp_path / "other"
    write_sample_archive(other, **{**SMALL, "seed": 7})
    # (Not the very first file: the template is read from it, and its static variables too.)
    changed = sorted((root / "000").rglob("*.nc"))[1].relative_to(root)
    shutil.copyfile(other / changed, root / changed)
    run_local(spec, workers=2, progress=False)
    again = {m["group"]: m for m in _group_commits(spec)[:2]}
    assert again["000"]["refs"] == first["000"] * 3 // 2  # all 6 files' refs
    assert again["001"]["refs"] * 2 == first["001"]
    _assert_equals_clean_build(spec, root, make_spec)


def test_refs_digest_decides_what_is_written(
    two_months: tuple[Path, DatasetSpec, dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the group's commit: only the new files. Against a commit that records no digest
    (an older vcube), a wrong one, or more files than the shards hold, or when init would
    render an array's metadata otherwise (so it dropped its chunks): every file."""
    root, spec, _ = two_months
    write_sample_archive(root, **SMALL)
    steps.plan_step(spec)
    steps.init_step(spec)
    places = Places.of(spec)
    plan = workarea.load_plan(places.work, spec)
    for sid in plan.groups["000"]:
        steps.scan_step(spec, sid)
    tmpl = template.load_template(places.work)
    done = history(places.repo(), spec.target.branch).groups["000"]
    whole = commit.build_group_refs(places, plan, tmpl, "000")
    added = commit.build_group_refs(places, plan, tmpl, "000", done=done)
    assert whole.base is None and added.base == done.id
    n_whole = sum(map(len, whole.specs.values()))
    assert sum(map(len, added.specs.values())) * 3 == n_whole
    assert added.appendable == whole.appendable  # what the new commit records
    ok = done.metadata[commit.APPENDABLE]
    for md in (
        {},
        {commit.APPENDABLE: {**ok, "digest": "0" * 32}},
        {commit.APPENDABLE: {**ok, "files": [4, 2]}},
        {commit.APPENDABLE: {**ok, "files": [2]}},
        {commit.APPENDABLE: "junk"},
    ):
        refs = commit.build_group_refs(
            places, plan, tmpl, "000", done=SimpleNamespace(id=done.id, metadata=md)
        )
        assert refs.base is None and sum(map(len, refs.specs.values())) == n_whole, md
    monkeypatch.setattr(commit, "_rendered", lambda tmpl, v, chunks: "other zarr.json")
    refs = commit.build_group_refs(places, plan, tmpl, "000", done=done)
    assert refs.base is None and sum(map(len, refs.specs.values())) == n_whole


def test_another_writer_committing_the_group_first_wins_once(
    two_months: tuple[Path, DatasetSpec, dict[str, int]],
    make_spec: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The committer's refs for 000 hold only the new files, made against 000's commit it read.
    Another writer commits 000 before it: the committer must not rebase its partial write onto
    theirs; it reads the history again, finds 000 done with the same inputs, and moves on."""
    root, spec, _ = two_months
    write_sample_archive(root, **SMALL)
    steps.plan_step(spec)
    steps.init_step(spec)
    places = Places.of(spec)
    plan = workarea.load_plan(places.work, spec)
    for sid in plan.shards:
        steps.scan_step(spec, sid)
    tmpl = template.load_template(places.work)
    tip = places.repo().lookup_branch(spec.target.branch)
    write = commit._write_group
    theirs: list[dict[str, Any]] = []

    def first_another_writer(*a: Any, **k: Any) -> Any:
        if a[4].group == "000" and not theirs:
            assert a[4].base is not None  # incremental
            monkeypatch.setattr(commit, "_write_group", write)
            theirs.append(commit.commit_group(Places.of(spec), plan, tmpl, "000"))
            monkeypatch.setattr(commit, "_write_group", first_another_writer)
        return write(*a, **k)

    monkeypatch.setattr(commit, "_write_group", first_another_writer)
    run = commit.commit_groups(places, plan, tmpl, ["000", "001"])
    out = {g: (res, err) for g, res, err in run}
    assert theirs and theirs[0]["changed"]
    assert out["000"][1] is None and out["000"][0] is not None
    assert not out["000"][0]["changed"] and out["000"][0]["snapshot"] == theirs[0]["snapshot"]
    since = []
    for s in places.repo().ancestry(branch=spec.target.branch):
        if s.id == tip:
            break
        since.append(s.metadata.get("group"))
    assert sorted(g for g in since if g) == ["000", "001"]  # one commit each
    _assert_equals_clean_build(spec, root, make_spec)


def test_a_rewritten_template_file_is_referenced_again(
    two_months: tuple[Path, DatasetSpec, dict[str, int]], tmp_path: Path, make_spec: Any
) -> None:
    """The static variables are referenced from the template file (the cube's first file), with
    its checksum, and the template (attributes too) is derived from it. Rewritten with other
    content, it makes plan list every group, init derive the template and reference the static
    variables again (Icechunk refused the old refs' checksum), and the cube equal a clean build."""
    root, spec, _ = two_months
    other = tmp_path / "other"
    write_sample_archive(other, **{**SMALL, "months": 2, "seed": 7})
    work = Places.of(spec).work
    pf = workarea.template_file(work, spec, workarea.load_plan(work, spec))
    shutil.copyfile(other / pf.key, root / pf.key)
    assert steps.plan_step(spec)["todo"] == 2  # 001's files did not change, the template did
    run_local(spec, workers=2, progress=False)
    _assert_equals_clean_build(spec, root, make_spec)
