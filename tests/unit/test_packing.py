"""Scan work packed by how much there is to scan (`vcube.packing`, plan's groups.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import spec_dict
from vcube import packing, storage, workarea
from vcube.places import Places
from vcube.plan import build_plan
from vcube.spec import DatasetSpec
from vcube.storage import ObjectInfo

T = datetime(2026, 1, 1, tzinfo=UTC)
MONTHS = ("01", "04", "07", "10")


def _atlas(groups: int = 690) -> dict[str, list[str]]:
    return {f"{g:03d}": [f"{g:03d}-{m}" for m in MONTHS] for g in range(groups)}


def _today(groups: dict[str, list[str]]) -> list[dict[str, object]]:
    """groups.json before packing: one item per group, a pod per shard."""
    return [{"group": g, "shards": s} for g, s in groups.items()]


def _shards(groups: dict[str, list[str]]) -> list[str]:
    return [s for ss in groups.values() for s in ss]


def _check_each_needed_shard_once(items: list[dict[str, object]], groups: dict) -> None:
    scanned = [s for pod in packing.pods_of(items) for s in pod]
    assert sorted(scanned) == sorted(_shards(groups))


def test_a_full_build_is_one_item_per_group_with_a_pod_per_shard() -> None:
    groups = _atlas()
    files = dict.fromkeys(_shards(groups), 180)
    assert packing.pack_work(groups, files, files) == _today(groups)


def test_new_shards_keep_their_pods_whatever_their_size() -> None:
    """Nothing to reuse (a new cube, a new series): a small shard scans like a big one."""
    groups = _atlas(3)
    files = dict.fromkeys(_shards(groups), 2)
    assert packing.pack_work(groups, files, files) == _today(groups)


def test_one_new_month_everywhere_is_packed_into_few_pods() -> None:
    groups = _atlas()
    files = dict.fromkeys(_shards(groups), 181)
    items = packing.pack_work(groups, files, dict.fromkeys(files, 1))
    pods = packing.pods_of(items)
    _check_each_needed_shard_once(items, groups)
    # 2,760 shards of 1 new file: 64 shards a pod (the cap), 4 pods an item.
    assert len(pods) == -(-2760 // packing.SHARDS_PER_POD) == 44
    assert len(items) == 11
    assert all(len(p) <= packing.SHARDS_PER_POD for p in pods)
    assert all(len(item["shards"]) <= packing.PODS_PER_ITEM for item in items)
    # In cube order, labelled so no label is a group id.
    assert [s for p in pods for s in p] == _shards(groups)
    assert [item["group"] for item in items] == [f"p{i:04d}" for i in range(11)]
    assert items[0]["shards"][0] == ",".join(_shards(groups)[:64])


def test_pods_hold_up_to_files_per_pod_estimated_files() -> None:
    groups = _atlas(30)
    files = dict.fromkeys(_shards(groups), 200)
    items = packing.pack_work(groups, files, dict.fromkeys(files, 20))
    pods = packing.pods_of(items)
    _check_each_needed_shard_once(items, groups)
    assert [len(p) for p in pods] == [9] * 13 + [3]  # 9 x 20 = 180 files; 120 shards
    assert len(items) == 4


def test_mixed_changed_big_shards_alone_small_ones_packed() -> None:
    groups = _atlas(6)
    files = dict.fromkeys(_shards(groups), 180)
    est = dict.fromkeys(files, 1)
    for s in groups["001"]:  # a whole group rewritten: stays the group's item
        est[s] = 180
    est["003-07"] = 179  # big but reusable: packed, with what still fits beside it
    est["004-04"] = 180  # one rewritten shard of an otherwise small group: a pod of its own
    items = packing.pack_work(groups, files, est)
    _check_each_needed_shard_once(items, groups)
    assert {"group": "001", "shards": groups["001"]} in items
    pods = packing.pods_of(items)
    assert ["004-04"] in pods
    assert ["003-07", "003-10"] in pods  # 179 + 1 = 180; the 1 of 003-04 no longer fitted
    for pod in pods:
        assert sum(est[s] for s in pod) <= packing.FILES_PER_POD or len(pod) == 1
    # Items in cube order: group 001's item comes after the pod holding 000's shards.
    labels = [item["group"] for item in items]
    assert labels[0] == "p0000" and labels[1] == "001"
    # Shards with nothing new (an unchanged shard of a changed group) cost no files.
    est2 = dict.fromkeys(files, 0)
    assert len(packing.pods_of(packing.pack_work(groups, files, est2))) == 1


def test_ids_that_cannot_be_packed() -> None:
    """A shard id with a comma keeps its pod; groups named like packed items: no packing."""
    groups = {"000": ["a,b", "000-04"], "001": ["001-01"]}
    files = {"a,b": 5, "000-04": 5, "001-01": 5}
    items = packing.pack_work(groups, files, dict.fromkeys(files, 1))
    # (`vcube scan --shard a,b` takes an id of the plan as a whole)
    assert [e for item in items for e in item["shards"]] == ["a,b", "000-04,001-01"]
    clash = {"p0001": ["p0001-01"], "p0002": ["p0002-01"]}
    files = {"p0001-01": 5, "p0002-01": 5}
    assert packing.pack_work(clash, files, dict.fromkeys(files, 1)) == _today(clash)


def _key(p: int, inj: int, k: int) -> str:
    y, m = divmod(inj - 1 + k, 12)
    return (
        f"{p:03d}/{inj:02d}/alk-forcing.{p:03d}-1999-{inj:02d}.pop.h.{347 + y:04d}-{m + 1:02d}.nc"
    )


def _listing(months: int, *, etag: str = "") -> list[ObjectInfo]:
    keys = [_key(p, i, k) for p in range(3) for i in (1, 4) for k in range(months)]
    return [ObjectInfo(k, 100, T, f'"{k}{etag}"') for k in keys]


def test_estimates_compare_with_the_previous_plans_lists(tmp_path: Path) -> None:
    raw = spec_dict(str(tmp_path / "src"), str(tmp_path / "repo"))
    raw["target"]["work"] = str(tmp_path / "work")
    spec = DatasetSpec.model_validate(raw)
    work = Places.of(spec).work
    plan, lists = build_plan(spec, _listing(12))
    shards = list(plan.shards)
    # No previous plan: every file counts.
    assert packing.estimate_scan_work(work, lists, shards) == dict.fromkeys(shards, 12)
    workarea.write_plan(work, plan, lists)
    for sid in shards[1:]:  # scanned, all but the first (its scan never ran)
        storage.write_bytes(work, workarea.result_key(sid), b"result")
    storage.write_bytes(work, workarea.shard_key(shards[2]), b"not json")

    plan2, lists2 = build_plan(spec, _listing(13))  # one new month in every series
    est = packing.estimate_scan_work(work, lists2, shards)
    assert est[shards[0]] == 13  # no result to reuse from
    assert est[shards[2]] == 13  # unreadable previous list
    assert {est[s] for s in shards[1:2] + shards[3:]} == {1}
    # Another template: nothing is reused.
    assert packing.estimate_scan_work(work, lists2, shards, reusable=False) == dict.fromkeys(
        shards, 13
    )
    # A file with another revision counts again (its etag changed).
    changed = packing.estimate_scan_work(work, build_plan(spec, _listing(12, etag="x"))[1], shards)
    assert changed[shards[1]] == 12
    # Only the shards asked about are read.
    assert packing.estimate_scan_work(work, lists2, shards[3:4]) == {shards[3]: 1}
    assert plan2.groups == plan.groups
