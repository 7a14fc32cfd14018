"""Factories for test archives: a differently shaped archive and damaged copies of sample files.

Each factory writes real netCDF4/HDF5 files (or deliberately broken ones) into a given place,
so tests exercise the same readers the pipeline uses on the real archive.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cftime
import netCDF4
import numpy as np

VARIANT_PATTERN = "{member}/run.{member}.{year}.nc"
VARIANT_FIRST_YEAR = 2000
VARIANT_GRID = (5, 7)  # (y, x)
VARIANT_TIME_UNITS = "days since 2000-01-01"
VARIANT_FILL = np.float32(1e20)
PACKED_FILL = np.int16(-32768)
PACKED_SCALE = 0.01
PACKED_OFFSET = 15.0
VARIANT_GROUP = "ocean"


def variant_member(i: int) -> str:
    """Member ids are text, not numbers: the cube takes them from the path."""
    return f"m{i:02d}"


def write_variant_archive(
    root: str | Path,
    *,
    members: int = 3,
    years: int = 2,
    repo: str | Path | None = None,
    strings: bool = False,
    group: bool = False,
) -> tuple[list[Path], dict[str, Any]]:
    """An archive shaped unlike the atlas; returns its files (sorted) and a matching spec dict.

    `{member}/run.{member}.{year}.nc`: no member coordinate in the files (it comes from the
    path), 12 monthly steps per file along a `time` dimension coordinate (standard calendar),
    `tas` float32 (time, y, x) in TWO chunks per file, `sst` int16 packed with scale_factor /
    add_offset / _FillValue, and a static 2-D float64 coordinate `cell_area` (y, x).
    With `strings`: `label` (time), variable-length strings that differ per file, and
    `station` (y), static variable-length strings. With `group`: a netCDF4 group `/ocean`
    holding its own `time` and `depth` and `thetao` float32 (time, depth) (the
    spec drops it; `spec["cube"]["file_group"] = "ocean"` builds from it instead).
    The spec's repo defaults to `<root>-cube` next to the archive.
    """
    root = Path(root)
    files = []
    for i in range(members):
        member = variant_member(i)
        for year in range(VARIANT_FIRST_YEAR, VARIANT_FIRST_YEAR + years):
            path = root / VARIANT_PATTERN.format(member=member, year=year)
            _write_variant_file(path, member_index=i, year=year, strings=strings, group=group)
            files.append(path)
    spec = {
        "name": "variant",
        "source": {"root": str(root), "pattern": VARIANT_PATTERN, "storage": {}},
        "cube": {
            "dims": [
                {"name": "member", "order_by": ["member"], "values": "path"},
                {"name": "time", "order_by": ["year"]},
            ],
            "shard_by": ["member"],
            "commit_by": "member",
            "inline": [],
            "drop": [f"/{VARIANT_GROUP}"] if group else [],
        },
        "target": {
            "repo": str(repo if repo is not None else root.with_name(root.name + "-cube")),
            "branch": "main",
            "storage": {},
        },
    }
    return sorted(files), spec


def variant_labels(member_index: int, year: int) -> list[str]:
    """The per-step strings of `label` in one variant file (lengths vary, some non-ASCII)."""
    return [f"{variant_member(member_index)}-{year}-{m:02d}" + "é" * (m % 3) for m in range(12)]


def _write_variant_file(
    path: Path, *, member_index: int, year: int, strings: bool = False, group: bool = False
) -> None:
    ny, nx = VARIANT_GRID
    rng = np.random.default_rng([member_index, year])
    origin = dt.date(2000, 1, 1)
    days = [(dt.date(year, m, 15) - origin).days for m in range(1, 13)]
    y = np.linspace(-60.0, 60.0, ny)
    x = np.linspace(0.0, 360.0, nx, endpoint=False)
    land = np.zeros((ny, nx), dtype=bool)
    land[1:3, 2:4] = True
    seasonal = 10 * np.sin(2 * np.pi * (np.arange(12) + 0.5) / 12)[:, None, None]
    tas = 288 + 20 * np.cos(np.deg2rad(y))[None, :, None] + seasonal
    tas = tas + rng.normal(0, 0.5, (12, ny, nx)) + member_index
    tas = np.broadcast_to(tas, (12, ny, nx)).astype(np.float32)
    sst = np.where(land[None], np.nan, tas - 273.15)
    packed = np.where(
        np.isnan(sst), PACKED_FILL, np.round((sst - PACKED_OFFSET) / PACKED_SCALE)
    ).astype(np.int16)

    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.set_auto_maskandscale(False)
        ds.createDimension("time", 12)
        ds.createDimension("y", ny)
        ds.createDimension("x", nx)
        t = ds.createVariable("time", "f8", ("time",), contiguous=True, fill_value=False)
        t.setncatts({"units": VARIANT_TIME_UNITS, "calendar": "standard", "long_name": "time"})
        t[:] = days
        for name, values, units in (("y", y, "degrees_north"), ("x", x, "degrees_east")):
            v = ds.createVariable(name, "f8", (name,), contiguous=True, fill_value=False)
            v.units = units
            v[:] = values
        area = ds.createVariable(
            "cell_area", "f8", ("y", "x"), zlib=True, complevel=1, fill_value=False
        )
        area.setncatts({"units": "m2", "long_name": "grid cell area"})
        area[:] = 1e10 * np.cos(np.deg2rad(y))[:, None] * np.ones((1, nx))
        cube = ("time", "y", "x")
        zlib4: dict[str, Any] = {"zlib": True, "complevel": 4}
        v = ds.createVariable(
            "tas",
            "f4",
            cube,
            chunksizes=(6, ny, nx),
            shuffle=True,
            fill_value=VARIANT_FILL,
            **zlib4,
        )
        v.setncatts({"units": "K", "long_name": "air temperature", "coordinates": "cell_area"})
        v[:] = tas
        p = ds.createVariable(
            "sst", "i2", cube, chunksizes=(12, ny, nx), fill_value=PACKED_FILL, **zlib4
        )
        p.set_auto_maskandscale(False)  # write the packed integers as they are
        p.setncatts(
            {
                "units": "degC",
                "long_name": "sea surface temperature",
                "scale_factor": np.float32(PACKED_SCALE),
                "add_offset": np.float32(PACKED_OFFSET),
                "coordinates": "cell_area",
            }
        )
        p[:] = packed
        ds.setncatts({"title": f"variant member {variant_member(member_index)} {year}"})
        if strings:
            lab = ds.createVariable("label", str, ("time",))
            lab.long_name = "step label"
            lab[:] = np.array(variant_labels(member_index, year), dtype=object)
            st = ds.createVariable("station", str, ("y",))
            st[:] = np.array([f"station {j}" for j in range(ny)], dtype=object)
        if group:
            # Self-contained, like a model component's output: its own time and depth.
            g = ds.createGroup(VARIANT_GROUP)
            g.createDimension("time", 12)
            g.createDimension("depth", 3)
            gt = g.createVariable("time", "f8", ("time",), contiguous=True, fill_value=False)
            gt.setncatts({"units": VARIANT_TIME_UNITS, "calendar": "standard"})
            gt[:] = days
            d = g.createVariable("depth", "f8", ("depth",), contiguous=True, fill_value=False)
            d.units = "m"
            d[:] = [5.0, 50.0, 500.0]
            th = g.createVariable(
                "thetao", "f4", ("time", "depth"), chunksizes=(12, 3), fill_value=VARIANT_FILL
            )
            th.units = "degC"
            th[:] = tas.mean(axis=(1, 2))[:, None] - 273.15 - np.array([0.0, 2.0, 8.0])


# --- a real-world-style archive: files of different lengths, per-file time units --------------

DECADES = ((1850, 1859), (1860, 1869), (1870, 1874))  # the last file is shorter
DECADAL_PATTERN = "{member}/Amon_{member}_{period}.nc"
DAILY_PATTERN = "{member}/day_{member}_{year}.nc"
REAL_GRID = (3, 4)  # (lat, lon)
REAL_GROUP = "diagnostics"


def decadal_period(first: int, last: int) -> str:
    return f"{first}01-{last}12"


def write_decadal_archive(
    root: str | Path, *, members: int = 2, repo: str | Path | None = None
) -> tuple[dict[str, list[Path]], dict[str, Any]]:
    """CMIP-style monthly files, one per decade and a short last one (120, 120, 60 steps).

    Each file's `time` counts from its own decade ("days since 1860-01-01", noleap), with
    `time_bnds` (no units of its own, CF). `tas` is contiguous and uncompressed, `pr` chunked
    12 steps at a time (zlib + shuffle), `sst` int16 packed, `label` (time) variable-length
    strings, `lat`/`lon` static, and a group `/diagnostics` the spec drops. Returns the files of
    each member (in time order) and a matching spec dict.
    """
    root = Path(root)
    files: dict[str, list[Path]] = {}
    for i in range(members):
        member = variant_member(i)
        for first, last in DECADES:
            path = root / DECADAL_PATTERN.format(member=member, period=decadal_period(first, last))
            months = (last - first + 1) * 12
            start = cftime.DatetimeNoLeap(first, 1, 1)
            mids = [_add_months(start, m, mid=True) for m in range(months)]
            edges = [_add_months(start, m) for m in range(months + 1)]
            units = f"days since {first}-01-01"
            _write_real_file(
                path,
                member_index=i,
                first=first,
                times=cftime.date2num(mids, units, calendar="noleap"),
                bounds=cftime.date2num(edges, units, calendar="noleap"),
                units=units,
                calendar="noleap",
                chunk=12,
            )
            files.setdefault(member, []).append(path)
    return files, _real_spec("decadal", root, DECADAL_PATTERN, "period", repo)


def write_daily_archive(
    root: str | Path,
    *,
    calendar: str = "standard",
    years: tuple[int, ...] = (2000, 2001, 2002, 2003),
    members: int = 2,
    chunk: int = 1,
    repo: str | Path | None = None,
) -> tuple[dict[str, list[Path]], dict[str, Any]]:
    """Yearly files of daily steps: 366 in leap years (standard calendar), always 365 with
    noleap. Each file counts days from its own year. Same variables as the decadal archive;
    `pr` is chunked `chunk` days at a time."""
    root = Path(root)
    files: dict[str, list[Path]] = {}
    for i in range(members):
        member = variant_member(i)
        for year in years:
            path = root / DAILY_PATTERN.format(member=member, year=year)
            units = f"days since {year}-01-01"
            n = int(
                cftime.date2num(cftime.datetime(year + 1, 1, 1, calendar=calendar), units, calendar)
            )
            _write_real_file(
                path,
                member_index=i,
                first=year,
                times=np.arange(n) + 0.5,
                bounds=np.arange(n + 1, dtype=np.float64),
                units=units,
                calendar=calendar,
                chunk=chunk,
            )
            files.setdefault(member, []).append(path)
    return files, _real_spec("daily", root, DAILY_PATTERN, "year", repo)


def _add_months(start: Any, months: int, *, mid: bool = False) -> Any:
    y, m = divmod(start.month - 1 + months, 12)
    d = cftime.DatetimeNoLeap(start.year + y, m + 1, 1)
    return d + dt.timedelta(days=14) if mid else d


def _real_spec(
    name: str, root: Path, pattern: str, field: str, repo: str | Path | None
) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"root": str(root), "pattern": pattern, "storage": {}},
        "cube": {
            "dims": [
                {"name": "member", "order_by": ["member"], "values": "path"},
                {"name": "time", "order_by": [field]},
            ],
            "shard_by": ["member"],
            "commit_by": "member",
            "inline": ["time_bnds"],
            "drop": [f"/{REAL_GROUP}"],
        },
        "target": {
            "repo": str(repo if repo is not None else root.with_name(root.name + "-cube")),
            "branch": "main",
            "storage": {},
        },
    }


def _write_real_file(
    path: Path,
    *,
    member_index: int,
    first: int,
    times: np.ndarray,
    bounds: np.ndarray,
    units: str,
    calendar: str,
    chunk: int,
) -> None:
    ny, nx = REAL_GRID
    n = len(times)
    rng = np.random.default_rng([member_index, first, n])
    lat = np.linspace(-45.0, 45.0, ny)
    lon = np.linspace(0.0, 270.0, nx)
    tas = (280 + rng.normal(0, 5, (n, ny, nx)) + member_index).astype(np.float32)
    sst = np.round((tas - 273.15 - PACKED_OFFSET) / PACKED_SCALE).astype(np.int16)
    tas[0, 0, 0] = VARIANT_FILL  # one missing value
    pr = rng.gamma(2.0, 1e-5, (n, ny, nx)).astype(np.float32)
    sst[:, 0, 1] = PACKED_FILL  # land
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.set_auto_maskandscale(False)
        ds.createDimension("time", n)
        ds.createDimension("bnds", 2)
        ds.createDimension("lat", ny)
        ds.createDimension("lon", nx)
        t = ds.createVariable("time", "f8", ("time",), contiguous=True, fill_value=False)
        t.setncatts({"units": units, "calendar": calendar, "bounds": "time_bnds"})
        t[:] = times
        tb = ds.createVariable(
            "time_bnds", "f8", ("time", "bnds"), contiguous=True, fill_value=False
        )
        tb[:] = np.stack([bounds[:-1], bounds[1:]], axis=1)
        for name, values in (("lat", lat), ("lon", lon)):
            v = ds.createVariable(name, "f8", (name,), contiguous=True, fill_value=False)
            v.units = "degrees_north" if name == "lat" else "degrees_east"
            v[:] = values
        cube = ("time", "lat", "lon")
        deflated: dict[str, Any] = {"chunksizes": (chunk, ny, nx), "zlib": True, "complevel": 4}
        v = ds.createVariable("tas", "f4", cube, contiguous=True, fill_value=VARIANT_FILL)
        v.setncatts({"units": "K", "long_name": "air temperature"})
        v[:] = tas
        v = ds.createVariable("pr", "f4", cube, shuffle=True, fill_value=VARIANT_FILL, **deflated)
        v.setncatts({"units": "kg m-2 s-1", "long_name": "precipitation"})
        v[:] = pr
        p = ds.createVariable("sst", "i2", cube, fill_value=PACKED_FILL, **deflated)
        p.set_auto_maskandscale(False)
        p.setncatts(
            {
                "units": "degC",
                "scale_factor": np.float32(PACKED_SCALE),
                "add_offset": np.float32(PACKED_OFFSET),
            }
        )
        p[:] = sst
        lab = ds.createVariable("label", str, ("time",))
        lab[:] = np.array([f"{variant_member(member_index)}-{first}-{k}" for k in range(n)], object)
        g = ds.createGroup(REAL_GROUP)
        g.createDimension("k", 2)
        gv = g.createVariable("score", "f4", ("k",))
        gv[:] = [member_index, first]
        ds.setncatts({"title": f"{variant_member(member_index)} from {first}"})


# --- damaged inputs ---------------------------------------------------------------------------


def truncate_file(src: str | Path, dst: str | Path, keep_fraction: float = 0.5) -> Path:
    """The first `keep_fraction` of the bytes of `src`, as an interrupted upload leaves them."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def write_not_hdf5(dst: str | Path) -> Path:
    """A file with a `.nc` name that is not HDF5 at all (an error page saved as data)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    body = "<html><body><h1>503 Service Unavailable</h1></body></html>\n" * 50
    dst.write_bytes(body.encode())
    return dst


def copy_without_variable(src: str | Path, dst: str | Path, var: str) -> Path:
    """The same file minus one variable; every other variable keeps its values and encodings."""
    with netCDF4.Dataset(src) as ds:
        if var not in ds.variables:
            raise KeyError(f"{src} has no variable {var!r}")
    return _copy(Path(src), Path(dst), skip={var})


def copy_with_other_grid(
    src: str | Path, dst: str | Path, grid: tuple[int, int] = (24, 20)
) -> Path:
    """The same variables and encodings on an nlat x nlon grid of another size (nearest copy)."""
    with netCDF4.Dataset(src) as ds:
        old = (len(ds.dimensions["nlat"]), len(ds.dimensions["nlon"]))
    if tuple(grid) == old:
        raise ValueError(f"{src} already has the grid {old}: ask for another one")
    index = {
        dim: (np.arange(new) * n // new)
        for dim, new, n in (("nlat", grid[0], old[0]), ("nlon", grid[1], old[1]))
    }
    return _copy(Path(src), Path(dst), resize=index)


def copy_with_changes(
    src: str | Path,
    dst: str | Path,
    *,
    attrs: dict[str, dict[str, Any]] | None = None,
    encoding: dict[str, dict[str, Any]] | None = None,
    dtype: dict[str, Any] | None = None,
    rename_dims: dict[str, str] | None = None,
) -> Path:
    """The same file with a few encodings changed, the values kept (converted if `dtype`).

    `attrs` = {variable: {attribute: value, or None to delete it}} (`_FillValue` included);
    `encoding` = {variable: createVariable keyword arguments}, e.g. {"complevel": 6} or
    {"zlib": False, "compression": "zstd", "complevel": 3}; `dtype` = {variable: new dtype};
    `rename_dims` = {old name: new name}. What a file of an archive that silently changed its
    encoding looks like.
    """
    return _copy(
        Path(src),
        Path(dst),
        attrs=attrs or {},
        encoding=encoding or {},
        dtype=dtype or {},
        rename_dims=rename_dims or {},
    )


def _copy(
    src: Path,
    dst: Path,
    *,
    skip: Iterable[str] = (),
    resize: dict[str, np.ndarray] | None = None,
    attrs: dict[str, dict[str, Any]] | None = None,
    encoding: dict[str, dict[str, Any]] | None = None,
    dtype: dict[str, Any] | None = None,
    rename_dims: dict[str, str] | None = None,
) -> Path:
    """Copy a netCDF4 file variable by variable with the same storage, filters and attributes.

    `resize` maps a dimension to the source indices taken along it (its new length); the other
    options are those of `copy_with_changes`. Groups are not copied.
    """
    skip, resize = set(skip), resize or {}
    new_attrs, new_enc, new_dtype = attrs or {}, encoding or {}, dtype or {}
    dim_name = rename_dims or {}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(src) as s, netCDF4.Dataset(dst, "w", format=s.data_model) as d:
        s.set_auto_maskandscale(False)
        d.set_auto_maskandscale(False)
        for name, dim in s.dimensions.items():
            size = len(resize[name]) if name in resize else len(dim)
            d.createDimension(dim_name.get(name, name), None if dim.isunlimited() else size)
        for name, v in s.variables.items():
            if name in skip:
                continue
            take: Callable[[np.ndarray], np.ndarray] = _taker(v.dimensions, resize)
            kwargs: dict[str, Any] = {}
            chunking = v.chunking()
            if chunking == "contiguous":
                kwargs["contiguous"] = True
            elif chunking is not None:
                # A chunk spanning a resized dim still spans it; a partial one stays partial.
                kwargs["chunksizes"] = [
                    _resized_chunk(c, len(s.dimensions[dim]), len(resize[dim]))
                    if dim in resize
                    else c
                    for c, dim in zip(chunking, v.dimensions, strict=True)
                ]
            filters = v.filters() or {}
            if filters.get("zlib"):
                kwargs |= {"zlib": True, "complevel": filters["complevel"]}
            kwargs["shuffle"] = bool(filters.get("shuffle"))
            kwargs |= new_enc.get(name, {})
            va = {k: v.getncattr(k) for k in v.ncattrs()}
            for k, val in new_attrs.get(name, {}).items():
                if val is None:
                    va.pop(k, None)
                else:
                    va[k] = val
            fill = va.pop("_FillValue", False)
            typ = new_dtype.get(name, v.datatype)
            dims = tuple(dim_name.get(x, x) for x in v.dimensions)
            out = d.createVariable(name, typ, dims, fill_value=fill, **kwargs)
            out.set_auto_maskandscale(False)  # copy raw (packed) values
            out.setncatts(va)
            values = take(v[...])
            out[...] = values if name not in new_dtype else np.asarray(values).astype(typ)
        d.setncatts({k: s.getncattr(k) for k in s.ncattrs()})
    return dst


def _resized_chunk(chunk: int, old: int, new: int) -> int:
    return new if chunk == old else min(chunk, new)


def _taker(dims: tuple[str, ...], resize: dict[str, np.ndarray]) -> Callable[[Any], Any]:
    axes = [(axis, resize[dim]) for axis, dim in enumerate(dims) if dim in resize]

    def take(values: Any) -> Any:
        for axis, idx in axes:
            values = np.take(values, idx, axis=axis)
        return values

    return take
