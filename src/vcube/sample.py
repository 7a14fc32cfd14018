"""What does an archive like the atlas look like? A synthetic one with its file layout, for tests.

Only the sizes shrink (nlat x nlon, level count, numbers of polygons / injection dates / months);
the variables, dims, dtypes, chunking, compression and attributes are those of the real files,
because chunk refs, codecs and inline values are exactly what vcube is about. The values look
like ocean fields (land mask, depth-dependent profiles, a growing alkalinity plume that makes
each `_ALT_CO2` twin differ from its base field) so that plots and validation are meaningful.

Everything is deterministic for a seed. Files are written atomically (`*.tmp` then rename), and
a file that already exists with the same generator parameters is skipped, not rewritten: its
bytes would be identical, and keeping it keeps its modification time, which a built cube uses
as the checksum of its virtual refs.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
from tqdm import tqdm

FILL_VALUE = np.float32(9.96921e36)
INJECTION_MONTHS: tuple[str, ...] = ("01", "04", "07", "10")
START_YEAR = 347  # model year of the first month of every series
Z_T_150M_LEVELS = 15
GENERATOR_VERSION = 1
# Global attribute that records how a file was generated (used to skip identical rewrites).
SAMPLE_ATTR = "vcube_sample"

DATA_VARS_3D: tuple[str, ...] = (
    "CO3",
    "pH_3D",
    "CO3_ALT_CO2",
    "pH_3D_ALT_CO2",
    "co3_sat_calc",
    "co3_sat_arag",
    "DIC",
    "DIC_ALT_CO2",
    "ALK",
    "ALK_ALT_CO2",
)
DATA_VARS_2D: tuple[str, ...] = (
    "CO2STAR",
    "DCO2STAR",
    "pCO2SURF",
    "DpCO2",
    "FG_CO2",
    "PH",
    "ATM_CO2",
    "CO2STAR_ALT_CO2",
    "DCO2STAR_ALT_CO2",
    "pCO2SURF_ALT_CO2",
    "DpCO2_ALT_CO2",
    "FG_ALT_CO2",
    "PH_ALT_CO2",
    "ALK_FLUX",
    "DIC_zint_100m",
    "DIC_ALT_CO2_zint_100m",
    "ALK_zint_100m",
    "STF_ALK",
    "ALK_ALT_CO2_zint_100m",
    "STF_ALK_ALT_CO2",
    "tend_zint_100m_DIC",
    "tend_zint_100m_DIC_ALT_CO2",
    "tend_zint_100m_ALK",
    "tend_zint_100m_ALK_ALT_CO2",
)
DATA_VARS: tuple[str, ...] = DATA_VARS_3D + DATA_VARS_2D
# Each `_ALT_CO2` twin -> its base field; they differ only inside the alkalinity plume.
TWINS: dict[str, str] = {
    "CO3_ALT_CO2": "CO3",
    "pH_3D_ALT_CO2": "pH_3D",
    "DIC_ALT_CO2": "DIC",
    "ALK_ALT_CO2": "ALK",
    "CO2STAR_ALT_CO2": "CO2STAR",
    "DCO2STAR_ALT_CO2": "DCO2STAR",
    "pCO2SURF_ALT_CO2": "pCO2SURF",
    "DpCO2_ALT_CO2": "DpCO2",
    "FG_ALT_CO2": "FG_CO2",
    "PH_ALT_CO2": "PH",
    "DIC_ALT_CO2_zint_100m": "DIC_zint_100m",
    "ALK_ALT_CO2_zint_100m": "ALK_zint_100m",
    "STF_ALK_ALT_CO2": "STF_ALK",
    "tend_zint_100m_DIC_ALT_CO2": "tend_zint_100m_DIC",
    "tend_zint_100m_ALK_ALT_CO2": "tend_zint_100m_ALK",
}
GRID_FIELDS: tuple[str, ...] = (
    "ULONG",
    "ULAT",
    "TLONG",
    "TLAT",
    "UAREA",
    "TAREA",
    "HU",
    "HT",
    "DXU",
    "DYU",
    "DXT",
    "DYT",
    "HTN",
    "HTE",
    "HUS",
    "HUW",
    "ANGLE",
    "ANGLET",
)
GRID_INT_FIELDS: tuple[str, ...] = ("KMT", "KMU", "REGION_MASK")
VERTICAL_COORDS: tuple[str, ...] = ("z_t", "z_t_150m", "z_w", "z_w_top", "z_w_bot", "dz", "dzw")
DIM_COORDS: tuple[str, ...] = ("polygon_id", "injection_date", "elapsed_time")
TIME_VARS: tuple[str, ...] = ("time", "time_bound")

# name -> (value, units, long_name); POP2's cgs constants (rho_sw completes the 31).
_SCALARS: dict[str, tuple[float, str, str]] = {
    "T0_Kelvin": (273.15, "K", "Zero Point for Celsius"),
    "cp_air": (1005.0, "J/kg/K", "Heat Capacity of Air"),
    "cp_sw": (39960000.0, "erg/g/K", "Specific Heat of Sea Water"),
    "days_in_norm_year": (365.0, "days", "Calendar Length"),
    "fwflux_factor": (0.0001, "(m/s)/(kg/m^2/s)", "Convert Net Fresh Water Flux to Salt Flux"),
    "grav": (980.616, "cm/s^2", "Acceleration Due to Gravity"),
    "heat_to_PW": (4.186e-15, "PW/(cal/s)", "Convert Heat Flux to Petawatts"),
    "hflux_factor": (2.44200244200244e-05, "(degC*cm/s)/(W/m^2)", "Convert Heat Flux to T Flux"),
    "latent_heat_fusion": (3337000000.0, "erg/g", "Latent Heat of Fusion"),
    "latent_heat_fusion_mks": (333700.0, "J/kg", "Latent Heat of Fusion"),
    "latent_heat_vapor": (2501000.0, "J/kg", "Latent Heat of Vaporization"),
    "mass_to_Sv": (1e-12, "Sv/(g/s)", "Convert Mass Flux to Sverdrups"),
    "momentum_factor": (10.0, "dyne/cm^2/(N/m^2)", "Convert Windstress to Velocity Flux"),
    "nsurface_t": (0.0, "1", "Number of Ocean T Points at Surface"),  # set from the mask
    "nsurface_u": (0.0, "1", "Number of Ocean U Points at Surface"),  # set from the mask
    "ocn_ref_salinity": (34.7, "g/kg", "Ocean Reference Salinity"),
    "omega": (7.29212351699037e-05, "1/second", "Earths Angular Velocity"),
    "ppt_to_salt": (0.001, "1", "Convert Salt in g/kg to gram/gram"),
    "radius": (637122000.0, "cm", "Earths Radius"),
    "rho_air": (1.2922474, "kg/m^3", "Ambient Air Density"),
    "rho_fw": (1.0, "gram/cm^3", "Density of Fresh Water"),
    "rho_sw": (1.026, "gram/cm^3", "Density of Sea Water"),
    "salinity_factor": (-0.00347222222222222, "(msu*cm/s)/(kg/m^2/s)", "Salt Flux Factor"),
    "salt_to_Svppt": (1e-09, "(Sv*g/kg)/(g/s)", "Convert Salt Flux to Sverdrups*g/kg"),
    "salt_to_mmday": (315360000.0, "mm/day", "Convert Salt to Water (mm/day)"),
    "salt_to_ppt": (1000.0, "g/kg", "Convert Salt in gram/gram to g/kg"),
    "sea_ice_salinity": (4.0, "g/kg", "Salinity of Sea Ice"),
    "sflux_factor": (
        0.1,
        "(msu*cm/s)/(kg/m^2/s)",
        "Convert Salt Flux to Salt Flux (in model units)",
    ),
    "sound": (150000.0, "cm/s", "Speed of Sound"),
    "stefan_boltzmann": (5.67e-08, "W/m^2/K^4", "Stefan-Boltzmann Constant"),
    "vonkar": (0.4, "1", "von Karman Constant"),
}
SCALAR_CONSTANTS: tuple[str, ...] = tuple(_SCALARS)

_DEFLATE: dict[str, Any] = {"zlib": True, "complevel": 4, "shuffle": True}
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_DAYS_BEFORE_MONTH = np.concatenate([[0], np.cumsum(_DAYS_IN_MONTH)[:-1]])
_TOTAL_DEPTH_CM = 537500.0  # POP's 60-level grid reaches 5375 m
_PARALLEL_MIN_CELLS = 2_000_000  # grid cells x files below which one process is faster


@dataclass(frozen=True)
class _Field:
    """How one base field is synthesised: value = deep + (top - deep + horizontal) * w(z) + noise.

    `lat` weights a large-scale latitude pattern (+1 high in the tropics), `rand` a smooth random
    pattern; `season` is the seasonal amplitude (opposite in the two hemispheres); `plume` the
    change per mmol/m^3 of added alkalinity inside the plume (0: no plume).
    """

    long_name: str
    units: str
    top: float
    deep: float
    lat: float
    rand: float
    season: float
    noise: float
    plume: float = 0.0
    zscale_m: float = 500.0


_FIELDS: dict[str, _Field] = {
    "CO3": _Field("Carbonate Ion Concentration", "mmol/m^3", 200, 85, 50, 8, 6, 0.4, 0.8),
    "pH_3D": _Field("pH", "1", 8.08, 7.88, -0.03, 0.02, 0.01, 0.002, 0.002),
    "co3_sat_calc": _Field(
        "CO3 concentration at calcite saturation", "mmol/m^3", 42, 95, 2, 1, 0.5, 0.1, 0, 2500
    ),
    "co3_sat_arag": _Field(
        "CO3 concentration at aragonite saturation", "mmol/m^3", 65, 145, 3, 1.5, 0.7, 0.1, 0, 2500
    ),
    "DIC": _Field("Dissolved Inorganic Carbon", "mmol/m^3", 2000, 2250, -70, 20, 8, 1.5, 0.85),
    "ALK": _Field("Alkalinity", "meq/m^3", 2300, 2390, 40, 15, 4, 1.5, 1.0),
    "CO2STAR": _Field("CO2 Star", "mmol/m^3", 12, 12, -4, 1, 1, 0.05, -0.02),
    "DCO2STAR": _Field("D CO2 Star", "mmol/m^3", 0.3, 0.3, 0.5, 0.8, 0.3, 0.02, -0.02),
    "pCO2SURF": _Field("surface pCO2", "ppmv", 385, 385, 20, 10, 12, 0.5, -0.6),
    "DpCO2": _Field("D pCO2", "ppmv", 5, 5, 20, 10, 12, 0.5, -0.6),
    "FG_CO2": _Field("DIC Surface Gas Flux", "mmol/m^3 cm/s", 0, 0, -3e-3, 1e-3, 1e-3, 5e-5, 4e-5),
    "PH": _Field("Surface pH", "1", 8.08, 8.08, -0.03, 0.02, 0.01, 0.002, 0.002),
    "ATM_CO2": _Field("Atmospheric CO2", "ppmv", 380, 380, -1.5, 0.5, 3, 0.05),
    "ALK_FLUX": _Field("Alkalinity Flux", "meq/m^3 cm/s", 0, 0, 0, 0, 0, 0),
    "DIC_zint_100m": _Field(
        "Dissolved Inorganic Carbon 0-100m Vertical Integral",
        "mmol/m^3 cm",
        2.0e7,
        2.0e7,
        -7e5,
        2e5,
        8e4,
        1.5e4,
        8.5e3,
    ),
    "ALK_zint_100m": _Field(
        "Alkalinity 0-100m Vertical Integral",
        "meq/m^3 cm",
        2.3e7,
        2.3e7,
        4e5,
        1.5e5,
        4e4,
        1.5e4,
        1e4,
    ),
    "STF_ALK": _Field(
        "Alkalinity Surface Flux", "meq/m^3 cm/s", 0, 0, 2e-4, 1e-4, 5e-5, 5e-6, 2e-5
    ),
    "tend_zint_100m_DIC": _Field(
        "DIC Tendency Vertical Integral, 0-100m",
        "mmol/m^3 cm/s",
        0,
        0,
        1e-2,
        5e-3,
        5e-3,
        2e-4,
        2e-4,
    ),
    "tend_zint_100m_ALK": _Field(
        "ALK Tendency Vertical Integral, 0-100m",
        "meq/m^3 cm/s",
        0,
        0,
        5e-3,
        3e-3,
        2e-3,
        1e-4,
        -1e-4,
    ),
}


@dataclass(frozen=True)
class _Grid:
    """Everything shared by all files of an archive: coordinates, masks, horizontal patterns."""

    levels: int
    shape2d: tuple[int, int]
    coords: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]]
    ocean2d: np.ndarray  # bool (nlat, nlon)
    land3d: np.ndarray  # bool (levels, nlat, nlon): land or below the sea floor
    lat_pattern: np.ndarray  # float32 (nlat, nlon), +1 at the equator, -1 at the poles
    hemisphere: np.ndarray  # float32 (nlat, nlon), +1 north, -1 south
    w_profiles: dict[float, np.ndarray]  # depth scale (m) -> float32 (levels,) 1 at the surface


def sample_path(polygon: int, injection_month: str, index: int) -> str:
    """The relative path of month `index` (0-based) of one polygon's injection-month series."""
    year, month = _calendar_month(injection_month, index)
    return (
        f"{polygon:03d}/{injection_month}/alk-forcing.{polygon:03d}-1999-{injection_month}"
        f".pop.h.{year:04d}-{month:02d}.nc"
    )


