"""How is a sample file written? netCDF4 with the atlas's dims, chunking, codecs and attributes.

Atomically (`*.tmp` then rename); a file already written with the same parameters is recognised
by its stamp attribute and kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np

from vcube.sample.fields import Grid, Series
from vcube.sample.tables import (
    _DAYS_BEFORE_MONTH,
    _DAYS_IN_MONTH,
    _DEFLATE,
    _FIELDS,
    DATA_VARS,
    DATA_VARS_3D,
    FILL_VALUE,
    SAMPLE_ATTR,
    TIME_VARS,
    TWINS,
    Z_T_150M_LEVELS,
    _calendar_month,
    elapsed_days,
)


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def is_current(path: Path, stamp: str) -> bool:
    """True if `path` is a complete file written by this generator with the same parameters."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(SAMPLE_ATTR)
    except OSError:
        return False
    if isinstance(raw, bytes | np.bytes_):
        raw = raw.decode()
    return bool(raw == stamp)


def write_atomically(path: Path, series: Series, index: int, stamp: str) -> None:
    """Write next to the target and rename, so an interrupted run never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write_month(series, tmp, index, stamp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _define(
    ds: netCDF4.Dataset,
    g: Grid,
    *,
    series: Series,
    index: int,
    year: int,
    month: int,
    stamp: str,
) -> None:
    nlat, nlon = g.shape2d
    n150 = min(Z_T_150M_LEVELS, g.levels)
    for dim, size in (
        ("polygon_id", 1),
        ("injection_date", 1),
        ("elapsed_time", 1),
        ("z_t", g.levels),
        ("z_t_150m", n150),
        ("z_w", g.levels),
        ("z_w_top", g.levels),
        ("z_w_bot", g.levels),
        ("nlat", nlat),
        ("nlon", nlon),
        ("d2", 2),
    ):
        ds.createDimension(dim, size)

    def contiguous(name: str, dtype: str, dims: tuple[str, ...], value: Any, attrs: dict) -> None:
        var = ds.createVariable(name, dtype, dims, contiguous=True, fill_value=False)
        var.setncatts(attrs)
        var[...] = value

    inj_day = int(_DAYS_BEFORE_MONTH[int(series.inj) - 1])
    contiguous("polygon_id", "i8", ("polygon_id",), [series.polygon], {"long_name": "Polygon ID"})
    contiguous(
        "injection_date",
        "i8",
        ("injection_date",),
        [inj_day],
        {"long_name": "injection date", "units": "days since 1999-01-01", "calendar": "noleap"},
    )
    contiguous(
        "elapsed_time",
        "i8",
        ("elapsed_time",),
        [elapsed_days(index)],
        {"long_name": "time elapsed since injection", "units": "days"},
    )
    start = year * 365.0 + _DAYS_BEFORE_MONTH[month - 1]
    end = start + _DAYS_IN_MONTH[month - 1]
    contiguous(
        "time",
        "f8",
        ("injection_date", "elapsed_time"),
        [[end]],
        {
            "long_name": "time",
            "units": "days since 0000-01-01",
            "calendar": "noleap",
            "bounds": "time_bound",
        },
    )
    contiguous(
        "time_bound",
        "f8",
        ("injection_date", "elapsed_time", "d2"),
        [[[start, end]]],
        {"long_name": "boundaries for time-averaging interval", "units": "days since 0000-01-01"},
    )
    for name, (dims, values, attrs) in g.coords.items():
        if dims == ():
            contiguous(name, "f8", (), values, attrs)
            continue
        var = ds.createVariable(
            name, values.dtype, dims, chunksizes=values.shape, fill_value=False, **_DEFLATE
        )
        var.setncatts(attrs)
        var[...] = values

    lead = ("polygon_id", "injection_date", "elapsed_time")
    for name in DATA_VARS:
        three_d = name in DATA_VARS_3D
        dims = (*lead, "z_t", "nlat", "nlon") if three_d else (*lead, "nlat", "nlon")
        shape = (1, 1, 1, g.levels, nlat, nlon) if three_d else (1, 1, 1, nlat, nlon)
        var = ds.createVariable(
            name, "f4", dims, chunksizes=shape, fill_value=FILL_VALUE, **_DEFLATE
        )
        f = _FIELDS[TWINS.get(name, name)]
        long_name = f.long_name + (", Alternative CO2" if name in TWINS else "")
        var.setncatts(
            {
                "long_name": long_name,
                "units": f.units,
                "grid_loc": "3111" if three_d else "2110",
                "cell_methods": "time: mean",
                "coordinates": "TLONG TLAT z_t time" if three_d else "TLONG TLAT time",
                "missing_value": FILL_VALUE,
            }
        )

    referenced = {"TLONG", "TLAT", "z_t", "time"}
    others = [n for n in [*TIME_VARS, *g.coords] if n not in referenced and n not in ds.dimensions]
    ds.setncatts(
        {
            "title": f"alk-forcing.{series.polygon:03d}-1999-{series.inj}",
            "Conventions": "CF-1.0; http://www.cgd.ucar.edu/cms/eaton/netcdf/CF-current.htm",
            "source": "CCSM POP2, the CCSM Ocean Component",
            "contents": "Diagnostic and Prognostic Variables",
            "calendar": "All years have exactly  365 days.",
            "time_period_freq": "month_1",
            "cell_methods": "cell methods: time: mean ==> the variable values are averaged "
            "over the time interval",
            "history": "synthetic sample written by vcube.sample",
            # Non-dimension coordinates no data variable names (the xarray convention).
            "coordinates": " ".join(others),
            SAMPLE_ATTR: stamp,
        }
    )


def write_month(series: Series, path: Path, index: int, stamp: str) -> None:
    """Month `index` of a series into `path`."""
    g = series.g
    year, month = _calendar_month(series.inj, index)
    rng = np.random.default_rng([series.seed, series.polygon, int(series.inj), index])
    season = np.float32(np.sin(2 * np.pi * (month - 1) / 12)) * g.hemisphere
    shape, amplitude = series.plume(index)
    mixing = g.w_profiles[60.0] ** (1.0 / (1.0 + index / 3))  # the plume deepens with time
    plume3d = shape[None, :, :] * mixing[:, None, None]
    plume3d[g.land3d] = 0.0

    # No chunk cache: with one, netCDF-C keeps every whole-variable chunk in memory until
    # close (~300 MB at full grid). The setting is process-wide, so it is restored after.
    cache = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(0, 1, 1.0)
    ds = netCDF4.Dataset(path, "w", format="NETCDF4")
    try:
        _define(ds, g, series=series, index=index, year=year, month=month, stamp=stamp)
        for name in DATA_VARS:
            if name in TWINS.values():
                continue  # written together with its twin
            values = series._field(name, rng, season, index, shape)
            ds.variables[name][...] = values[None, None, None]
            if name in TWINS:  # that was the twin (no plume): add the plume for the base
                base = TWINS[name]
                coef = np.float32(_FIELDS[base].plume * amplitude)
                values += coef * (plume3d if values.ndim == 3 else shape)
                ds.variables[base][...] = values[None, None, None]
    finally:
        ds.close()
        netCDF4.set_chunk_cache(*cache)
