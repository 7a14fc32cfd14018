"""Which key holds what in the work area?

Every object name the steps write between them (plan, shard lists, layout, template, scan
results and errors, the fan-in marker) is made here, and so are the plan's and layout's reads
and writes. The template and scan results are (de)serialized by `template` and `scan`, under
the keys named here. The work area is the resolved `storage.Location` of the step's
`places.Places` (resolved once there), passed in.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from vcube import storage
from vcube.hdf import TemplateError
from vcube.plan import Layout, Plan, PlanError, PlannedFile, files_digest
from vcube.spec import DatasetSpec

PLAN_KEY = "plan.json"
LAYOUT_KEY = "layout.json"
TEMPLATE_KEY = "template.json"
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def shard_key(shard_id: str) -> str:
    return f"shards/{shard_id}.json"


def result_key(shard: str) -> str:
    return f"scans/{shard}.zip"


def shards_with_results(work: storage.Location, wanted: set[str]) -> list[str]:
    """Which of `wanted` have a result object in the work area: one listing, no reads."""
    return [
        sid
        for info in storage.list_objects(work, prefix="scans/")
        if (sid := info.key.removeprefix("scans/").removesuffix(".zip")) in wanted
    ]


def error_key(shard: str) -> str:
    return f"errors/{shard}.json"


def scans_done_key(run_id: str) -> str:
    """The marker a build writes when its scan fan-out is over (every scan node finished)."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise PlanError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    return f"fanin/{run_id}/scans-done"


def write_plan(
    work: storage.Location, plan: Plan, shard_files: dict[str, list[PlannedFile]]
) -> None:
    """Write the plan and the shard file lists to the work area."""

    def put(item: tuple[str, list[PlannedFile]]) -> None:
        payload = json.dumps([asdict(p) for p in item[1]], sort_keys=True).encode()
        storage.write_bytes(work, shard_key(item[0]), payload)

    # Thousands of small objects on S3: in parallel. plan.json goes last, so a crash before it
    # leaves the previous plan in force (and a shard list that disagrees with it is refused).
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, shard_files.items()))
    storage.write_bytes(work, PLAN_KEY, plan.to_json())


def save_layout(work: storage.Location, layout: Layout) -> None:
    storage.write_bytes(work, LAYOUT_KEY, layout.to_json())


def load_layout(work: storage.Location) -> Layout:
    try:
        return Layout.from_json(storage.read_bytes(work, LAYOUT_KEY))
    except FileNotFoundError:
        raise PlanError(f"no layout in {work.url}: run `vcube init` first") from None


def load_plan(work: storage.Location, spec: DatasetSpec) -> Plan:
    try:
        plan = Plan.from_json(storage.read_bytes(work, PLAN_KEY))
    except FileNotFoundError:
        raise PlanError(f"no plan in {spec.target.work_url}: run `vcube plan` first") from None
    if plan.spec_digest != spec.digest():
        raise PlanError("the spec changed since the plan was made: run `vcube plan` again")
    return plan


def load_shard_files(
    work: storage.Location, shard: str, plan: Plan | None = None
) -> list[PlannedFile]:
    """A shard's file list; with the plan, checked against the digest the plan recorded."""
    try:
        raw = json.loads(storage.read_bytes(work, shard_key(shard)))
    except FileNotFoundError:
        raise PlanError(f"shard {shard!r} is not in the plan: run `vcube plan` first") from None
    files = [PlannedFile(**{**r, "pos": tuple(r["pos"])}) for r in raw]
    if plan is not None and files_digest(files) != plan.shards[shard]["digest"]:
        raise PlanError(
            f"the file list of shard {shard} does not match the plan (a re-plan was interrupted "
            "or is running): run `vcube plan` again"
        )
    return files


def template_file(
    work: storage.Location,
    spec: DatasetSpec,
    plan: Plan,
    shard_files: dict[str, list[PlannedFile]] | None = None,
) -> PlannedFile:
    """The template: `cube.template` if set, else the first file of the cube. The shard lists
    are read from the work area, or taken from `shard_files` (a plan not yet written)."""

    def files(sid: str) -> list[PlannedFile]:
        return shard_files[sid] if shard_files is not None else load_shard_files(work, sid)

    if spec.cube.template:
        for sid in plan.shards:
            for pf in files(sid):
                if pf.key == spec.cube.template:
                    return pf
        raise TemplateError(f"cube.template {spec.cube.template!r} is not a planned file")
    first = next(iter(plan.shards))
    return files(first)[0]
