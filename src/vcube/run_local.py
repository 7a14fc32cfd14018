"""How does the whole build run on one machine? A process pool and progress bars.

Scans run in worker processes (h5py holds a global lock, so threads would not parallelise
parsing); commits run in this process, one group at a time, because Icechunk's local
filesystem storage is not safe for concurrent commits. Everything is resumable: steps skip
what the work area and the repo's history say is already done.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from tqdm import tqdm

from vcube import status, steps, template, workarea
from vcube.places import Places
from vcube.repo import history
from vcube.spec import DatasetSpec


def _scan_in_worker(spec_json: str, shard: str) -> dict[str, Any]:
    spec = DatasetSpec.model_validate_json(spec_json)
    return steps.scan_step(spec, shard)


def run_local(
    spec: DatasetSpec | Places,
    *,
    workers: int = 2,
    groups: list[str] | None = None,
    allow_missing: bool = False,
    samples: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    places = Places.of(spec)  # one for the run: every in-process step shares its Repository
    spec = places.spec
    say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    plan_summary = steps.plan_step(places, allow_missing=allow_missing)
    say(
        f"plan: {plan_summary['files']} files, {plan_summary['shards']} shards, "
        f"{plan_summary['groups']} groups"
        + (
            f", {plan_summary['unexpected']} unexpected keys (ignored)"
            if plan_summary["unexpected"]
            else ""
        )
        + (
            f", {plan_summary['missing']} missing files (left empty)"
            if plan_summary["missing"]
            else ""
        )
    )
    plan = workarea.load_plan(places.work, spec)
    steps.check_groups(plan, groups)
    init_summary = steps.init_step(places)
    say(
        "init: "
        + ("created/grew the cube" if init_summary["changed"] else "cube already initialized")
    )
    hist = history(places.repo(), spec.target.branch)
    work = status.needs_work(plan, hist, template.load_template(places.work))
    todo = [g for g in plan.groups if (not groups or g in groups) and work[g]]
    selected = [g for g in plan.groups if not groups or g in groups]
    if not todo:
        say(f"nothing to do: all {len(selected)} selected groups are already committed")
    shards = [s for g in todo for s in plan.groups[g]]
    files_todo = sum(plan.shards[s]["files"] for s in shards)
    left = {g: set(plan.groups[g]) for g in todo}
    commits: list[dict[str, Any]] = []
    scans: list[dict[str, Any]] = []
    ctx = multiprocessing.get_context("spawn")
    spec_json = spec.model_dump_json()
    scan_bar = tqdm(
        total=files_todo,
        desc="scan  ",
        unit="file",
        disable=not progress or not shards,
        file=sys.stderr,
    )
    commit_bar = tqdm(
        total=len(todo),
        desc="commit",
        unit="group",
        disable=not progress or not todo,
        file=sys.stderr,
    )
    # One worker: scan in this process (no start-up cost of a pool of fresh interpreters).
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=ctx) if shards and workers > 1 else None
    )

    def scanned(shard: str, result: dict[str, Any]) -> None:
        scans.append(result)
        scan_bar.update(plan.shards[shard]["files"])
        g = plan.group_of_shard(shard)
        left[g].discard(shard)
        if not left[g]:
            commits.append(steps.commit_step(places, g))
            commit_bar.update(1)

    try:
        if pool is None:
            for shard in shards:
                scanned(shard, steps.scan_step(places, shard))
        pending = {pool.submit(_scan_in_worker, spec_json, s): s for s in shards} if pool else {}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                # a failed scan stops the run with its own message
                scanned(pending.pop(fut), fut.result())
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        scan_bar.close()
        commit_bar.close()
    if pool is not None:
        pool.shutdown()
    # init scanned the layout shards (their scan steps then found them done): count them there.
    by_shard = {s["shard"]: s for s in init_summary["scans"]}
    for s in scans:
        by_shard.setdefault(s["shard"], s)
    validation = steps.validate_step(places, samples=samples, groups=groups)
    say(
        f"validate: ok ({validation['files_compared']} files compared value by value, "
        f"{validation['files_checked_for_chunks']} checked for chunks)"
    )
    return {
        "step": "run",
        "files": plan.n_files,
        "groups": len(plan.groups),
        "scanned_files": sum(s["files_scanned"] for s in by_shard.values()),
        "reused_files": sum(s["files_reused"] for s in by_shard.values()),
        "refs": sum(c.get("refs", 0) for c in commits),
        "commits": sum(1 for c in commits if c.get("changed")) + int(init_summary["changed"]),
        "up_to_date": not todo and not init_summary["changed"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
