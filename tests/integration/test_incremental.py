"""Incremental rebuilds: the archive grows or changes, the spec changes; the cube follows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import SMALL
from vcube import template, validate
from vcube.places import Places
from vcube.run_local import run_local
from vcube.sample import write_sample_archive


def _groups_committed(spec) -> list[str]:
    return [
        s.metadata["group"]
        for s in Places.of(spec).repo().ancestry(branch="main")
        if s.metadata.get("vcube") == "group"
    ]


def test_more_months_grow_the_cube(tmp_path: Path, make_spec) -> None:
    """New months appear in every series: elapsed_time grows, old values stay, all re-checked."""
    root = tmp_path / "archive"
    write_sample_archive(root, **{**SMALL, "months": 2})
    _, spec = make_spec(root)
    run_local(spec, workers=1, progress=False)
    write_sample_archive(root, **{**SMALL, "months": 3})
    run_local(spec, workers=1, progress=False, samples=12)
    with validate.open_cube(spec, decode_times=False) as ds:
        assert ds.sizes["elapsed_time"] == 3
        assert not np.isnan(ds.time.values).any()
        assert list(ds.elapsed_time.values) == [15, 45, 76]
    assert sorted(_groups_committed(spec)) == ["000", "000", "001", "001"]


def test_spec_change_rebuilds_with_the_new_schema(
    tmp_path: Path, sample_archive: Path, make_spec
) -> None:
    _, spec = make_spec(sample_archive)
    run_local(spec, workers=1, progress=False)
    _, dropped = make_spec(sample_archive, drop=["CO3"])  # same repo, other schema
    assert dropped.target.repo == spec.target.repo
    summary = run_local(dropped, workers=1, progress=False, samples=1)
    assert summary["commits"] == 3  # init + both groups again
    assert "CO3" not in template.load_template(Places.of(dropped).work).variables
    with validate.open_cube(dropped) as ds:
        assert "CO3" not in ds.variables
        assert "CO3_ALT_CO2" in ds.variables
    assert run_local(dropped, workers=1, progress=False)["up_to_date"] is True


def test_a_file_removed_leaves_no_stale_refs(
    tmp_path: Path, sample_archive: Path, make_spec
) -> None:
    import shutil

    root = tmp_path / "archive"
    shutil.copytree(sample_archive, root)
    _, spec = make_spec(root)
    run_local(spec, workers=1, progress=False)
    sorted((root / "001" / "04").glob("*.nc"))[2].unlink()
    run_local(spec, workers=1, progress=False, allow_missing=True)
    with validate.open_cube(spec, decode_times=False) as ds:
        gone = ds.isel(polygon_id=1, injection_date=1, elapsed_time=2)
        assert np.isnan(gone.DIC.values).all()  # reads as fill value, not the deleted file
        # `time` is shared by all polygons: polygon 000's file still gives that place its value
        assert float(gone.time) == float(ds.time.isel(injection_date=1, elapsed_time=2))
        assert not np.isnan(
            ds.DIC.isel(polygon_id=1, injection_date=1, elapsed_time=1).values
        ).all()
    assert sorted(_groups_committed(spec)) == ["000", "001", "001"]
