"""The synthetic archive reproduces the real atlas file layout, deterministically."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from vcube import sample
from vcube.sample import (
    DATA_VARS,
    DATA_VARS_2D,
    DATA_VARS_3D,
    DIM_COORDS,
    FILL_VALUE,
    GRID_FIELDS,
    GRID_INT_FIELDS,
    SCALAR_CONSTANTS,
    TIME_VARS,
    TWINS,
    VERTICAL_COORDS,
    write_sample_archive,
)

TINY = {"polygons": 1, "dates": 2, "months": 2, "grid": (12, 10), "levels": 5, "workers": 1}
NLAT, NLON, LEVELS = 12, 10, 5
LEAD = ("polygon_id", "injection_date", "elapsed_time")
EXPECTED_PATHS = [
    "000/01/alk-forcing.000-1999-01.pop.h.0347-01.nc",
    "000/01/alk-forcing.000-1999-01.pop.h.0347-02.nc",
    "000/04/alk-forcing.000-1999-04.pop.h.0347-04.nc",
    "000/04/alk-forcing.000-1999-04.pop.h.0347-05.nc",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("tiny")
    return root, write_sample_archive(root, seed=3, **TINY)


def _raw(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=False, mask_and_scale=False)


def _values(path: Path) -> dict[str, bytes]:
    with h5py.File(path, "r") as f:
        return {name: f[name][()].tobytes() for name in DATA_VARS}


def test_paths_and_counts(tiny: tuple[Path, list[Path]]) -> None:
    root, files = tiny
    assert [p.relative_to(root).as_posix() for p in files] == EXPECTED_PATHS
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == (
        EXPECTED_PATHS
    )
    assert len(DATA_VARS_3D) == 10
    assert len(DATA_VARS_2D) == 24
    assert len(SCALAR_CONSTANTS) == 31
    assert len(GRID_FIELDS) == 18


def test_two_years_of_months_cross_the_year() -> None:
    assert sample.sample_path(7, "10", 3) == "007/10/alk-forcing.007-1999-10.pop.h.0348-01.nc"
    assert sample.sample_path(0, "04", 11) == "000/04/alk-forcing.000-1999-04.pop.h.0348-03.nc"


def test_xarray_sees_34_data_variables_and_64_coordinates(tiny: tuple[Path, list[Path]]) -> None:
    _, files = tiny
    with xr.open_dataset(files[0]) as ds:
        assert set(ds.data_vars) == set(DATA_VARS)
        expected = {
            *DIM_COORDS,
            *TIME_VARS,
            *VERTICAL_COORDS,
            *GRID_FIELDS,
            *GRID_INT_FIELDS,
            *SCALAR_CONSTANTS,
        }
        assert len(expected) == 64
        assert set(ds.coords) == expected
        assert dict(ds.sizes) == {
            "polygon_id": 1,
            "injection_date": 1,
            "elapsed_time": 1,
            "z_t": LEVELS,
            "z_t_150m": LEVELS,  # 15 in the real files, capped by the level count
            "z_w": LEVELS,
            "z_w_top": LEVELS,
            "z_w_bot": LEVELS,
            "nlat": NLAT,
            "nlon": NLON,
            "d2": 2,
        }
        assert ds.encoding.get("unlimited_dims", set()) == set()
        for name in DATA_VARS_3D:
            assert ds[name].dims == (*LEAD, "z_t", "nlat", "nlon"), name
            assert ds[name].dtype == np.float32, name
        for name in DATA_VARS_2D:
            assert ds[name].dims == (*LEAD, "nlat", "nlon"), name
            assert ds[name].dtype == np.float32, name
        for name in GRID_FIELDS:
            assert ds[name].dims == ("nlat", "nlon")
            assert ds[name].dtype == np.float64
        for name in GRID_INT_FIELDS:
            assert ds[name].dtype == np.int32
        for name in SCALAR_CONSTANTS:
            assert ds[name].dims == ()
            assert ds[name].dtype == np.float64
        assert ds["time"].dims == ("injection_date", "elapsed_time")
        assert ds["time_bound"].dims == ("injection_date", "elapsed_time", "d2")
        assert ds["dz"].dims == ("z_t",)
        assert ds["dzw"].dims == ("z_w",)


def test_hdf5_storage_matches_the_real_files(tiny: tuple[Path, list[Path]]) -> None:
    _, files = tiny
    with h5py.File(files[0], "r") as f:
        for name in DATA_VARS:
            d = f[name]
            assert d.chunks == d.shape, name  # one chunk per variable per file
            assert d.id.get_num_chunks() == 1, name
            assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True), name
            assert d.attrs["_FillValue"] == FILL_VALUE
            assert d.attrs["missing_value"] == FILL_VALUE
            assert d.attrs["_FillValue"].dtype == np.float32
        for name in (*VERTICAL_COORDS, *GRID_FIELDS, *GRID_INT_FIELDS):
            d = f[name]
            assert d.chunks == d.shape, name
            assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True), name
            assert "_FillValue" not in d.attrs, name
        for name in (*SCALAR_CONSTANTS, *TIME_VARS, *DIM_COORDS):
            d = f[name]
            assert d.chunks is None, name
            assert d.compression is None, name
            assert d.id.get_offset() is not None, name  # contiguous, storage allocated
        for name in DIM_COORDS:
            assert f[name].dtype == np.int64
            assert f[name].shape == (1,)
            assert f[name].attrs["CLASS"] == b"DIMENSION_SCALE"
            assert "_FillValue" not in f[name].attrs


def test_dimension_coordinates_and_time(tiny: tuple[Path, list[Path]]) -> None:
    _, files = tiny
    seen = []
    for path in files:
        with _raw(path) as ds:
            assert ds.polygon_id.values.tolist() == [0]
            assert "long_name" in ds.polygon_id.attrs
            assert ds.injection_date.attrs["units"] == "days since 1999-01-01"
            assert ds.injection_date.attrs["calendar"] == "noleap"
            assert ds.elapsed_time.attrs["units"] == "days"
            assert ds.time.attrs == {
                "long_name": "time",
                "units": "days since 0000-01-01",
                "calendar": "noleap",
                "bounds": "time_bound",
            }
            assert ds.time.dtype == np.float64
            assert ds.time_bound.dtype == np.float64
            lo, hi = ds.time_bound.values[0, 0]
            assert ds.time.values[0, 0] == hi
            seen.append(
                (
                    int(ds.injection_date.values[0]),
                    int(ds.elapsed_time.values[0]),
                    float(lo),
                    float(hi),
                )
            )
    # Jan 1999 -> day 0, Apr 1999 -> day 90 (noleap); elapsed time independent of the month;
    # the months run 0347-01, 0347-02 and 0347-04, 0347-05.
    day = 347 * 365
    assert seen == [
        (0, 15, day, day + 31),
        (0, 45, day + 31, day + 59),
        (90, 15, day + 90, day + 120),
        (90, 45, day + 120, day + 151),
    ]
    with xr.open_dataset(files[1]) as ds:  # and xarray decodes it as a noleap calendar
        assert ds.time.values[0, 0].strftime("%Y-%m-%d") == "0347-03-01"


def test_same_seed_same_bytes_other_seed_other_values(
    tiny: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, files = tiny
    again = write_sample_archive(tmp_path / "again", seed=3, **TINY)
    other = write_sample_archive(tmp_path / "other", seed=4, **TINY)
    for a, b in zip(files, again, strict=True):
        assert _values(a) == _values(b)
        assert a.read_bytes() == b.read_bytes()  # whole files, not just the values
    for a, b in zip(files, other, strict=True):
        va, vb = _values(a), _values(b)
        assert all(va[n] != vb[n] for n in DATA_VARS if n != "ALK_FLUX"), a.name


def test_parallel_workers_write_the_same_files(
    tiny: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, files = tiny
    parallel = write_sample_archive(tmp_path, seed=3, **{**TINY, "workers": 2})
    assert [p.read_bytes() for p in parallel] == [p.read_bytes() for p in files]


def test_land_and_sea_floor_are_fill(tiny: tuple[Path, list[Path]]) -> None:
    _, files = tiny
    with _raw(files[0]) as ds:
        kmt = ds.KMT.values
        land = kmt == 0
        assert land.any()
        assert (~land).any()
        k = np.arange(LEVELS)[:, None, None]
        below = k >= kmt[None]
        assert (below & ~land[None]).any()  # some ocean columns are shallower than the grid
        for name in DATA_VARS_3D:
            v = ds[name].values[0, 0, 0]
            assert (v[below] == FILL_VALUE).all(), name
            assert np.isfinite(v[~below]).all(), name
            assert (np.abs(v[~below]) < 1e30).all(), name
        for name in DATA_VARS_2D:
            v = ds[name].values[0, 0, 0]
            assert (v[land] == FILL_VALUE).all(), name
            assert (np.abs(v[~land]) < 1e30).all(), name
    with xr.open_dataset(files[0]) as ds:  # decoded: fill becomes NaN
        assert ds.DIC.isel(z_t=0).isnull().values[0, 0, 0][land].all()


def test_values_are_plausible(tiny: tuple[Path, list[Path]]) -> None:
    _, files = tiny
    with xr.open_dataset(files[0]) as ds:
        surface = ds.isel(z_t=0)
        for name, lo, hi in [
            ("DIC", 1800, 2300),
            ("ALK", 2200, 2500),
            ("pH_3D", 7.9, 8.3),
            ("pCO2SURF", 300, 450),
            ("ATM_CO2", 370, 390),
            ("PH", 7.9, 8.3),
        ]:
            v = surface[name].values
            v = v[np.isfinite(v)]
            assert lo < v.min(), (name, v.min())
            assert v.max() < hi, (name, v.max())
        assert (ds.DIC_ALT_CO2.isel(z_t=-1) > ds.DIC_ALT_CO2.isel(z_t=0)).sum() > 0  # deep > top
        assert float(ds.nsurface_t) == float((ds.KMT > 0).sum())
        assert np.all(np.diff(ds.z_t.values) > 0)
        assert np.allclose(ds.z_w_bot.values - ds.z_w.values, ds.dz.values)


def test_alt_co2_twins_differ_only_inside_the_plume(tiny: tuple[Path, list[Path]]) -> None:
    _, files = tiny
    for path in files:
        with _raw(path) as ds:
            ocean = ds.KMT.values > 0
            for twin, base in TWINS.items():
                a = ds[base].values[0, 0, 0]
                b = ds[twin].values[0, 0, 0]
                differ = a != b
                assert differ.any(), (path.name, base)
                equal = (a == b) & (a != FILL_VALUE)
                assert equal.any(), (path.name, base)
                surface_differ = differ[0] if a.ndim == 3 else differ
                # the plume covers part of the ocean, never land, never all of the ocean
                assert not (surface_differ & ~ocean).any()
                assert surface_differ.sum() < ocean.sum()


def test_existing_archive_is_kept_and_other_parameters_rewrite(tmp_path: Path) -> None:
    opts = {**TINY, "dates": 1, "months": 1}
    (first,) = write_sample_archive(tmp_path, **opts)
    stat = first.stat()
    (again,) = write_sample_archive(tmp_path, **opts)
    assert again == first
    assert first.stat().st_mtime_ns == stat.st_mtime_ns  # skipped: same parameters
    before = _values(first)
    write_sample_archive(tmp_path, **{**opts, "seed": 9})
    assert _values(first) != before  # other parameters: rewritten
    assert not list(tmp_path.rglob("*.tmp"))
    stale = first.with_name(first.name + ".tmp")  # as a killed run would leave it
    stale.write_bytes(b"half")
    write_sample_archive(tmp_path, **{**opts, "seed": 9})
    assert not stale.exists()


def test_a_damaged_file_is_rewritten(tmp_path: Path) -> None:
    opts = {**TINY, "dates": 1, "months": 1}
    (path,) = write_sample_archive(tmp_path, **opts)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    write_sample_archive(tmp_path, **opts)
    assert path.read_bytes() == good


def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = sample.Series._field

    def fail_midway(self: sample.Series, *args: object, **kwargs: object) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sample.Series, "_field", fail_midway)
    with pytest.raises(KeyboardInterrupt):
        write_sample_archive(tmp_path, **TINY)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "bad",
    [{"dates": 5}, {"dates": 0}, {"polygons": 0}, {"months": 0}, {"grid": (2, 10)}, {"seed": -1}],
)
def test_bad_parameters_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"need|seed"):
        write_sample_archive(tmp_path, **{**TINY, **bad})  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_full_grid_file_is_atlas_sized(tmp_path: Path) -> None:
    """One 384x320x60 month, as the benchmarks use: ~9-11 s and ~115 MB on 2 cores."""
    t0 = time.perf_counter()
    (path,) = write_sample_archive(
        tmp_path, polygons=1, dates=1, months=1, grid=(384, 320), levels=60, workers=1
    )
    elapsed = time.perf_counter() - t0
    assert path.stat().st_size > 100e6, (path.stat().st_size, elapsed)
    with h5py.File(path, "r") as f:
        assert f["DIC"].chunks == (1, 1, 1, 60, 384, 320)
        assert f["PH"].chunks == (1, 1, 1, 384, 320)
        assert f["z_t_150m"].shape == (15,)
