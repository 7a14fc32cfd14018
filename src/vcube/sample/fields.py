"""What values does a sample file hold? The grid, its masks and the smooth fields of a series.

Ocean-like values, deterministic for a seed: a land mask, depth-dependent profiles and a
growing alkalinity plume that makes each `_ALT_CO2` twin differ from its base field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vcube.sample.tables import (
    _FIELDS,
    _SCALARS,
    _TOTAL_DEPTH_CM,
    DATA_VARS_3D,
    FILL_VALUE,
    GRID_2D,
    TWINS,
    Z_T_150M_LEVELS,
    elapsed_days,
)


@dataclass(frozen=True)
class Grid:
    """Everything shared by all files of an archive: coordinates, masks, horizontal patterns."""

    levels: int
    shape2d: tuple[int, int]
    coords: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]]
    ocean2d: np.ndarray  # bool (nlat, nlon)
    land3d: np.ndarray  # bool (levels, nlat, nlon): land or below the sea floor
    lat_pattern: np.ndarray  # float32 (nlat, nlon), +1 at the equator, -1 at the poles
    hemisphere: np.ndarray  # float32 (nlat, nlon), +1 north, -1 south
    w_profiles: dict[float, np.ndarray]  # depth scale (m) -> float32 (levels,) 1 at the surface


def _smooth_random(rng: np.random.Generator, nlat: int, nlon: int, modes: int) -> np.ndarray:
    """A smooth random field (sum of low-wavenumber cells, periodic in x), scaled to std 1."""
    y = np.arange(nlat)[:, None] / nlat
    x = np.arange(nlon)[None, :] / nlon
    out = np.zeros((nlat, nlon))
    for _ in range(modes):
        ky, kx = rng.uniform(0.5, 2.0), rng.integers(1, 4)
        py, px = rng.uniform(0, 2 * np.pi, size=2)
        out += (
            rng.uniform(0.5, 1.0)
            * np.cos(2 * np.pi * ky * y + py)
            * np.cos(2 * np.pi * kx * x + px)
        )
    out -= out.mean()
    return out / (out.std() or 1.0)


def _vertical(levels: int) -> dict[str, np.ndarray]:
    """POP-like stretched levels (thin near the surface) spanning the same total depth."""
    s = np.linspace(0.0, 1.0, levels) if levels > 1 else np.zeros(1)
    dz = 1.0 + 24.0 * s**2.5
    dz = np.round(dz * _TOTAL_DEPTH_CM / dz.sum(), 3)
    z_w = np.concatenate([[0.0], np.cumsum(dz)[:-1]])
    z_t = z_w + dz / 2
    dzw = np.append(np.diff(z_t), dz[-1] / 2)
    return {"dz": dz, "z_w": z_w, "z_w_bot": z_w + dz, "z_t": z_t, "dzw": dzw}


def make_grid(nlat: int, nlon: int, levels: int, seed: int) -> Grid:
    rng = np.random.default_rng([seed, 0xC0FFEE])
    v = _vertical(levels)
    n150 = min(Z_T_150M_LEVELS, levels)

    # A regular grid with a gentle curvilinear distortion in the north (displaced pole).
    jj = (np.arange(nlat)[:, None] + 0.5) / nlat
    ii = (np.arange(nlon)[None, :] + 0.5) / nlon
    tlat = -79.2 + 168.9 * jj + 0.8 * np.sin(2 * np.pi * ii) * np.clip(jj - 0.7, 0, None)
    tlon = 320.5625 + 360.0 * ii + 4.0 * np.clip(jj - 0.75, 0, None) * np.cos(2 * np.pi * ii)
    tlon = np.broadcast_to(tlon % 360.0, (nlat, nlon)).copy()
    dlat, dlon = 168.9 / nlat, 360.0 / nlon
    ulat, ulon = tlat + dlat / 2, (tlon + dlon / 2) % 360.0
    radius = _SCALARS["radius"][0]
    dy = np.full((nlat, nlon), radius * np.deg2rad(dlat))
    dxt = radius * np.cos(np.deg2rad(tlat)) * np.deg2rad(dlon)
    dxu = radius * np.cos(np.deg2rad(ulat)) * np.deg2rad(dlon)
    angle = 0.02 * np.sin(2 * np.pi * ii) * np.clip(jj - 0.7, 0, None)
    anglet = np.roll(angle, 1, axis=1)

    # Land: smooth blobs above a threshold, plus Antarctica in the south; depth grows offshore.
    blobs = _smooth_random(rng, nlat, nlon, modes=6)
    threshold = np.quantile(blobs, 0.72)
    land = (blobs > threshold) | (tlat < -72.0)
    offshore = np.clip((threshold - blobs) / blobs.std(), 0, None)
    kmt = np.clip(np.round(levels * (0.35 + 1.6 * offshore)), 1, levels).astype(np.int32)
    kmt[land] = 0
    kmu = np.minimum.reduce(
        [kmt, np.roll(kmt, -1, 1), np.roll(kmt, -1, 0), np.roll(np.roll(kmt, -1, 0), -1, 1)]
    )
    kmu[-1, :] = 0  # no U points beyond the northern edge
    region = np.where(tlon < 20, 6, np.where(tlon < 145, 3, np.where(tlon < 290, 2, 6)))
    region = np.where(tlat < -35, 1, np.where(tlat > 66, 10, region)).astype(np.int32)
    region[land] = 0
    ht = np.where(kmt > 0, v["z_w_bot"][np.maximum(kmt, 1) - 1], 0.0)
    hu = np.where(kmu > 0, v["z_w_bot"][np.maximum(kmu, 1) - 1], 0.0)

    two = ("nlat", "nlon")
    t_coords, u_coords = "TLONG TLAT", "ULONG ULAT"
    coords: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] = {}

    def vert(name: str, dim: str, values: np.ndarray, long_name: str) -> None:
        attrs = {"long_name": long_name, "units": "centimeters"}
        if name.startswith("z_"):
            attrs |= {
                "positive": "down",
                "valid_min": values.min(),
                "valid_max": values.max(),
            }
        coords[name] = ((dim,), values, attrs)

    vert("z_t", "z_t", v["z_t"], "depth from surface to midpoint of layer")
    vert("z_t_150m", "z_t_150m", v["z_t"][:n150], "depth from surface to midpoint of layer")
    vert("z_w", "z_w", v["z_w"], "depth from surface to top of layer")
    vert("z_w_top", "z_w_top", v["z_w"], "depth from surface to top of layer")
    vert("z_w_bot", "z_w_bot", v["z_w_bot"], "depth from surface to bottom of layer")
    vert("dz", "z_t", v["dz"], "thickness of layer k")
    vert("dzw", "z_w", v["dzw"], "midpoint of k to midpoint of k+1")

    def two_d(name: str, values: np.ndarray, long_name: str, units: str, at: str) -> None:
        attrs = {"long_name": long_name, "units": units}
        if name not in at.split():  # POP's lon/lat fields carry no coordinates of their own
            attrs["coordinates"] = at
        coords[name] = (two, np.ascontiguousarray(values, dtype=np.float64), attrs)

    quantity = {
        "ulon": ulon,
        "ulat": ulat,
        "tlon": tlon,
        "tlat": tlat,
        "uarea": dxu * dy,
        "tarea": dxt * dy,
        "hu": hu,
        "ht": ht,
        "dxu": dxu,
        "dxt": dxt,
        "dy": dy,
        "angle": angle,
        "anglet": anglet,
    }
    grid_coords = {"U": u_coords, "T": t_coords}
    for name, source, long_name, units, grid in GRID_2D:
        two_d(name, quantity[source], long_name, units, grid_coords[grid])
    for name, values, long_name, at in (
        ("KMT", kmt, "k Index of Deepest Grid Cell on T Grid", t_coords),
        ("KMU", kmu, "k Index of Deepest Grid Cell on U Grid", u_coords),
        ("REGION_MASK", region, "basin index number (signed integers)", t_coords),
    ):
        coords[name] = (two, values, {"long_name": long_name, "coordinates": at})

    ocean = kmt > 0
    land3d = np.arange(levels)[:, None, None] >= kmt[None, :, :]
    lat_rad = np.deg2rad(tlat)
    scales = {f.zscale_m for f in _FIELDS.values()} | {60.0}
    w = {s: np.exp(-v["z_t"] / 100.0 / s).astype(np.float32) for s in scales}
    counts = {"nsurface_t": float(ocean.sum()), "nsurface_u": float((kmu > 0).sum())}
    for name, (value, units, long_name) in _SCALARS.items():
        coords[name] = (
            (),
            np.array(counts.get(name, value), dtype=np.float64),
            {"long_name": long_name, "units": units},
        )
    return Grid(
        levels=levels,
        shape2d=(nlat, nlon),
        coords=coords,
        ocean2d=ocean,
        land3d=land3d,
        lat_pattern=np.cos(2 * lat_rad).astype(np.float32),
        hemisphere=np.sign(tlat).astype(np.float32),
        w_profiles=w,
    )


class Series:
    """The smooth fields of one polygon and injection month, computed once for all its months."""

    def __init__(self, g: Grid, seed: int, polygon: int, injection_month: str) -> None:
        self.g = g
        self.seed = seed
        self.polygon = polygon
        self.inj = injection_month
        rng = np.random.default_rng([seed, polygon, int(injection_month), 0xBA5E])
        nlat, nlon = g.shape2d
        rand = _smooth_random(rng, nlat, nlon, modes=4).astype(np.float32)
        # Per field: the 2-D horizontal anomaly (without the seasonal term).
        self.horizontal = {
            name: (f.lat * g.lat_pattern + f.rand * rand).astype(np.float32)
            for name, f in _FIELDS.items()
        }
        # The polygon's plume centre: a fixed ocean point per polygon (same for every injection).
        crng = np.random.default_rng([seed, polygon, 0xCE])
        jo, io = np.nonzero(g.ocean2d & (g.coords["TLAT"][1] > -60) & (g.coords["TLAT"][1] < 60))
        if jo.size == 0:
            jo, io = np.nonzero(g.ocean2d)
        pick = crng.integers(jo.size)
        self.centre = (int(jo[pick]), int(io[pick]))
        self.sigma0 = max(0.7, nlon / 80)

    def plume(self, index: int) -> tuple[np.ndarray, float]:
        """Horizontal plume shape (0 exactly beyond 3 sigma and on land) and its amplitude."""
        nlat, nlon = self.g.shape2d
        days = elapsed_days(index)
        sigma = min(self.sigma0 * np.sqrt(1 + days / 60), nlon / 6)
        j0, i0 = self.centre
        dy = np.arange(nlat)[:, None] - j0
        dx = np.arange(nlon)[None, :] - i0
        dx = (dx + nlon // 2) % nlon - nlon // 2  # periodic in longitude
        r2 = (dy**2 + dx**2) / sigma**2
        shape = np.where((r2 <= 9.0) & self.g.ocean2d, np.exp(-0.5 * r2), 0.0).astype(np.float32)
        amplitude = 60.0 * (self.sigma0 / sigma) ** 2  # a fixed amount of alkalinity spreading out
        return shape, amplitude

    def _field(
        self,
        name: str,
        rng: np.random.Generator,
        season: np.ndarray,
        index: int,
        shape: np.ndarray,
    ) -> np.ndarray:
        """The twin (no plume) of `name`'s base field, or an unpaired field, with fill on land."""
        g = self.g
        base = TWINS.get(name, name)
        f = _FIELDS[base]
        if base == "ALK_FLUX":  # the forcing: only in the first month, over the polygon
            out = np.zeros(g.shape2d, dtype=np.float32)
            if index == 0:
                out += np.float32(2e-3) * shape
            out[~g.ocean2d] = FILL_VALUE
            return out
        horizontal = self.horizontal[base] + np.float32(f.season) * season
        three_d = name in DATA_VARS_3D
        shape_out = (g.levels, *g.shape2d) if three_d else g.shape2d
        out = rng.standard_normal(shape_out, dtype=np.float32)
        out *= np.float32(f.noise)
        if three_d:
            out += np.float32(f.deep)
            w = g.w_profiles[f.zscale_m][:, None, None]
            out += w * (np.float32(f.top - f.deep) + horizontal)[None, :, :]
            np.copyto(out, FILL_VALUE, where=g.land3d)
        else:
            out += np.float32(f.top) + horizontal
            np.copyto(out, FILL_VALUE, where=~g.ocean2d)
        return out
