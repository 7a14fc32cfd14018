"""Run the benchmark suite and write the results table and plots.

    python -m bench.run [--quick] [--out DIR] [--only scan_local,commit_scale,...]

`make bench` runs the full suite into bench/results/ (committed); `make bench QUICK=1` runs
fewer files and a scaled commit run (< 10 minutes) into build/bench/results-quick/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import common

SECTIONS = ("scan_local", "commit_scale", "scan_s3", "end_to_end")

# Sizes per mode. full_archive: full-grid files generated once (reused by 1, 2, 3, 5).
CONFIG: dict[str, dict[str, Any]] = {
    "full": {
        "scan_local": {"n_files": 16, "reps": 3},
        "scan_s3": {"n_files": 12, "vz_files": 3},
        # Each commit costs more as the history grows (Icechunk's flush; see the results
        # README): 690 groups take hours even at 72 files per group, so 150 groups are
        # measured and the growth is extrapolated in section 6.
        "commit_scale": {"polygons": 150, "months": 18, "real_files": 16, "read_reps": 9},
        "end_to_end": {"reps": 3, "polygons": 5},
    },
    "quick": {
        "scan_local": {"n_files": 6, "reps": 3},
        "scan_s3": {"n_files": 6, "vz_files": 2},
        "commit_scale": {"polygons": 60, "months": 18, "real_files": 8, "read_reps": 5},
        "end_to_end": {"reps": 1, "polygons": 2},
    },
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer files, scaled commit run")
    ap.add_argument("--out", type=Path, help="results directory")
    ap.add_argument("--only", default="", help="comma-separated sections (default: all)")
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out = args.out or (common.CACHE / "results-quick" if args.quick else common.RESULTS)
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    cfg = CONFIG[mode]
    t_start = time.perf_counter()
    results_path = out / "results.json"
    results: dict[str, Any] = {}
    if results_path.exists() and args.only:
        results = json.loads(results_path.read_text())  # re-running one section keeps the rest
    results["mode"] = mode
    results["machine"] = common.machine()
    results["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["code"] = common.code_version()
    full_grid = common.ensure_archive("fullgrid", polygons=2, dates=2, months=8)
    for section in only:
        t0 = time.perf_counter()
        if section == "scan_local":
            from bench import scan_local

            results[section] = scan_local.run(full_grid, **cfg[section], out=out)
        elif section == "scan_s3":
            from bench import scan_s3

            results[section] = scan_s3.run(full_grid, **cfg[section])
        elif section == "commit_scale":
            from bench import commit_scale

            results[section] = commit_scale.run(full_grid, **cfg[section])
        elif section == "end_to_end":
            from bench import end_to_end

            e2e = dict(cfg[section])
            polygons = e2e.pop("polygons")
            small = common.ensure_archive(
                "e2e-archive" if polygons == 5 else f"e2e-archive-{polygons}",
                polygons=polygons,
                dates=4,
                months=12,
                grid=(48, 40),
            )
            results[section] = end_to_end.run(small, **e2e)
        else:
            raise SystemExit(f"unknown section {section!r} (choose from {SECTIONS})")
        results[section]["section_seconds"] = time.perf_counter() - t0
        common.log(f"{section} done in {time.perf_counter() - t0:.0f} s")
        common.dump(results_path, results)
    results["total_seconds"] = time.perf_counter() - t_start
    results["machine"]["load_avg_1m_at_end"] = round(__import__("os").getloadavg()[0], 2)
    common.dump(results_path, results)
    from bench import report

    report.write(results, out)
    common.log(f"wrote {out / 'README.md'} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
