"""How is a build's scan work cut into pods? By how much there is to scan, not only by group.

`plan` hands the fan-out a list of work items (Argo's groups.json): one child workflow each,
whose scan pods run in parallel. A group whose shards all have a full pod's work stays one item
with one pod per shard, as a full build always had. A refresh where every series gained one
file would otherwise pay a child workflow and a pod per shard for one file each (the atlas:
690 children and 2,760 pods for 2,760 files, ~9.4 min of pod lifecycles, bench/atlas_model.py);
here the shards with little to scan are packed, in cube order, into pods of up to
`FILES_PER_POD` estimated files, and those pods into items of up to `PODS_PER_ITEM`.

The estimate of a shard's work (`estimate_scan_work`) is the number of its files that are not
in its previous file list with the same key, size and revision, which the previous plan left in
the work area (read before this plan overwrites it). It only decides the packing: what a scan
reads is decided by the scan itself (`scan.reusable_scans`), so a wrong estimate makes a pod
slower, never a cube different. Which group a shard belongs to does not matter to the
committer either: `commit-all` commits a group once all its shards have current results,
whichever pods wrote them.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vcube import scan, storage, workarea
from vcube.plan import PlanError, PlannedFile

FILES_PER_POD = 180
"""Estimated files one packed scan pod reads: the size of an atlas shard, i.e. the work of one
scan pod of a full build (~180 x 56 ms CPU, README sizing). A shard with at least this much to
scan keeps a pod of its own; smaller ones share pods up to this sum, so a packed pod costs about
what a full build's pod costs."""

SHARDS_PER_POD = 64
"""At most this many shards per packed pod, whatever their estimates: each shard still costs a
read of the plan's file list and of its previous result, and a write of its new result, so a
pod of shards with nothing new (estimate 0) stays bounded too. One new month in the atlas
(2,760 shards x 1 new file) is then 44 pods in 11 work items instead of 2,760 pods in 690."""

PODS_PER_ITEM = 4
"""Packed scan pods per work item (one child workflow): the width of a group in the atlas
(4 shards), so the parent's `parallelism` (children at a time) bounds the pods as before."""

PACK_PREFIX = "p"
"""Packed items are labelled p0000, p0001, ...: they name no group (ids made from path keys are
rarely this shape; if one is, `pack_work` packs nothing), and fit the child workflow's
name `<parent>-g<label>` (63 characters at most in a label value)."""


def keeps_own_pod(shard: str, files: int, estimate: int) -> bool:
    """A shard scans in a pod of its own when it has a pod's work, or when none of its files
    can be reused (a new shard: a full build's fan-out stays exactly as it was); an id with a
    comma cannot go into a comma-joined list."""
    return estimate >= FILES_PER_POD or estimate >= files or "," in shard


def estimate_scan_work(
    work: storage.Location,
    shard_files: dict[str, list[PlannedFile]],
    shards: Iterable[str],
    *,
    reusable: bool = True,
) -> dict[str, int]:
    """Per shard: how many of its (new) files its scan will likely read.

    A file counts unless the shard's previous file list in the work area (call this before
    `workarea.write_plan` replaces it) has it with the same key, size and revision, and the
    shard has a scan result to reuse it from. No result, no previous list, an unreadable list,
    or `reusable=False` (the template changes, so nothing is reused): every file counts. The
    lists are read 16 at a time, like `write_plan` writes them.
    """
    shards = list(shards)
    if not reusable or not shards or work.absent:  # absent: a new local work area
        return {s: len(shard_files[s]) for s in shards}
    scanned = set(workarea.shards_with_results(work, set(shards)))

    def estimate(shard: str) -> int:
        files = shard_files[shard]
        if shard not in scanned:
            return len(files)
        try:
            old = {scan.file_id(pf) for pf in workarea.load_shard_files(work, shard)}
        except (PlanError, ValueError, KeyError, TypeError):  # none, or unreadable
            return len(files)
        return sum(1 for pf in files if scan.file_id(pf) not in old)

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(shards, pool.map(estimate, shards), strict=True))


def pack_work(
    groups: dict[str, list[str]], files: dict[str, int], estimates: dict[str, int]
) -> list[dict[str, Any]]:
    """The work items of the fan-out, in cube order: ``{"group": id, "shards": [ids]}`` for a
    group whose shards all keep a pod of their own (one pod per shard, as always), else packed
    ``{"group": "p0003", "shards": ["A,B,C", "D", ...]}``, each entry the shards one pod scans.

    `groups` are the groups needing work with their shards, in cube order; `files` and
    `estimates` count each shard's files and its estimated scan work.
    """
    if any(_is_pack_label(g) for g in groups):  # a packed item's child would be a group's
        return [{"group": g, "shards": list(s)} for g, s in groups.items()]
    items: list[tuple[int, dict[str, Any]]] = []  # (first shard's place in cube order, item)
    pods: list[tuple[int, list[str]]] = []
    open_pod: list[str] = []
    open_files, open_at, place = 0, 0, 0

    def close() -> None:
        nonlocal open_pod, open_files
        if open_pod:
            pods.append((open_at, open_pod))
        open_pod, open_files = [], 0

    for g, shards in groups.items():
        own = [keeps_own_pod(s, files[s], estimates[s]) for s in shards]
        if all(own):
            items.append((place, {"group": g, "shards": list(shards)}))
            place += len(shards)
            continue
        for s, alone in zip(shards, own, strict=True):
            if alone:
                pods.append((place, [s]))
            else:
                n = estimates[s]
                if open_pod and (open_files + n > FILES_PER_POD or len(open_pod) >= SHARDS_PER_POD):
                    close()
                if not open_pod:
                    open_at = place
                open_pod.append(s)
                open_files += n
            place += 1
    close()
    pods.sort(key=lambda p: p[0])
    for i, j in enumerate(range(0, len(pods), PODS_PER_ITEM)):
        chunk = pods[j : j + PODS_PER_ITEM]
        item = {"group": f"{PACK_PREFIX}{i:04d}", "shards": [",".join(p) for _, p in chunk]}
        items.append((chunk[0][0], item))
    items.sort(key=lambda x: x[0])
    return [item for _, item in items]


def _is_pack_label(label: str) -> bool:
    return label.startswith(PACK_PREFIX) and label[len(PACK_PREFIX) :].isdigit()


def pods_of(items: list[dict[str, Any]]) -> list[list[str]]:
    """The shards each scan pod of these work items scans (one list per pod)."""
    return [entry.split(",") for item in items for entry in item["shards"]]