def elapsed_days(index: int) -> int:
    """Elapsed time of month `index`: the same for every injection month (a cube dimension)."""
    return round(index * 365 / 12 + 15)


def write_sample_archive(
    root: str | Path,
    *,
    polygons: int = 2,
    dates: int = 4,
    months: int = 12,
    grid: tuple[int, int] = (48, 40),
    levels: int = 60,
    seed: int = 0,
    progress: bool = False,
    workers: int | None = None,
) -> list[Path]:
    """Write an archive with the real OAE atlas layout; returns the files written (sorted).

    Files that already exist with the same parameters (seed, grid, levels) are kept as they are
    and are part of the returned list; any other file at a planned path is replaced. `workers`
    processes write in parallel (default: one per CPU for archives big enough to gain from
    it): zlib is the bottleneck.
    """
    nlat, nlon = grid
    if polygons < 1 or months < 1 or not 1 <= dates <= len(INJECTION_MONTHS):
        raise ValueError(
            f"need polygons >= 1, months >= 1 and 1 <= dates <= {len(INJECTION_MONTHS)} "
            f"(got polygons={polygons}, dates={dates}, months={months})"
        )
    if nlat < 4 or nlon < 4 or levels < 1:
        raise ValueError(f"need a grid of at least 4x4 and levels >= 1 (got {grid}, {levels})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")
    root = Path(root)
    stamp = json.dumps(
        {"generator": GENERATOR_VERSION, "seed": seed, "grid": [nlat, nlon], "levels": levels},
        sort_keys=True,
    )
    jobs = [
        _Job(root, nlat, nlon, levels, seed, polygon, inj, k, stamp)
        for polygon in range(polygons)
        for inj in INJECTION_MONTHS[:dates]
        for k in range(months)
    ]
    for job in jobs:  # left by a killed run (an interrupted one removes its own)
        _tmp_path(job.path).unlink(missing_ok=True)
    todo = [j for j in jobs if not _is_current(j.path, stamp)]
    if workers is None:  # a pool only pays off once zlib has real work to do
        big = len(todo) * levels * nlat * nlon >= _PARALLEL_MIN_CELLS
        workers = (os.cpu_count() or 1) if big else 1
    n_workers = min(workers, len(todo))
    with tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        desc="sample",
        unit="file",
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        if n_workers <= 1:
            for job in todo:
                _write_job(job)
                bar.update()
        else:
            # forkserver: no fork() of a process that may run threads (tqdm's monitor, BLAS).
            ctx = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
                futures = [pool.submit(_write_job, job) for job in todo]
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return sorted(j.path for j in jobs)


