"""What does each step do, as a pod runs it? plan, init, scan, commit, validate, status.

Each step reads what it needs from the work area and the repo, so the local executor and the
Argo pods call the very same functions (never two code paths for the same step). Each returns
a JSON-serializable summary.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import zipfile
from collections.abc import Callable
from typing import Any

from vcube import commit, packing, scan, status, storage, template, workarea
from vcube.layout import CommitError, check_grid
from vcube.places import Places
from vcube.plan import Layout, Plan, PlanError, PlannedFile, build_layout, build_plan
from vcube.spec import DatasetSpec

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


def plan_step(
    spec: DatasetSpec | Places,
    *,
    allow_missing: bool = False,
    only: list[str] | None = None,
    on_listing: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Plan, and list the work items of the groups that need work (of `only`, if given) for the
    fan-out.

    `on_listing` receives that listing (Argo's groups.json, `work_items`); `todo` counts the
    groups in it, so a build with nothing to do can skip everything but validate."""
    t0 = time.perf_counter()
    places = Places.of(spec)
    spec = places.spec
    listing = storage.list_objects(places.source)
    plan, shard_files = build_plan(spec, listing, allow_missing=allow_missing)
    # Before write_plan replaces the previous shard lists: they tell what each shard has left.
    todo, items = work_items(places, plan, shard_files, only)
    workarea.write_plan(places.work, plan, shard_files)
    if on_listing:
        on_listing(items)
    return {
        "step": "plan",
        "files": plan.n_files,
        "shards": len(plan.shards),
        "groups": len(plan.groups),
        "todo": len(todo),  # groups (of `only`) not committed with their current inputs
        "work_items": len(items),  # child workflows of the fan-out
        "scan_pods": len(packing.pods_of(items)),
        "dims": {d["name"]: d["length"] for d in plan.dims},
        "missing": len(plan.missing),
        "unexpected": len(plan.unexpected),
        "unexpected_examples": plan.unexpected[:5],
        "digest": plan.digest,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def work_items(
    spec: DatasetSpec | Places,
    plan: Plan,
    shard_files: dict[str, list[PlannedFile]],
    only: list[str] | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """(the groups that need work, what Argo fans out over for them), ids only.

    A group needs work unless it is committed with its current inputs. The work items are
    `packing.pack_work`'s: a group whose shards all have a pod's work to do is one item with a
    pod per shard; shards with little to scan (a new month) are packed into fewer pods. Call it
    before the plan is written: the estimates compare with the previous plan's shard lists.
    Nothing to do: two empty lists.
    """
    places = Places.of(spec)
    check_groups(plan, only)
    hist = status.read_history(places)
    current = status.current_template(places, plan, hist, shard_files)
    needs = status.needs_work(plan, hist, current)
    todo = [g for g in plan.groups if needs[g] and (not only or g in only)]
    shards = [s for g in todo for s in plan.groups[g]]
    estimates = packing.estimate_scan_work(
        places.work, shard_files, shards, reusable=current is not None
    )
    files = {s: plan.shards[s]["files"] for s in shards}
    return todo, packing.pack_work({g: plan.groups[g] for g in todo}, files, estimates)


def check_groups(plan: Plan, groups: list[str] | None) -> None:
    unknown = [g for g in groups or [] if g not in plan.groups]
    if unknown:
        raise PlanError(f"groups {unknown} are not in the plan")


def init_step(spec: DatasetSpec | Places) -> dict[str, Any]:
    places = Places.of(spec)
    spec = places.spec
    plan = workarea.load_plan(places.work, spec)
    pf = workarea.template_file(places.work, spec, plan)
    try:
        tmpl = template.load_template(places.work)
        # (A template file rewritten since the last init may bring other attributes: the
        # template is derived again; if it comes out the same, so does its digest, and nothing
        # else is redone.)
        if not status.template_holds(tmpl, spec, pf, status.read_history(places)):
            raise template.TemplateError("the template file or the spec changed")
    except template.TemplateError:
        tmpl = template.derive_template(places.source, spec, pf.key)
        template.save_template(places.work, tmpl)
    scans: list[dict[str, Any]] = []
    tmpl.layout = learn_layout(places, plan, tmpl, scans)
    summary = commit.init_cube(places, plan, tmpl, pf)
    summary["template"] = pf.key
    summary["layout_shards"] = len(plan.layout_shards)
    # The layout shards' scans happen here: their files count as this step's.
    summary["files_scanned"] = sum(s["files_scanned"] for s in scans)
    summary["files_reused"] = sum(s["files_reused"] for s in scans)
    summary["scans"] = scans
    return summary


def learn_layout(
    places: Places,
    plan: Plan,
    tmpl: template.Template,
    scans: list[dict[str, Any]] | None = None,
) -> Layout:
    """How many steps each file holds, from the scans of the plan's layout shards.

    Those shards are scanned here (the scan step then finds them done: no file is read twice),
    so the arrays can be sized before any group is committed. Their summaries go to `scans`.
    """
    spec = places.spec
    files = []
    for sid in plan.layout_shards:
        done = scan_step(places, sid)
        if scans is not None:
            scans.append(done)
        meta = scan.read_meta(storage.read_bytes(places.work, workarea.result_key(sid)))
        files += [(f["key"], f["pos"], f["steps"]) for f in meta["files"]]
    dims = spec.cube.dim_names
    layout = build_layout(plan, dims, dims.index(spec.cube.commit_by), files)
    check_grid(tmpl, layout)
    workarea.save_layout(places.work, layout)
    return layout


def scan_step(
    spec: DatasetSpec | Places, shard: str, *, on_file: Progress | None = None
) -> dict[str, Any]:
    """Scan one shard; a shard already scanned with the same inputs is not scanned again, and
    of a shard whose files changed only the new or changed files are read."""
    places = Places.of(spec)
    plan = workarea.load_plan(places.work, places.spec)
    return _scan_one(places, plan, template.load_template(places.work), shard, on_file=on_file)


def scan_shards_step(
    spec: DatasetSpec | Places, shards: str, *, on_file: Progress | None = None
) -> dict[str, Any]:
    """Scan a comma-separated list of shards in turn (one scan pod of packed work), each
    exactly as `scan_step` scans it: its own result, reuse and error marker. The summary adds
    up over the shards; one shard's summary is `scan_step`'s.

    A bad file (a `ScanError` of the data, not of the store) fails its shard and the step, but
    only after the other shards are scanned: their groups need not wait for a re-run. Any other
    failure stops at once (the pod's retry redoes the list; finished shards are then reused).
    """
    t0 = time.perf_counter()
    places = Places.of(spec)
    plan = workarea.load_plan(places.work, places.spec)
    ids = [shards] if shards in plan.shards else [s.strip() for s in shards.split(",")]
    tmpl = template.load_template(places.work)
    if len(ids) == 1:
        return _scan_one(places, plan, tmpl, ids[0], on_file=on_file)
    unknown = [s for s in ids if s not in plan.shards]
    if unknown:
        raise PlanError(f"shards {unknown[:5]} are not in the plan")
    total = sum(int(plan.shards[s]["files"]) for s in ids)
    done = 0
    summaries: list[dict[str, Any]] = []
    failed: list[tuple[str, scan.ScanError]] = []
    for sid in ids:
        offset = done
        progress = None if on_file is None else (lambda i, _n, o=offset: on_file(o + i, total))
        try:
            summaries.append(_scan_one(places, plan, tmpl, sid, on_file=progress))
        except scan.ScanError as e:
            if e.__cause__ is not None:  # maybe the store's fault: the step's retry decides
                raise
            failed.append((sid, e))
            log.error("scan: shard %s failed: %s", sid, storage.first_line(e))
        done += int(plan.shards[sid]["files"])
        if on_file:
            on_file(done, total)
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        raise scan.ScanError(
            f"{len(failed)} of {len(ids)} shards failed: "
            + "; ".join(f"{sid}: {storage.first_line(e)}" for sid, e in failed)
        )
    return {
        "step": "scan",
        "shard": ",".join(ids),
        "shards": len(ids),
        "changed": any(s["changed"] for s in summaries),
        **{
            k: sum(int(s.get(k, 0)) for s in summaries)
            for k in ("files", "files_scanned", "files_reused", "refs", "bytes")
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _scan_one(
    places: Places,
    plan: Plan,
    tmpl: template.Template,
    shard: str,
    *,
    on_file: Progress | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    spec = places.spec
    if shard not in plan.shards:
        raise PlanError(f"shard {shard!r} is not in the plan")
    work = places.work
    digest = scan.result_digest(plan.shards[shard]["digest"], tmpl)
    previous: bytes | None = None
    old: dict[str, Any] = {}
    try:
        previous = storage.read_bytes(work, workarea.result_key(shard))
        old = scan.read_meta(previous)
    except (FileNotFoundError, zipfile.BadZipFile, KeyError, ValueError):
        previous = None  # none, or unreadable: scan every file
    if previous is not None and old.get("digest") == digest:
        return {
            "step": "scan",
            "shard": shard,
            "changed": False,
            "files": len(old["files"]),
            "files_scanned": 0,
            "files_reused": len(old["files"]),
            "refs": old["refs"],
            "seconds": round(time.perf_counter() - t0, 3),
        }
    files = workarea.load_shard_files(places.work, shard, plan)
    # Files scanned before against the same template (same key, size and revision) are taken
    # from the shard's previous result: a new month in a series scans only the new file.
    reuse = scan.reusable_scans(previous, tmpl, spec.cube.dim_names) if previous is not None else {}
    reused = sum(1 for pf in files if scan.file_id(pf) in reuse)
    try:
        data = scan.scan_shard(
            spec, places.source, tmpl, shard, files, digest, on_file=on_file, reuse=reuse
        )
    except Exception as e:
        err = {
            "shard": shard,
            "error": str(e),
            "type": type(e).__name__,
            "trace": traceback.format_exc(limit=5),
        }
        storage.write_bytes(work, workarea.error_key(shard), json.dumps(err).encode())
        raise
    storage.write_bytes(work, workarea.result_key(shard), data)
    if storage.exists(work, workarea.error_key(shard)):  # a failure of an earlier try: it is over
        storage.delete(work, workarea.error_key(shard))
    return {
        "step": "scan",
        "shard": shard,
        "changed": True,
        "files": len(files),
        "files_scanned": len(files) - reused,
        "files_reused": reused,
        "refs": scan.read_meta(data)["refs"],
        "bytes": len(data),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def commit_step(
    spec: DatasetSpec | Places, group: str, *, on_file: Progress | None = None
) -> dict[str, Any]:
    places = Places.of(spec)
    plan = workarea.load_plan(places.work, places.spec)
    tmpl = template.load_template(places.work)
    return commit.commit_group(places, plan, tmpl, group, on_file=on_file)


def scans_done_step(spec: DatasetSpec | Places, run_id: str) -> dict[str, Any]:
    """Tell this build's committer that no more scans will come (succeeded or not)."""
    key = workarea.scans_done_key(run_id)
    storage.write_bytes(Places.of(spec).work, key, json.dumps({"run": run_id}).encode())
    return {"step": "scans-done", "run": run_id, "marker": key}


def commit_all_step(
    spec: DatasetSpec | Places,
    *,
    groups: list[str] | None = None,
    run_id: str | None = None,
    poll: float = 5.0,
    on_group: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The fan-in's one committer: commit each group that needs work (of `groups`, if given) as
    soon as all its shards are scanned, one Icechunk commit per group, while the scans go on.

    A group is complete when every shard has a result made from the current inputs (the result
    is written in one piece, so it is its own marker). With `run_id`, waits for more scans until
    the build's scans-done marker appears; without, commits what is complete now. A group whose
    data cannot be committed does not stop the others; it and the groups still incomplete at the
    end fail the step, each named with its reason. Killed at any point, a re-run skips what the
    branch history has (same as `vcube commit`).
    """
    t0 = time.perf_counter()
    places = Places.of(spec)
    spec = places.spec
    plan = workarea.load_plan(places.work, spec)
    check_groups(plan, groups)
    tmpl = template.load_template(places.work)
    work_loc = places.work
    marker = workarea.scans_done_key(run_id) if run_id else None
    work = status.needs_work(plan, status.read_history(places), tmpl)
    todo = [g for g in plan.groups if work[g] and (not groups or g in groups)]
    total, done, changed, refs = len(todo), 0, 0, 0
    failed: dict[str, str] = {}
    scanned: set[str] = set()
    if on_group:
        on_group(0, total)
    while todo:
        # Read the marker before the shards: if it is there, every scan ended before this look.
        over = marker is None or storage.exists(work_loc, marker)
        look = [s for g in todo for s in plan.groups[g] if s not in scanned]
        states, errors = status.shard_states(work_loc, plan, tmpl, look)
        scanned |= {s for s, st in states.items() if st == "scanned"}
        ready = [g for g in todo if all(s in scanned for s in plan.groups[g])]
        for g in ready:
            todo.remove(g)
        # In order, the next group prepared while one commits (commit.commit_groups).
        for g, res, err in commit.commit_groups(places, plan, tmpl, ready):
            if err is not None:
                known = (CommitError, template.TemplateError, scan.ScanError)
                if not isinstance(err, known) or err.__cause__ is not None:
                    raise err  # maybe the store's fault: the step's retry decides
                failed[g] = storage.first_line(err)
                log.error("commit-all: group %s not committed: %s", g, failed[g])
                continue
            assert res is not None
            changed += int(bool(res["changed"]))
            refs += int(res.get("refs", 0))
            done += 1
            if on_group:
                on_group(done, total)
        if todo and over:
            for g in todo:
                bad = [f"{s}: {errors[s]}" for s in plan.groups[g] if s in errors]
                failed[g] = "; ".join(bad) or "scans missing"  # its scans are incomplete
            todo = []
        if todo and not ready:
            sleep(poll)
    if failed:
        shown = [f"{g} ({why})" for g, why in list(failed.items())[:10]]
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise CommitError(
            f"{len(failed)} of {total} groups not committed: "
            + ", ".join(shown)
            + more
            + ". Committed groups stay; run the build again to redo the others."
        )
    return {
        "step": "commit-all",
        "groups": total,
        "committed": changed,
        "refs": refs,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def validate_step(
    spec: DatasetSpec | Places, *, samples: int = 3, groups: list[str] | None = None
) -> dict[str, Any]:
    from vcube import validate  # xarray: only the steps that read values pay for importing it

    places = Places.of(spec)
    plan = workarea.load_plan(places.work, places.spec)
    check_groups(plan, groups)
    tmpl = template.load_template(places.work)
    return validate.validate_cube(places, plan, tmpl, samples=samples, groups=groups)


def status_step(spec: DatasetSpec | Places) -> dict[str, Any]:
    """What the repo has committed next to what the plan asks for, per group and shard."""
    return status.status(spec)
