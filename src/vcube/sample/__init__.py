"""What does an archive like the atlas look like? A synthetic one with its file layout, for tests.

Only the sizes shrink (nlat x nlon, level count, numbers of polygons / injection dates / months);
the variables, dims, dtypes, chunking, compression and attributes are those of the real files,
because chunk refs, codecs and inline values are exactly what vcube is about. The values look
like ocean fields (land mask, depth-dependent profiles, a growing alkalinity plume that makes
each `_ALT_CO2` twin differ from its base field) so that plots and validation are meaningful.

`tables` holds the atlas's names and numbers, `fields` computes the values, `netcdf` writes a
file; this module writes an archive (in parallel for big ones). Everything is deterministic for
a seed. Files are written atomically (`*.tmp` then rename), and
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

from tqdm import tqdm

from vcube.sample.fields import Grid, Series, make_grid
from vcube.sample.netcdf import is_current, tmp_path, write_atomically
from vcube.sample.tables import (
    DATA_VARS,
    DATA_VARS_2D,
    DATA_VARS_3D,
    DIM_COORDS,
    FILL_VALUE,
    GENERATOR_VERSION,
    GRID_FIELDS,
    GRID_INT_FIELDS,
    INJECTION_MONTHS,
    PARALLEL_MIN_CELLS,
    SAMPLE_ATTR,
    SCALAR_CONSTANTS,
    START_YEAR,
    TIME_VARS,
    TWINS,
    VERTICAL_COORDS,
    Z_T_150M_LEVELS,
    elapsed_days,
    sample_path,
)

__all__ = [
    "DATA_VARS",
    "DATA_VARS_2D",
    "DATA_VARS_3D",
    "DIM_COORDS",
    "FILL_VALUE",
    "GRID_FIELDS",
    "GRID_INT_FIELDS",
    "INJECTION_MONTHS",
    "SAMPLE_ATTR",
    "SCALAR_CONSTANTS",
    "START_YEAR",
    "TIME_VARS",
    "TWINS",
    "VERTICAL_COORDS",
    "Z_T_150M_LEVELS",
    "Series",
    "elapsed_days",
    "sample_path",
    "write_sample_archive",
]


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
        tmp_path(job.path).unlink(missing_ok=True)
    todo = [j for j in jobs if not is_current(j.path, stamp)]
    if workers is None:  # a pool only pays off once zlib has real work to do
        big = len(todo) * levels * nlat * nlon >= PARALLEL_MIN_CELLS
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
def _grid_for(nlat: int, nlon: int, levels: int, seed: int) -> Grid:
    return make_grid(nlat, nlon, levels, seed)


@functools.lru_cache(maxsize=4)
def _series_for(grid: tuple[int, int, int, int], polygon: int, injection_month: str) -> Series:
    """The smooth fields are computed once per series (per process), not once per month."""
    nlat, nlon, levels, seed = grid
    return Series(_grid_for(nlat, nlon, levels, seed), seed, polygon, injection_month)


def _write_job(job: _Job) -> None:
    grid = (job.nlat, job.nlon, job.levels, job.seed)
    series = _series_for(grid, job.polygon, job.injection_month)
    write_atomically(job.path, series, job.index, job.stamp)
