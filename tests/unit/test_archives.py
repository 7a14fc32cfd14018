"""The test-archive factories make what they promise: a valid variant, inputs broken on purpose."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from tests.archives import (
    PACKED_FILL,
    VARIANT_GRID,
    VARIANT_GROUP,
    copy_with_changes,
    copy_with_other_grid,
    copy_without_variable,
    truncate_file,
    variant_labels,
    write_not_hdf5,
    write_variant_archive,
)
from vcube.plan import pattern_regex
from vcube.sample import DATA_VARS, write_sample_archive
from vcube.spec import DatasetSpec


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    (path,) = write_sample_archive(
        root, polygons=1, dates=1, months=1, grid=(12, 10), levels=5, workers=1
    )
    return path


def _storage(path: Path) -> dict[str, tuple[object, ...]]:
    """Per dataset: dtype, chunk shape, filters and fill attribute, as a reader would see them."""
    with h5py.File(path, "r") as f:
        return {
            name: (
                d.dtype,
                d.chunks is None,
                d.compression,
                d.compression_opts,
                d.shuffle,
                d.attrs.get("_FillValue"),
            )
            for name, d in f.items()
        }


def test_variant_archive_layout_and_spec(tmp_path: Path) -> None:
    files, raw = write_variant_archive(tmp_path / "variant", members=3, years=2, repo="cube")
    rel = [p.relative_to(tmp_path / "variant").as_posix() for p in files]
    assert rel == [f"m{m:02d}/run.m{m:02d}.{y}.nc" for m in range(3) for y in (2000, 2001)]

    spec = DatasetSpec.model_validate(raw)
    assert spec.target.repo == "cube"
    assert spec.cube.dim_names == ["member", "time"]
    assert spec.cube.dims[0].values == "path"
    regex = pattern_regex(spec.source.pattern)
    assert [regex.match(r).groupdict() for r in rel][-1] == {"member": "m02", "year": "2001"}

    ny, nx = VARIANT_GRID
    with xr.open_dataset(files[-1]) as ds:
        assert "member" not in ds.variables
        assert dict(ds.sizes) == {"time": 12, "y": ny, "x": nx}
        assert ds.tas.dtype == np.float32
        assert ds.tas.dims == ("time", "y", "x")
        assert ds.cell_area.dims == ("y", "x")
        assert ds.cell_area.dtype == np.float64
        assert "cell_area" in ds.coords
        times = ds.time.values.astype("datetime64[D]").astype(str)
        assert times[0] == "2001-01-15"
        assert times[-1] == "2001-12-15"
        sst = ds.sst.values
        assert sst.dtype == np.float32  # unpacked by xarray
        assert np.isnan(sst).any()
        assert 5 < np.nanmin(sst) < np.nanmax(sst) < 50
    with h5py.File(files[-1], "r") as f:
        assert f["tas"].chunks == (6, ny, nx)
        assert f["tas"].id.get_num_chunks() == 2
        packed = f["sst"]
        assert packed.dtype == np.int16
        assert packed.attrs["_FillValue"] == PACKED_FILL
        assert {"scale_factor", "add_offset"} <= set(packed.attrs)
        assert (packed[()] == PACKED_FILL).any()
    # Members differ from each other, and years are different files of the same member.
    with xr.open_dataset(files[0]) as a, xr.open_dataset(files[2]) as b:
        assert not np.array_equal(a.tas.values, b.tas.values)


def test_variant_spec_repo_defaults_next_to_the_archive(tmp_path: Path) -> None:
    files, raw = write_variant_archive(tmp_path / "v", members=1, years=1)
    assert len(files) == 1
    assert raw["target"]["repo"] == str(tmp_path / "v-cube")


def test_truncated_file_does_not_open(good: Path, tmp_path: Path) -> None:
    bad = truncate_file(good, tmp_path / "bad.nc", keep_fraction=0.5)
    assert bad.stat().st_size == good.stat().st_size // 2
    assert bad.read_bytes() == good.read_bytes()[: bad.stat().st_size]
    assert h5py.is_hdf5(bad)  # the signature is still there ...
    with pytest.raises(OSError, match="truncated"):  # ... but HDF5 sees the end is missing
        h5py.File(bad, "r")
    with pytest.raises(OSError):  # noqa: PT011 - netCDF4 reports it as a generic HDF error
        xr.open_dataset(bad, engine="netcdf4")


def test_not_hdf5_does_not_open(tmp_path: Path) -> None:
    bad = write_not_hdf5(tmp_path / "sub" / "bad.nc")
    assert bad.stat().st_size > 0
    assert not h5py.is_hdf5(bad)
    with pytest.raises(OSError, match="signature"):
        h5py.File(bad, "r")


def test_copy_without_variable_keeps_everything_else(good: Path, tmp_path: Path) -> None:
    bad = copy_without_variable(good, tmp_path / "bad.nc", "DIC_ALT_CO2")
    before, after = _storage(good), _storage(bad)
    assert set(before) - set(after) == {"DIC_ALT_CO2"}
    assert {n: before[n] for n in after} == after
    with xr.open_dataset(good) as a, xr.open_dataset(bad) as b:
        assert set(a.data_vars) - set(b.data_vars) == {"DIC_ALT_CO2"}
        assert len(b.data_vars) == len(DATA_VARS) - 1
        xr.testing.assert_identical(a.drop_vars("DIC_ALT_CO2"), b)
    with pytest.raises(KeyError, match="NOPE"):
        copy_without_variable(good, tmp_path / "x.nc", "NOPE")


def test_copy_with_other_grid_changes_only_the_grid(good: Path, tmp_path: Path) -> None:
    bad = copy_with_other_grid(good, tmp_path / "bad.nc", grid=(24, 20))
    before, after = _storage(good), _storage(bad)
    assert set(before) == set(after)
    assert before == after  # same dtypes, storage kinds, filters, fill values
    with xr.open_dataset(good) as a, xr.open_dataset(bad) as b:
        assert set(a.variables) == set(b.variables)
        assert (b.sizes["nlat"], b.sizes["nlon"]) == (24, 20)
        assert b.sizes["z_t"] == a.sizes["z_t"]
        np.testing.assert_array_equal(b.KMT.values[::2, ::2], a.KMT.values)
        xr.testing.assert_identical(a.z_t, b.z_t)
    with h5py.File(bad, "r") as f:
        assert f["DIC"].chunks == (1, 1, 1, 5, 24, 20)
        assert f["TLAT"].chunks == (24, 20)
    with pytest.raises(ValueError, match="already has"):
        copy_with_other_grid(good, tmp_path / "same.nc", grid=(12, 10))


def test_variant_strings_and_group(tmp_path: Path) -> None:
    files, raw = write_variant_archive(tmp_path / "v", members=1, years=2, strings=True, group=True)
    assert raw["cube"]["drop"] == [f"/{VARIANT_GROUP}"]
    with xr.open_dataset(files[1]) as ds:
        assert ds.label.values.tolist() == variant_labels(0, 2001)
        assert ds.station.dims == ("y",)
    with xr.open_dataset(files[1], group=VARIANT_GROUP) as g:
        assert dict(g.sizes) == {"time": 12, "depth": 3}
        assert g.thetao.dtype == np.float32
        assert str(g.time.values[0])[:10] == "2001-01-15"
    with h5py.File(files[1], "r") as f:
        assert h5py.check_string_dtype(f["label"].dtype).length is None  # variable length


def test_copy_with_changes_changes_only_what_is_asked(tmp_path: Path) -> None:
    (src,), _ = write_variant_archive(tmp_path / "v", members=1, years=1)
    dst = copy_with_changes(
        src,
        tmp_path / "changed.nc",
        attrs={"sst": {"scale_factor": np.float32(0.02), "coordinates": None}},
        encoding={"tas": {"complevel": 6}},
        dtype={"cell_area": "f4"},
        rename_dims={"x": "lon"},
    )
    with h5py.File(src, "r") as a, h5py.File(dst, "r") as b:
        assert b["sst"].attrs["scale_factor"] == np.float32(0.02)
        assert "coordinates" not in b["sst"].attrs
        assert a["sst"].attrs["add_offset"] == b["sst"].attrs["add_offset"]
        np.testing.assert_array_equal(a["sst"][()], b["sst"][()])  # the packed integers
        assert (a["tas"].compression_opts, b["tas"].compression_opts) == (4, 6)
        np.testing.assert_array_equal(a["tas"][()], b["tas"][()])
        assert b["cell_area"].dtype == np.float32
    with xr.open_dataset(dst) as ds:
        assert ds.tas.dims == ("time", "y", "lon")
