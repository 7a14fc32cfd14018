"""Pure parts of bench/argo_overhead.py (latencies from recorded watch times) and
bench/atlas_model.py (the fan-out/fan-in arithmetic): no cluster, no timing."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from bench import argo_overhead, atlas_model


def _recorder(pods: dict[str, dict[str, Any]], wf: dict[str, float], nodes: dict[str, Any]) -> Any:
    return SimpleNamespace(
        lock=threading.Lock(),
        pods=pods,
        wfs={"w": wf},
        last={"w": {"status": {"nodes": nodes}}},
    )


def test_analyse_measures_each_transition_of_a_chain() -> None:
    nodes = {
        "dag": {"type": "DAG", "displayName": "w", "children": ["a"]},
        "a": {"type": "Pod", "displayName": "t0", "children": ["b"]},
        "b": {"type": "Pod", "displayName": "t1", "children": []},
    }
    pods = {
        "w-a": {"wf": "w", "node": "a", "created": 100.5, "Running": 101.0, "Succeeded": 103.0},
        "w-b": {"wf": "w", "node": "b", "created": 111.0, "Running": 112.0, "Succeeded": 113.5},
        "other": {"wf": "x", "node": "a", "created": 0.0, "Running": 0.0, "Succeeded": 0.0},
    }
    wf = {"node:a:Succeeded": 110.0, "node:b:Succeeded": 120.0, "phase:Succeeded": 120.0}
    r = argo_overhead.analyse(_recorder(pods, wf, nodes), "w", t_submit=100.0)
    assert r["pods"] == 2
    assert r["total"] == pytest.approx(20.0)
    assert r["first_pod_created"] == pytest.approx(0.5)
    a, b = r["steps"]
    assert (a["node"], a["create"], a["start"], a["run"], a["notice"]) == ("t0", 0.5, 0.5, 2, 7)
    # b was ready when a's pod Succeeded (103.0), not when its node did.
    assert (b["create"], b["start"], b["run"], b["notice"]) == (8.0, 1.0, 1.5, 6.5)
    summ = argo_overhead.summarize([{"requeue": "2s", "kind": "chain", **r}])
    assert summ["2s"]["chain"]["handoff"] == pytest.approx(8.0)
    assert summ["2s"]["chain"]["per_step"] == pytest.approx(10.0)


def test_analyse_fails_when_a_pod_was_not_seen() -> None:
    nodes = {"a": {"type": "Pod", "displayName": "t0", "children": []}}
    with pytest.raises(RuntimeError, match="no pod seen"):
        argo_overhead.analyse(_recorder({}, {"phase:Succeeded": 1.0}, nodes), "w", 0.0)


def _measured(**kw: float) -> atlas_model.Measured:
    base: dict[str, Any] = {
        "scan_cpu_per_file": 0.05,
        "scan_round_trips_per_file": 1.0,
        "prefetch_depth": 8,
        "plan_cpu_per_file": 1e-4,
        "init_s": 1.0,
        "process_start": 2.0,
        "commit_cpu_first": 0.5,
        "commit_cpu_slope": 0.0,
        "commit_round_trips": 20,
        "commit_source": "fanin-run1.json",
        "rewrite_cpu_extra": 0.0,
        "rewrite_round_trips": 3.0,
        "pack_estimate_s": 0.0,
        "tip": None,
        "requeue": "2s",
        "handoff": 1.0,
        "finish": 1.0,
        "notice": 0.5,
        "first_pod": 0.0,
        "child_created": 0.5,
        "child_first_pod": 0.1,
        "child_release": 1.5,
        "pod_rate": 20.0,
        "pod_burst": 50.0,
    }
    return atlas_model.Measured(**{**base, **kw})


def test_fan_out_runs_in_waves_and_the_committer_follows() -> None:
    m = _measured(commit_cpu_first=0.2)
    work = 10.0
    f = atlas_model.fan(m, 0.0, work, 0)
    a = atlas_model.a
    io = a("shard_io_round_trips") * a("s3_latency")
    after_scan = m.finish + m.notice + m.child_release + m.handoff
    # Each wave of 25 groups: the resource pod starts, applies the child, the child's 4 scan
    # pods start and scan, the child finishes, the resource step sees it, the parent moves on.
    cycle = (
        2 * a("pod_start")
        + m.child_created
        + m.child_first_pod
        + m.process_start
        + work
        + io
        + after_scan
    )
    first = a("node_launch") + m.process_start + work + io + after_scan  # spot pool empty
    waves = math.ceil(atlas_model.GROUPS / (a("scan_pods") // atlas_model.SHARDS_PER_GROUP))
    assert f["scans_end"] == pytest.approx(first + (waves - 1) * cycle)
    # Commits (0.6 s each here, 25 groups complete per wave of ~31 s) keep up: the committer
    # ends within one wave's commits after the last group is complete, never before.
    commit = m.commit_cpu_first + m.commit_round_trips * a("s3_latency")
    assert atlas_model.commit_s(m, 5) == pytest.approx(commit)
    last_complete = f["scans_end"] - after_scan
    assert last_complete < f["commits_end"] <= last_complete + a("poll") / 2 + 25 * commit + 1e-6
    # A slower committer becomes the critical path: the sum of its commits.
    slow = atlas_model.fan(_measured(commit_cpu_first=5.0), 0.0, work, 0)
    assert slow["commits_end"] > atlas_model.GROUPS * 5.0
    assert slow["end"] > f["end"]


def test_commit_cpu_stops_growing_with_the_full_atlas() -> None:
    m = _measured(commit_cpu_slope=0.001)
    assert atlas_model.commit_s(m, 690) > atlas_model.commit_s(m, 0)
    assert atlas_model.commit_s(m, 2000) == atlas_model.commit_s(m, 690)


def test_a_new_months_fan_out_is_planned_by_the_packing_code() -> None:
    """The model's new month fans out what `plan` would: 2,760 shards with one new file each
    in 11 children of at most 4 pods (bench/results/pack-refresh.json), every group complete
    exactly once, and the children finish long before a child per group would."""
    items = atlas_model.packed_items(atlas_model.FILES_PER_SHARD + 1, 1)
    assert len(items) == 11
    assert sum(i.pods for i in items) == 44
    assert sum(i.groups_done for i in items) == atlas_model.GROUPS
    m = _measured()
    packed = atlas_model.fan(m, 0.0, 1.0, 690, rewrite=True, items=items)
    per_group = atlas_model.fan(m, 0.0, 1.0, 690, rewrite=True)
    assert packed["scans_end"] < per_group["scans_end"] / 3
