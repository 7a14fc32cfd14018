"""How many scan pods and child workflows does a refresh fan out? (issue 10: one new month)

The planner on a synthetic atlas-sized listing (690 polygons x 4 injection months x 180 months,
the sample's file names; no file is opened), in a local work area: a full build, then the same
listing grown by one month in every series after "scanning" every shard (an empty object stands
for each shard's result: the estimate only asks whether there is one). Prints the work items and
scan pods of `groups.json` (`vcube.packing`), and how long the estimates took (2,760 previous
shard lists read, 16 at a time, on local disk).

    python -m bench.pack_refresh [--polygons 690] [--months 180]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, datetime
from typing import Any

from bench import common
from bench.commit_scale import synthetic_listing
from vcube import packing, storage, workarea
from vcube.places import Places
from vcube.plan import Plan, PlannedFile, build_plan

MTIME = datetime(2026, 1, 1, tzinfo=UTC)
FILE_SIZE = 150_000_000


def _fan_out(
    work: storage.Location, plan: Plan, lists: dict[str, list[PlannedFile]]
) -> tuple[list[dict[str, Any]], float]:
    """groups.json for a plan whose every group needs work, and the seconds of its estimates."""
    shards = list(plan.shards)
    t0 = time.perf_counter()
    estimates = packing.estimate_scan_work(work, lists, shards)
    seconds = time.perf_counter() - t0
    files = {s: plan.shards[s]["files"] for s in shards}
    return packing.pack_work(plan.groups, files, estimates), seconds


def measure(polygons: int, months: int) -> dict[str, Any]:
    base = common.CACHE / "pack-refresh"
    shutil.rmtree(base, ignore_errors=True)
    spec = common.atlas_spec(str(base / "src"), str(base / "repo"), work=str(base / "work"))
    work = Places.of(spec).work
    plan, lists = build_plan(spec, synthetic_listing(polygons, months, FILE_SIZE, MTIME))
    full, full_s = _fan_out(work, plan, lists)
    workarea.write_plan(work, plan, lists)
    for sid in plan.shards:
        storage.write_bytes(work, workarea.result_key(sid), b"")
    grown, grown_lists = build_plan(spec, synthetic_listing(polygons, months + 1, FILE_SIZE, MTIME))
    refresh, refresh_s = _fan_out(work, grown, grown_lists)
    shutil.rmtree(base, ignore_errors=True)
    return {
        "polygons": polygons,
        "months": months,
        "shards": len(plan.shards),
        "full_build": {
            "files": plan.n_files,
            "work_items": len(full),
            "scan_pods": len(packing.pods_of(full)),
            "estimate_seconds": round(full_s, 2),
        },
        "one_new_month": {
            "files": grown.n_files,
            "new_files": grown.n_files - plan.n_files,
            "work_items": len(refresh),
            "scan_pods": len(packing.pods_of(refresh)),
            "shards_per_pod": max(len(p) for p in packing.pods_of(refresh)),
            "estimate_seconds": round(refresh_s, 2),
            "groups_json_bytes": len(json.dumps(refresh).encode()),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--polygons", type=int, default=690)
    p.add_argument("--months", type=int, default=180)
    args = p.parse_args()
    print(json.dumps(measure(args.polygons, args.months), indent=1))


if __name__ == "__main__":
    main()
