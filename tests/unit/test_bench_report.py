"""The benchmark's pure parts: round-trip counting and the report writer (no timing involved)."""

from __future__ import annotations

from pathlib import Path

from bench import report
from bench.scan_s3 import round_trips
from tests.support.faultproxy import RequestRecord


def _rec(start: float, end: float) -> RequestRecord:
    return RequestRecord("GET", "/b/k", (0, 1), 206, 2, None, start, end)


def test_round_trips_counts_the_critical_path() -> None:
    # two sequential requests, then three overlapping ones, then one more after them
    recs = [_rec(0, 1), _rec(1, 2), _rec(2, 3), _rec(2.1, 3.5), _rec(2.2, 3.2), _rec(3.5, 4)]
    assert round_trips(recs) == 4
    assert round_trips([]) == 0


def _results() -> dict:
    cpu = {"vcube": 0.04, "virtualizarr": 1.2, "kerchunk": 0.9, "h5py_floor": 0.03}
    s3_row = {
        "requests_per_file": 9.0,
        "mb_per_file": 1.5,
        "round_trips_per_file": 3.0,
        "wall_per_file_s": 0.05,
        "files_per_s": 20.0,
        "server_ms_per_request": 5.0,
    }
    return {
        "mode": "quick",
        "started_utc": "2026-01-01T00:00:00Z",
        "total_seconds": 60,
        "machine": {"cpus": 2, "python": "3.12", "load_avg_1m_at_start": 1.0},
        "scan_local": {
            "files": 2,
            "reps": 1,
            "mean_file_mb": 114.0,
            "virtual_vars": 34,
            "loadable_variables": 43,
            "median_s": {"cpu": cpu, "wall": {k: 2 * v for k, v in cpu.items()}},
            "vcube_scan_shard_per_file_s": 0.05,
        },
        "scan_s3": {
            "files": 2,
            "latency_s": 0.02,
            "depth": 8,
            "prefetched_round_trips_per_file_isolated": 1.0,
            **dict.fromkeys(
                (
                    "vcube_scan_shard",
                    "vcube_prefetched_1proc",
                    "vcube_prefetched_2proc",
                    "virtualizarr",
                ),
                s3_row,
            ),
        },
        "commit_scale": {
            "groups": 3,
            "files_per_group": 72,
            "files": 216,
            "virtual_vars": 34,
            "commit_s": [0.1, 0.2, 0.15],
            "first20_median_s": 0.15,
            "last20_median_s": 0.15,
            "last_over_first": 1.0,
            "total_commit_s": 1.0,
            "cli_commit_s": 3.0,
            "cli_commit_peak_rss_mb": 300.0,
            "repo_bytes": 10_000_000,
            "plan_s": 1.0,
            "init_s": 2.0,
            "real_files_cycled": 4,
            "read": {
                "sizes": {"polygon_id": 3},
                "data_vars": 34,
                "open_repo_and_xr_open_zarr_s": 0.5,
                "xr_open_zarr_s": 0.4,
                "xr_open_zarr_no_dask_s": 0.3,
                "chunk_var": "DIC",
                "chunk_shape": [1, 1, 1, 60, 384, 320],
                "chunk_read_s": {
                    "xarray_dask": 0.13,
                    "xarray_no_dask": 0.11,
                    "zarr": 0.1,
                    "h5py_open_and_read": 0.1,
                    "h5py_read": 0.09,
                },
                "ratio_cube_vs_h5py": {"xarray_dask": 1.3, "xarray_no_dask": 1.1, "zarr": 1.0},
                "values_equal": True,
                "reps": 3,
            },
        },
    }


def test_report_writes_table_estimate_and_plots(tmp_path: Path) -> None:
    report.write(_results(), tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "| 1 | vcube >= 10x faster than VirtualiZarr | 30.0x CPU" in text
    # model: min(2 cores / 40 ms, 2 x 8 in flight / (1 round trip x 20 ms)) = 50 files/s
    assert "| 2 | >= 50 files/s per 2-core worker at 20 ms | model 50.0 files/s" in text
    assert "| 2 | <= 4 MB read per file | 1.50 MB" in text
    # fit of [0.1, 0.2, 0.15]: a = 0.125 s, b = 25 ms; x10 for 720 files per group:
    # 10 * (690 * 0.125 + 0.025 * 690^2 / 2) s = 1006 min; in commits of 10 groups: 114 min
    assert "t(n) = 0.125 s + 25.00 ms x n" in text
    assert "| 1 | 690 | 1006 |" in text
    assert "| 10 | 69 | 114 |" in text
    assert "1.10 (`chunks=None`), 1.30 (dask, the default); zarr 1.00" in text
    assert "| met (zarr), met (xarray, no dask), **not met** (dask) |" in text
    # 2 cores / 40 ms = 50 files/s ceiling; 496,800 files on 100 pods at 50 files/s = 99.4 s
    assert "| 100 | model | 50.00 | 1.7 |" in text
    for png in ("scan_local.png", "scan_s3.png", "commit_scale.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert f"![{png}]({png})" in text
