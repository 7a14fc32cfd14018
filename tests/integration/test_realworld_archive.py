"""Real-world-style archives build and read back equal to `xr.open_mfdataset` on the same files.

Decadal monthly files with a short last decade and per-file time units (CMIP style), and
yearly daily files with leap years (standard calendar: 366 steps in 2000) and without (noleap);
contiguous and chunked variables, a packed variable, a string variable and a group in every file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from tests.archives import _write_real_file, write_daily_archive, write_decadal_archive
from tests.conftest import write_spec
from vcube import template, validate, workarea
from vcube.places import Places
from vcube.run_local import run_local
from vcube.spec import DatasetSpec

RAW = {"decode_times": False, "mask_and_scale": False}
DATA_VARS = ("tas", "pr", "sst", "label")


def _build(tmp: Path, writer: Any, **kw: Any) -> tuple[DatasetSpec, dict[str, list[Path]]]:
    files, raw = writer(tmp / "archive", repo=tmp / "cube", **kw)
    _, spec = write_spec(tmp / "spec.yaml", raw)
    n = sum(len(v) for v in files.values())
    run_local(spec, workers=2, progress=False, samples=n)  # validate compares every file
    return spec, files


@pytest.fixture(scope="module")
def decadal(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetSpec, dict[str, list[Path]]]:
    return _build(tmp_path_factory.mktemp("decadal"), write_decadal_archive)


@pytest.fixture(scope="module", params=["standard", "noleap"])
def daily(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DatasetSpec, dict[str, list[Path]]]:
    cal = request.param
    # Standard: the leap year first (every later step shifts by its 366 days), pr and sst
    # chunked per day (1 divides 365 and 366; per-step chunks are slow to read: two years).
    # Noleap: 73 days at a time and tas one chunk per file (every file holds 365).
    return _build(
        tmp_path_factory.mktemp(f"daily-{cal}"),
        write_daily_archive,
        calendar=cal,
        years=(2004, 2005) if cal == "standard" else (2003, 2004, 2005),
        chunk=1 if cal == "standard" else 73,
    )


def _mf(paths: list[Path], **kw: Any) -> xr.Dataset:
    return xr.open_mfdataset(
        paths,
        combine="nested",
        concat_dim="time",
        data_vars="minimal",
        coords="minimal",
        compat="override",
        **{"decode_times": xr.coders.CFDatetimeCoder(use_cftime=True), **kw},
    )


def _assert_reads_back(spec: DatasetSpec, files: dict[str, list[Path]]) -> None:
    for kw in (RAW, {}):
        decoded = not kw
        cube_kw = {"decode_times": xr.coders.CFDatetimeCoder(use_cftime=True)} if decoded else kw
        with validate.open_cube(spec, **cube_kw) as cube:
            assert list(cube.member.values) == list(files)
            for i, member in enumerate(files):
                with _mf(files[member], **kw) as mf:
                    ours = cube.isel(member=i)
                    assert ours.sizes["time"] == mf.sizes["time"]
                    for name in DATA_VARS:
                        a, b = ours[name].values, mf[name].values
                        if decoded and name == "sst":
                            # Zarr's JSON attributes: float64 from the cube, float32 from netCDF.
                            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5, err_msg=name)
                            assert np.array_equal(np.isnan(a), np.isnan(b))
                        elif a.dtype.kind in "fc":
                            np.testing.assert_array_equal(a, b, err_msg=f"{member} {name} {kw}")
                        else:
                            assert a.tolist() == b.tolist(), f"{member} {name} {kw}"
                    if decoded:  # times decoded: every file with its own units
                        assert ours.time.values.tolist() == mf.time.values.tolist()
                        assert ours.time_bnds.values.tolist() == mf.time_bnds.values.tolist()
                        steps = np.diff(ours.time.values).astype("timedelta64[s]")
                        assert (steps > np.timedelta64(0, "s")).all()


def test_decadal_files_with_a_short_last_one(decadal) -> None:
    spec, files = decadal
    _assert_reads_back(spec, files)
    tmpl = template.load_template(Places.of(spec).work)
    assert tmpl.steps.total("time") == 120 + 120 + 60
    with validate.open_cube(spec, **RAW) as cube:
        # Contiguous tas: per-step chunks of gcd(120, 60) = 60; chunked pr as in the files.
        assert cube.tas.encoding["chunks"] == (1, 60, 3, 4)
        assert cube.pr.encoding["chunks"] == (1, 12, 3, 4)
        assert cube.time.attrs["units"] == "days since 1850-01-01"  # the template's
        assert "diagnostics" not in str(list(cube.variables))


def test_daily_files_with_leap_years(daily) -> None:
    spec, files = daily
    _assert_reads_back(spec, files)
    tmpl = template.load_template(Places.of(spec).work)
    standard = "standard" in str(spec.target.repo)
    assert tmpl.steps.lengths("time") == ({365, 366} if standard else {365})
    assert tmpl.steps.total("time") == (366 + 365 if standard else 365 * 3)
    with validate.open_cube(spec, **RAW) as cube:
        assert cube.tas.encoding["chunks"] == ((1, 1, 3, 4) if standard else (1, 365, 3, 4))
        assert cube.pr.encoding["chunks"] == ((1, 1, 3, 4) if standard else (1, 73, 3, 4))
    plan = workarea.load_plan(Places.of(spec).work, spec)
    assert plan.layout_shards == [next(iter(plan.shards))]


def _run_cli(spec_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vcube.cli", "run", str(spec_path), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _group_snapshots(spec: DatasetSpec) -> list[str]:
    repo = Places.of(spec).repo()
    return [str(s.metadata["group"]) for s in repo.ancestry(branch="main") if "group" in s.metadata]


def test_chunks_that_do_not_tile_a_leap_year_are_refused(tmp_path: Path) -> None:
    """73-day chunks tile 365 days, not 366: the leap year's file is named, nothing committed."""
    _, raw = write_daily_archive(
        tmp_path / "archive", years=(2003, 2004, 2005), members=1, chunk=73, repo=tmp_path / "c"
    )
    path, spec = write_spec(tmp_path / "spec.yaml", raw)
    res = _run_cli(path)
    assert res.returncode == 1, res.stderr
    err = res.stderr
    assert "m00/day_m00_2004.nc" in err and "variable pr" in err and "366 steps" in err, err
    assert not (tmp_path / "c").exists() or _group_snapshots(spec) == []


