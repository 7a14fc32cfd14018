"""The pipeline steps exactly as a pod runs them: plan, init, scan, commit, validate, status.

Each step reads what it needs from the work area and the repo, so the local executor and the
Argo pods call the very same functions (never two code paths for the same step). Each returns
a JSON-serializable summary.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from typing import Any

from vcube import catalog, cube, scan, status, storage, template
from vcube.catalog import Plan
from vcube.spec import DatasetSpec

Progress = Callable[[int, int], None]


def plan_step(spec: DatasetSpec, *, allow_missing: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    plan = catalog.make_plan(spec, allow_missing=allow_missing)
    todo = groups_listing(spec, plan)
    return {
        "step": "plan",
        "files": plan.n_files,
        "shards": len(plan.shards),
        "groups": len(plan.groups),
        "todo": len(todo),  # groups not committed with their current inputs
        "dims": {d["name"]: d["length"] for d in plan.dims},
        "missing": len(plan.missing),
        "unexpected": len(plan.unexpected),
        "unexpected_examples": plan.unexpected[:5],
        "digest": plan.digest,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def groups_listing(
    spec: DatasetSpec, plan: Plan, only: list[str] | None = None
) -> list[dict[str, Any]]:
    """What Argo fans out over: the groups that need work (not committed with their current
    inputs), as group and shard ids only. Nothing to do: an empty list."""
    check_groups(plan, only)
    todo = status.needs_work(plan, status.read_history(spec), status.current_template(spec, plan))
    return [
        {"group": g, "shards": s}
        for g, s in plan.groups.items()
        if todo[g] and (not only or g in only)
    ]


def check_groups(plan: Plan, groups: list[str] | None) -> None:
    unknown = [g for g in groups or [] if g not in plan.groups]
    if unknown:
        raise catalog.PlanError(f"groups {unknown} are not in the plan")


def template_file(spec: DatasetSpec, plan: Plan) -> catalog.PlannedFile:
    """The template: `cube.template` if set, else the first file of the cube."""
    if spec.cube.template:
        for sid in plan.shards:
            for pf in catalog.load_shard_files(spec, sid):
                if pf.key == spec.cube.template:
                    return pf
        raise template.TemplateError(f"cube.template {spec.cube.template!r} is not a planned file")
    first = next(iter(plan.shards))
    return catalog.load_shard_files(spec, first)[0]


def init_step(spec: DatasetSpec) -> dict[str, Any]:
    plan = catalog.load_plan(spec)
    pf = template_file(spec, plan)
    try:
        tmpl = template.load_template(spec)
        if tmpl.source_key != pf.key or tmpl.spec_digest != spec.digest():
            raise template.TemplateError("the template file or the spec changed")
    except template.TemplateError:
        tmpl = template.derive_template(spec, pf.key)
        template.save_template(spec, tmpl)
    summary = cube.init_cube(spec, plan, tmpl, pf)
    summary["template"] = pf.key
    return summary


def scan_step(spec: DatasetSpec, shard: str, *, on_file: Progress | None = None) -> dict[str, Any]:
    """Scan one shard; a shard already scanned with the same inputs is not scanned again."""
    t0 = time.perf_counter()
    plan = catalog.load_plan(spec)
    if shard not in plan.shards:
        raise catalog.PlanError(f"shard {shard!r} is not in the plan")
    tmpl = template.load_template(spec)
    work = catalog.work_location(spec)
    digest = scan.result_digest(plan.shards[shard]["digest"], tmpl)
    try:
        old = scan.read_meta(storage.read_bytes(work, scan.result_key(shard)))
        if old.get("digest") == digest:
            return {
                "step": "scan",
                "shard": shard,
                "changed": False,
                "files": len(old["files"]),
                "refs": old["refs"],
                "seconds": round(time.perf_counter() - t0, 3),
            }
    except FileNotFoundError:
        pass
    files = catalog.load_shard_files(spec, shard, plan)
    try:
        data = scan.scan_shard(spec, tmpl, shard, files, digest, on_file=on_file)
    except Exception as e:
        err = {
            "shard": shard,
            "error": str(e),
            "type": type(e).__name__,
            "trace": traceback.format_exc(limit=5),
        }
        storage.write_bytes(work, scan.error_key(shard), json.dumps(err).encode())
        raise
    storage.write_bytes(work, scan.result_key(shard), data)
    if storage.exists(work, scan.error_key(shard)):  # a failure of an earlier try: it is over
        storage.delete(work, scan.error_key(shard))
    return {
        "step": "scan",
        "shard": shard,
        "changed": True,
        "files": len(files),
        "refs": scan.read_meta(data)["refs"],
        "bytes": len(data),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def commit_step(
    spec: DatasetSpec, group: str, *, on_file: Progress | None = None
) -> dict[str, Any]:
    plan = catalog.load_plan(spec)
    tmpl = template.load_template(spec)
    return cube.commit_group(spec, plan, tmpl, group, on_file=on_file)


def validate_step(
    spec: DatasetSpec, *, samples: int = 3, groups: list[str] | None = None
) -> dict[str, Any]:
    from vcube import validate  # xarray: only the steps that read values pay for importing it

    plan = catalog.load_plan(spec)
    check_groups(plan, groups)
    tmpl = template.load_template(spec)
    return validate.validate_cube(spec, plan, tmpl, samples=samples, groups=groups)


def status_step(spec: DatasetSpec) -> dict[str, Any]:
    """What the repo has committed next to what the plan asks for, per group and shard."""
    return status.status(spec)
