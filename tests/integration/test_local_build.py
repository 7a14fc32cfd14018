"""The whole local build on real netCDF4 files and a real Icechunk repo (issue: local cube)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from vcube import steps, template, validate, workarea
from vcube.places import Places
from vcube.repo import opening_snippet
from vcube.run_local import run_local
from vcube.scan import ScanError
from vcube.spec import DatasetSpec

VCUBE = [sys.executable, "-m", "vcube.cli"]


def _compare_every_file(spec: DatasetSpec, *, decode: bool) -> int:
    """Every variable of every file against the cube; returns how many files were compared."""
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    kwargs = {} if decode else {"decode_times": False}
    files = validate.planned_files(spec, plan)
    with validate.open_cube(spec, **kwargs) as cube_ds:
        assert (
            validate.compare_files(spec, tmpl, cube_ds, files, include_static=True, **kwargs) == []
        )
        for pf in files:
            with validate.open_source_file(spec, pf.key, **kwargs) as ref:
                # The dimension coordinates decode to the same values and types as the file's.
                for dim in spec.cube.dim_names:
                    region = validate.file_region(spec, tmpl, pf.pos)[dim]
                    got = cube_ds[dim].isel({dim: region})
                    assert got.dtype == ref[dim].dtype
                    np.testing.assert_array_equal(got.values, ref[dim].values)
    return len(files)


@pytest.fixture
def built(built_sample: DatasetSpec) -> DatasetSpec:
    return built_sample


def test_every_file_reads_back_raw(built: DatasetSpec) -> None:
    assert _compare_every_file(built, decode=False) == 12


def test_every_file_reads_back_decoded(built: DatasetSpec) -> None:
    assert _compare_every_file(built, decode=True) == 12
    with validate.open_cube(built) as ds:
        assert ds.sizes["polygon_id"] == 2
        assert ds.sizes["injection_date"] == 2
        assert ds.sizes["elapsed_time"] == 3
        assert len(ds.data_vars) == 34
        assert len(ds.coords) == 64
        # noleap calendar times come back as cftime objects, as from the files
        assert type(ds.time.values.flat[0]).__name__ == "DatetimeNoLeap"


def test_history_has_one_commit_per_group_plus_init(built: DatasetSpec) -> None:
    repo = Places.of(built).repo()
    kinds = [s.metadata.get("vcube") for s in repo.ancestry(branch="main")]
    assert kinds.count("init") == 1
    assert kinds.count("group") == 2
    groups = [
        s.metadata for s in repo.ancestry(branch="main") if s.metadata.get("vcube") == "group"
    ]
    assert sorted(m["group"] for m in groups) == ["000", "001"]
    assert all(m["files"] == 6 and len(m["inputs"]) == 16 for m in groups)


def test_rerun_is_a_no_op(built: DatasetSpec) -> None:
    repo = Places.of(built).repo()
    tip = repo.lookup_branch("main")
    summary = run_local(built, workers=1, progress=False)
    assert summary["up_to_date"] is True
    assert summary["commits"] == 0
    assert Places.of(built).repo().lookup_branch("main") == tip


def test_status_reports_commits(built: DatasetSpec) -> None:
    status = steps.status_step(built)
    assert status["counts"] == {"committed": 2}
    assert all(g["snapshot"] and g["written_at"] for g in status["groups"].values())


def test_opening_snippet_works_in_a_fresh_interpreter(built: DatasetSpec) -> None:
    snippet = opening_snippet(built, Places.of(built).source, Places.of(built).target)
    assert len(snippet.splitlines()) == 3
    code = snippet + "\nprint(dict(ds.sizes)['polygon_id'], float(ds.DIC.isel(z_t=0).mean()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, mean = out.stdout.split()
    assert n == "2"
    assert np.isfinite(float(mean))


def test_grow_with_a_new_group_commits_only_it(
    tmp_path: Path, sample_archive: Path, make_spec
) -> None:
    """New files appear (a new polygon): the cube grows and only the new group is committed."""
    root = tmp_path / "archive"
    shutil.copytree(sample_archive, root)
    shutil.rmtree(root / "001")
    _, spec = make_spec(root)
    run_local(spec, workers=1, progress=False)
    shutil.copytree(sample_archive / "001", root / "001")
    before = [s.id for s in Places.of(spec).repo().ancestry(branch="main")]
    summary = run_local(spec, workers=1, progress=False, samples=12)
    assert summary["commits"] == 2  # the grow (init) and the new group
    history = list(Places.of(spec).repo().ancestry(branch="main"))
    assert [s.id for s in history[2:]] == before
    assert history[0].metadata["group"] == "001"
    assert _compare_every_file(spec, decode=False) == 12


# --- crash safety ------------------------------------------------------------------------------


def _identical_cubes(a: DatasetSpec, b: DatasetSpec) -> None:
    with (
        validate.open_cube(a, decode_times=False) as x,
        validate.open_cube(b, decode_times=False) as y,
    ):
        xr.testing.assert_identical(x.load(), y.load())


def _run(spec_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*VCUBE, "run", str(spec_file), "--workers", "1", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # the kill takes the whole process group
    )


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun(
    tmp_path: Path, sample_archive: Path, make_spec
) -> None:
    """Kill `vcube run` with SIGKILL at random moments; the re-run ends like a clean build."""
    env = {**os.environ, "ICECHUNK_LOG": "error"}
    clean_file, clean = make_spec(sample_archive, name="clean")
    t0 = time.perf_counter()
    assert _run(clean_file, env).wait() == 0
    duration = time.perf_counter() - t0  # how long a whole run takes on this machine now
    rng = random.Random(20261125)
    # Five points spread over a run's phases (start-up, plan/init, scans, commits, validate).
    fractions = sorted(rng.uniform(0.05, 0.9) for _ in range(5))
    for n, fraction in enumerate(fractions):
        spec_file, spec = make_spec(sample_archive, name=f"crash{n}")
        delay = fraction * duration
        for _ in range(4):  # a run that beat the clock is not a crash: start over, sooner
            shutil.rmtree(spec.target.repo, ignore_errors=True)
            shutil.rmtree(spec.target.work_url, ignore_errors=True)
            proc = _run(spec_file, env)
            time.sleep(delay)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            proc.wait()
            delay /= 2
        else:
            pytest.fail(f"could not kill a run within {delay:.2f} s")
        if Path(spec.target.repo).exists():
            # After a crash the branch holds only whole commits: init and whole groups.
            kinds = [
                s.metadata.get("vcube") for s in Places.of(spec).repo().ancestry(branch="main")
            ]
            assert set(kinds) <= {"init", "group", None}
        assert _run(spec_file, env).wait() == 0, f"re-run after a kill at {delay:.2f} s"
        _identical_cubes(spec, clean)
        metas = [s.metadata for s in Places.of(spec).repo().ancestry(branch="main")]
        groups = [m["group"] for m in metas if m.get("vcube") == "group"]
        assert sorted(groups) == ["000", "001"]  # exactly one commit per group
        assert [m.get("vcube") for m in metas].count("init") == 1


# --- bad input ---------------------------------------------------------------------------------


def _bad_archive(tmp_path: Path, sample_archive: Path, kind: str) -> tuple[Path, str]:
    from tests.archives import (
        copy_with_other_grid,
        copy_without_variable,
        truncate_file,
        write_not_hdf5,
    )

    root = tmp_path / "archive"
    shutil.copytree(sample_archive, root)
    victim = sorted((root / "001").rglob("*.nc"))[1]
    good = victim.with_suffix(".good")
    victim.rename(good)
    if kind == "truncated":
        truncate_file(good, victim)
    elif kind == "not-hdf5":
        write_not_hdf5(victim)
    elif kind == "missing-variable":
        copy_without_variable(good, victim, "DIC")
    elif kind == "other-grid":
        copy_with_other_grid(good, victim, grid=(8, 6))
    good.unlink()
    return root, str(victim.relative_to(root))


@pytest.mark.parametrize(
    ("kind", "expect"),
    [
        ("truncated", "truncated"),
        ("not-hdf5", "not a readable HDF5"),
        ("missing-variable", "variable DIC is missing"),
        ("other-grid", "variable ALK differs from the template: shape [1, 1, 1, 5, 8, 6]"),
    ],
)
def test_bad_file_fails_the_scan_naming_it(
    tmp_path: Path, sample_archive: Path, make_spec, kind: str, expect: str
) -> None:
    root, bad_key = _bad_archive(tmp_path, sample_archive, kind)
    spec_file, spec = make_spec(root)
    # Group 000 is fine and gets committed; the bad file is in group 001.
    run_local(spec, workers=1, progress=False, groups=["000"])
    tip = Places.of(spec).repo().lookup_branch("main")
    shard = bad_key.split("/")[0] + "-" + bad_key.split("/")[1]
    res = subprocess.run(
        [*VCUBE, "scan", str(spec_file), "--shard", shard], capture_output=True, text=True
    )
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()[-1]
    assert bad_key in err, err
    assert expect in err, err
    assert "Traceback" not in res.stderr
    with pytest.raises(ScanError, match=bad_key):
        run_local(spec, workers=1, progress=False)
    assert Places.of(spec).repo().lookup_branch("main") == tip  # still at the last good commit
    status = steps.status_step(spec)
    assert status["groups"]["000"]["state"] == "committed"
    assert status["groups"]["001"]["state"] == "failed"
    assert bad_key in json.dumps(status["groups"]["001"]["failed_shards"])


def test_missing_file_fails_the_plan_unless_allowed(
    tmp_path: Path, sample_archive: Path, make_spec
) -> None:
    root = tmp_path / "archive"
    shutil.copytree(sample_archive, root)
    gone = sorted((root / "001" / "04").glob("*.nc"))[1]
    gone.unlink()
    spec_file, spec = make_spec(root)
    res = subprocess.run([*VCUBE, "plan", str(spec_file)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "polygon_id=001 injection_date=04 elapsed_time=0347-05" in res.stderr
    summary = run_local(spec, workers=1, progress=False, allow_missing=True, samples=20)
    assert summary["files"] == 11
    with validate.open_cube(spec) as ds:
        hole = ds.DIC.isel(polygon_id=1, injection_date=1, elapsed_time=1).values
        assert np.isnan(hole).all()  # the missing file's chunks read as fill value
        assert not np.isnan(
            ds.DIC.isel(polygon_id=1, injection_date=1, elapsed_time=2).values
        ).all()


def test_unreachable_s3_source_is_a_clear_error(tmp_path: Path) -> None:
    """The real atlas spec cannot be reached from here: a one-line network error, no traceback."""
    repo_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    res = subprocess.run(
        [*VCUBE, "plan", str(repo_root / "datasets" / "oae-atlas.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    assert "s3://cworthy/oae-efficiency-atlas/data/experiments/" in res.stderr