def test_a_group_whose_series_has_other_steps_is_refused(tmp_path: Path) -> None:
    """Member m01's last decade holds 4 years where m00's holds 5: m01 is refused by name, m00
    is committed, and main holds no snapshot of m01."""
    files, raw = write_decadal_archive(tmp_path / "archive", repo=tmp_path / "c")
    short = files["m01"][-1]
    units = "days since 1870-01-01"
    mids = np.arange(48) * 30.0 + 15
    _write_real_file(
        short,
        member_index=1,
        first=1870,
        times=mids,
        bounds=np.arange(49) * 30.0,
        units=units,
        calendar="noleap",
        chunk=12,
    )
    path, spec = write_spec(tmp_path / "spec.yaml", raw)
    res = _run_cli(path)
    assert res.returncode == 1, res.stderr
    assert f"{short.relative_to(tmp_path / 'archive')}: holds 48 steps along 'time'" in res.stderr
    assert _group_snapshots(spec) == ["m00"]


def test_times_that_cannot_be_converted_are_refused(tmp_path: Path) -> None:
    """A file whose times use a unit cftime cannot carry into the template's encoding: named
    with its variable and attribute, its group not committed."""
    import netCDF4

    files, raw = write_decadal_archive(tmp_path / "archive", repo=tmp_path / "c")
    bad = files["m01"][1]
    with netCDF4.Dataset(bad, "a") as ds:
        ds["time"].units = "months since 1860-01-01"  # months: only for the 360_day calendar
    path, spec = write_spec(tmp_path / "spec.yaml", raw)
    res = _run_cli(path)
    assert res.returncode == 1, res.stderr
    name = str(bad.relative_to(tmp_path / "archive"))
    assert f"{name}: variable time: attribute units 'months since 1860-01-01'" in res.stderr
    assert "cannot convert its times" in res.stderr
    assert "m01" not in _group_snapshots(spec)