@dataclass(frozen=True)
class _Job:
    """One file to write (picklable, so it can go to a worker process)."""

    root: Path
    nlat: int
    nlon: int
    levels: int
    seed: int
    polygon: int
    injection_month: str
    index: int
    stamp: str

    @property
    def path(self) -> Path:
        return self.root / sample_path(self.polygon, self.injection_month, self.index)


@functools.lru_cache(maxsize=2)
def _grid_for(nlat: int, nlon: int, levels: int, seed: int) -> _Grid:
    return _make_grid(nlat, nlon, levels, seed)


@functools.lru_cache(maxsize=4)
def _series_for(grid: tuple[int, int, int, int], polygon: int, injection_month: str) -> _Series:
    """The smooth fields are computed once per series (per process), not once per month."""
    nlat, nlon, levels, seed = grid
    return _Series(_grid_for(nlat, nlon, levels, seed), seed, polygon, injection_month)


def _write_job(job: _Job) -> None:
    grid = (job.nlat, job.nlon, job.levels, job.seed)
    series = _series_for(grid, job.polygon, job.injection_month)
    _write_atomically(job.path, series, job.index, job.stamp)


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _is_current(path: Path, stamp: str) -> bool:
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


def _write_atomically(path: Path, series: _Series, index: int, stamp: str) -> None:
    """Write next to the target and rename, so an interrupted run never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        series.write(tmp, index, stamp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _calendar_month(injection_month: str, index: int) -> tuple[int, int]:
    m0 = int(injection_month) - 1 + index
    return START_YEAR + m0 // 12, m0 % 12 + 1


# --- the grid -------------------------------------------------------------------------------------


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


def _make_grid(nlat: int, nlon: int, levels: int, seed: int) -> _Grid:
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

    two_d("ULONG", ulon, "array of u-grid longitudes", "degrees_east", u_coords)
    two_d("ULAT", ulat, "array of u-grid latitudes", "degrees_north", u_coords)
    two_d("TLONG", tlon, "array of t-grid longitudes", "degrees_east", t_coords)
    two_d("TLAT", tlat, "array of t-grid latitudes", "degrees_north", t_coords)
    two_d("UAREA", dxu * dy, "area of U cells", "centimeter^2", u_coords)
    two_d("TAREA", dxt * dy, "area of T cells", "centimeter^2", t_coords)
    two_d("HU", hu, "ocean depth at U points", "centimeter", u_coords)
    two_d("HT", ht, "ocean depth at T points", "centimeter", t_coords)
    two_d("DXU", dxu, "x-spacing centered at U points", "centimeters", u_coords)
    two_d("DYU", dy, "y-spacing centered at U points", "centimeters", u_coords)
    two_d("DXT", dxt, "x-spacing centered at T points", "centimeters", t_coords)
    two_d("DYT", dy, "y-spacing centered at T points", "centimeters", t_coords)
    two_d("HTN", dxu, "cell widths on North sides of T cell", "centimeters", t_coords)
    two_d("HTE", dy, "cell widths on East sides of T cell", "centimeters", t_coords)
    two_d("HUS", dxt, "cell widths on South sides of U cell", "centimeters", u_coords)
    two_d("HUW", dy, "cell widths on West sides of U cell", "centimeters", u_coords)
    two_d("ANGLE", angle, "angle grid makes with latitude line", "radians", u_coords)
    two_d("ANGLET", anglet, "angle grid makes with latitude line on T grid", "radians", t_coords)
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
    return _Grid(
        levels=levels,
        shape2d=(nlat, nlon),
        coords=coords,
        ocean2d=ocean,
        land3d=land3d,
        lat_pattern=np.cos(2 * lat_rad).astype(np.float32),
        hemisphere=np.sign(tlat).astype(np.float32),
        w_profiles=w,
    )


# --- one polygon / injection series ---------------------------------------------------------


class _Series:
    """The smooth fields of one polygon and injection month, computed once for all its months."""

    def __init__(self, g: _Grid, seed: int, polygon: int, injection_month: str) -> None:
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

    def write(self, path: Path, index: int, stamp: str) -> None:
        g = self.g
        year, month = _calendar_month(self.inj, index)
        rng = np.random.default_rng([self.seed, self.polygon, int(self.inj), index])
        season = np.float32(np.sin(2 * np.pi * (month - 1) / 12)) * g.hemisphere
        shape, amplitude = self.plume(index)
        mixing = g.w_profiles[60.0] ** (1.0 / (1.0 + index / 3))  # the plume deepens with time
        plume3d = shape[None, :, :] * mixing[:, None, None]
        plume3d[g.land3d] = 0.0

        # No chunk cache: with one, netCDF-C keeps every whole-variable chunk in memory until
        # close (~300 MB at full grid). The setting is process-wide, so it is restored after.
        cache = netCDF4.get_chunk_cache()
        netCDF4.set_chunk_cache(0, 1, 1.0)
        ds = netCDF4.Dataset(path, "w", format="NETCDF4")
        try:
            _define(ds, g, series=self, index=index, year=year, month=month, stamp=stamp)
            for name in DATA_VARS:
                if name in TWINS.values():
                    continue  # written together with its twin
                values = self._field(name, rng, season, index, shape)
                ds.variables[name][...] = values[None, None, None]
                if name in TWINS:  # that was the twin (no plume): add the plume for the base
                    base = TWINS[name]
                    coef = np.float32(_FIELDS[base].plume * amplitude)
                    values += coef * (plume3d if values.ndim == 3 else shape)
                    ds.variables[base][...] = values[None, None, None]
        finally:
            ds.close()
            netCDF4.set_chunk_cache(*cache)

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


def _define(
    ds: netCDF4.Dataset,
    g: _Grid,
    *,
    series: _Series,
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
