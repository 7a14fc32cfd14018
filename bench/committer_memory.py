"""The committer's memory over a whole atlas (issue 10): does one `vcube commit-all` process
fit its pod (3 Gi limit) after 690 group commits, and again through a new month?

    python -m bench.committer_memory [--groups 690] [--files 720] [--chunk-refs N]
                                     [--new-month] [--base DIR] [--out bench/results]

On local disk (memory, not S3 round trips: `bench.fanin` counts those). Plans a synthetic
listing with the atlas's layout and writes every shard's result (as `bench.profile_commit`
does; kept in `--base` and reused), then commits every group in one process on a fresh
repository, as `vcube commit-all` does on a full build: resident memory (VmRSS) and CPU after
each commit. With `--new-month`, the same process then commits every group again with changed
inputs (what one new month does to each group). `--chunk-refs N` and `--snapshot-nodes N` size
Icechunk's caches instead of vcube's bounds (`repo.CACHED_*`; Icechunk's defaults: 15000000 and
500000), to compare.
Writes `committer_memory[-LABEL].json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import common
from bench.commit_scale import prepare_work_area, write_shard_results
from bench.profile_commit import tip_spec
from vcube import commit, repo, template, workarea
from vcube.places import Places


def prepare(base: Path, *, groups: int, files: int) -> None:
    """Plan, template and every shard's result, once (no repository)."""
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    arch = common.ensure_archive("fanin-archive", polygons=1, dates=4, months=2, grid=(48, 40))
    sp = common.atlas_spec(str(arch.root), str(base / "repo"), work=str(base / "work"))
    (base / "spec.yaml").write_text(yaml.safe_dump(sp.model_dump(mode="json"), sort_keys=False))
    work = prepare_work_area(sp, polygons=groups, months=files // 4, shard_lists=False)
    write_shard_results(sp, work.tmpl, work.plan, work.shard_files, work.real)
    (base / "ready").touch()


def commit_all(places: Places, plan: Any, tmpl: Any, phase: str) -> list[dict[str, Any]]:
    rows = []
    groups = list(plan.groups)
    for i, g in enumerate(groups):
        c0, t0 = time.process_time(), time.perf_counter()
        out = commit.commit_group(places, plan, tmpl, g)
        if not out["changed"]:
            raise RuntimeError(f"{phase}: group {g} was not committed")
        rows.append(
            {
                "group": g,
                "cpu_s": time.process_time() - c0,
                "wall_s": time.perf_counter() - t0,
                "rss_mb": common.rss_mb(),
            }
        )
        if i % 50 == 0 or i == len(groups) - 1:
            common.log(
                f"committer_memory: {phase} {i + 1}/{len(groups)}: {rows[-1]['rss_mb']:.0f} MB, "
                f"{rows[-1]['cpu_s']:.2f} s CPU"
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=690)
    ap.add_argument("--files", type=int, default=720, help="files per group (a multiple of 4)")
    ap.add_argument("--chunk-refs", type=int, help="Icechunk's chunk-ref cache, in refs")
    ap.add_argument("--snapshot-nodes", type=int, help="Icechunk's snapshot cache, in nodes")
    ap.add_argument("--new-month", action="store_true", help="then commit every group again")
    ap.add_argument("--label", default="", help="suffix of the result file")
    ap.add_argument("--base", type=Path, default=common.CACHE / "committer-memory")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    os.environ.setdefault("ICECHUNK_LOG", "error")
    if not (args.base / "ready").exists():
        common.log(f"committer_memory: planning and writing shard results in {args.base} (once)")
        prepare(args.base, groups=args.groups, files=args.files)
    if args.chunk_refs is not None:
        repo.CACHED_CHUNK_REFS = args.chunk_refs
    if args.snapshot_nodes is not None:
        repo.CACHED_SNAPSHOT_NODES = args.snapshot_nodes
    target = args.base / f"repo{('-' + args.label) if args.label else ''}"
    shutil.rmtree(target, ignore_errors=True)
    sp = tip_spec(args.base, target)
    places = Places.of(sp)
    plan, tmpl = workarea.load_plan(places.work, sp), template.load_template(places.work)
    first = next(pf for fs in common.plan_files(sp).values() for pf in fs)  # the template's
    rss0 = common.rss_mb()
    commit.init_cube(places, plan, tmpl, first)
    caching = str(places.repo().config.caching)
    full = commit_all(places, plan, tmpl, "full build")
    month: list[dict[str, Any]] = []
    if args.new_month:
        common.commit_again_whole("-new-month")  # each group written whole: the most memory
        month = commit_all(places, plan, tmpl, "new month")
    shutil.rmtree(target, ignore_errors=True)
    given = [a if not a.startswith("/") else "DIR" for a in (argv or sys.argv[1:])]
    res = {
        "command": " ".join(["python -m bench.committer_memory", *given]),
        "code": common.code_version(),
        "caching": caching,
        "rss_mb_before_init": rss0,
        "full_build": full,
        "new_month": month,
        "peak_rss_mb": max(r["rss_mb"] for r in full + month),
    }
    name = f"committer_memory{('-' + args.label) if args.label else ''}.json"
    common.dump(args.out / name, res)
    common.log(f"committer_memory: peak {res['peak_rss_mb']:.0f} MB; wrote {args.out / name}")
    print(json.dumps({"peak_rss_mb": res["peak_rss_mb"]}))


if __name__ == "__main__":
    main()
