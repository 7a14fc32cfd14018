"""Factories for test archives: a differently shaped archive and damaged copies of sample files.

Each factory writes real netCDF4/HDF5 files (or deliberately broken ones) into a given place,
so tests exercise the same readers the pipeline uses on the real archive.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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
        v = ds.createVariable(
            "tas",
            "f4",
            ("time", "y", "x"),
            chunksizes=(6, ny, nx),
            zlib=True,
            complevel=4,
            shuffle=True,
            fill_value=VARIANT_FILL,
        )
        v.setncatts({"units": "K", "long_name": "air temperature", "coordinates": "cell_area"})
        v[:] = tas
        p = ds.createVariable(
            "sst",
            "i2",
            ("time", "y", "x"),
            chunksizes=(12, ny, nx),
            zlib=True,
            complevel=4,
            fill_value=PACKED_FILL,
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
