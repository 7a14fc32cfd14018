"""The atlas on EKS: modelled wall time from the measured parts (issue 10, "Measure" bullet 4).

    python -m bench.atlas_model [--results bench/results]

Prints the model of three runs of the atlas (690 groups x 4 shards x 180 files) with the fan-in
chosen in bench/results/README.md "Fan-in": ONE long-lived committer that commits each group as
soon as its four scan results exist, overlapping the scan fan-out:

    plan -> init -> group x690 (25 at a time: a resource step applies a child Workflow of
                 |               4 scan pods and waits for it) -> scans-done
                 \\-> commit-all (one pod, polls the scan results) -> validate

- full build: every file scanned, every group committed;
- refresh with no change: plan finds nothing to do, then validate (no scan, no commit pod);
- one new month in every series: 2,760 new files (one per shard; per-file reuse scans only
  those, in the children `vcube.packing` packs them into), each group committed once.

Measured inputs come from the committed JSON under bench/results/ (named in MEASURED); all else
is an assumption in ASSUMPTIONS, each with its reason. `section()` renders the same as
bench/results/README.md "The atlas on EKS" (bench/report.py appends it).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import fanin_report
from bench.common import RESULTS, ROOT

GROUPS, SHARDS_PER_GROUP, FILES_PER_SHARD = 690, 4, 180
SHARDS = GROUPS * SHARDS_PER_GROUP
FILES = SHARDS * FILES_PER_SHARD
TARGETS_MIN = {"full build": 30.0, "refresh, no change": 5.0, "one new month": 10.0}

# Assumptions: (value, why). Seconds unless named otherwise.
ASSUMPTIONS: dict[str, tuple[float, str]] = {
    "s3_latency": (0.020, "S3 in-region latency per GET/PUT, as in every measurement here"),
    "s3_list_page": (0.100, "one S3 LIST page (<= 1000 keys); slower than a GET"),
    "pod_start": (
        5.0,
        "EKS pod start-up on a running node, image cached: sandbox, VPC CNI IP, "
        "argoexec init, containers started",
    ),
    "node_launch": (
        60.0,
        "Karpenter launching the first node of an empty pool (once per pool "
        "per run: on-demand for plan/init/commit-all/validate, spot for scans)",
    ),
    "scan_pods": (
        100,
        "scans in flight: 25 child Workflows at a time (vcube-build's "
        "parallelism in k8s/base) x 4 shards",
    ),
    "scan_cores": (
        0.5,
        "CPU a scan pod gets: its request in k8s/base (Karpenter packs by "
        "request, so under full load a pod has about that much)",
    ),
    "commit_cores": (
        1.0,
        "the committer's CPU request; its commit CPU is charged in full: on two cores its "
        "commits were not measurably faster (`committer-cores.json`: the spread between "
        "rounds on this machine is larger than the difference)",
    ),
    "poll": (
        5.0,
        "commit-all's poll interval (`--poll 5`): an idle committer sees a complete "
        "group after half of it on average",
    ),
    "history_round_trips": (
        2,
        "plan reads the branch history: Icechunk's repository info object lists every "
        "snapshot with its metadata (the commits of `fanin-tip.json` read the history with "
        "GETs of it only, no snapshot), a new one every 1,000 updates, so 1,380 commits span 2",
    ),
    "validate_work": (
        60.0,
        "validate at atlas scale, not measured: history, 20 shards' chunk "
        "keys, 3 files compared value by value (~114 MB each from S3)",
    ),
    "status_plot_work": (
        20.0,
        "the exit handler's `vcube status --plot` (every run): lists the scan results, reads "
        "the history, draws 690 x 4 cells; not measured at atlas scale",
    ),
    "rewrite_round_trips": (
        3,
        "a group committed again (each group, in a new month) first reads back the manifests it "
        "replaces: ~35 of them, 16 at a time (repo.MANIFEST_CONCURRENCY); used only without "
        "`fanin-tip.json`, which counts them",
    ),
    "shard_io_round_trips": (
        6,
        "a scan pod's own requests besides the files: plan, shard "
        "files, previous result, template, result PUT, summary",
    ),
}


def a(name: str) -> float:
    return float(ASSUMPTIONS[name][0])


@dataclass(frozen=True)
class Measured:
    """The measured parts, each from a committed results file."""

    scan_cpu_per_file: float  # results.json scan_local: vcube CPU per full-grid file
    scan_round_trips_per_file: float  # results.json scan_s3: with the Prefetcher
    prefetch_depth: int
    plan_cpu_per_file: float  # results.json commit_scale: planner on a synthetic listing
    init_s: float  # results.json commit_scale: create the arrays
    process_start: float  # results.json commit_scale: one `vcube commit` minus its commit
    commit_cpu_first: float  # CPU of a commit on a fresh branch (COMMIT_NOW, else run1's fit)
    commit_cpu_slope: float  # per commit of history: fanin-run1.json, least squares over 670
    commit_round_trips: float  # p50 in one process (COMMIT_NOW, else manifest-concurrency)
    commit_source: str  # the results file commit_cpu_first and commit_round_trips come from
    rewrite_cpu_extra: float  # profile_commit{_rewrite,}.json: a group again less a new one
    rewrite_round_trips: float  # fanin-tip.json if there, else the assumption
    pack_estimate_s: float  # pack-refresh.json: plan's scan-work estimates for a new month
    tip: dict[str, Any] | None  # fanin_report.tip_stats of fanin-tip.json
    requeue: str  # argo-overhead.json at the chart's DEFAULT_REQUEUE_TIME
    handoff: float  # pod Succeeded -> next pod created (the controller noticing + creating)
    finish: float  # pod Running -> Succeeded for `sh -c true` (argoexec wait, log upload)
    notice: float  # pod Succeeded -> node Succeeded
    first_pod: float  # submit -> first pod created
    child_created: float  # resource pod Running -> child Workflow created (argoexec apply)
    child_first_pod: float  # child created -> its first pod created
    child_release: float  # child Succeeded -> the parent's resource pod Succeeded
    pod_rate: float  # chart resourceRateLimit: pods created per second
    pod_burst: float


def chart_controller() -> dict[str, Any]:
    app = yaml.safe_load((ROOT / "k8s" / "argocd" / "apps" / "argo-workflows.yaml").read_text())
    return dict(app["spec"]["source"]["helm"]["valuesObject"]["controller"])


# The commit as it is now (bench/results/profile_commit.txt): a short `bench.fanin` run whose
# long-lived loop commits as `vcube commit-all` does. Its commits sit on a short history, so
# the growth with the history is still taken from fanin-run1.json's 670 commits.
COMMIT_NOW = "fanin-commit-speedup.json"
TIP = fanin_report.TIP  # the commit measured at the tip of a whole atlas over S3, if there


def load(results: Path, requeue: str | None = None) -> Measured:
    res = json.loads((results / "results.json").read_text())
    run1 = json.loads((results / "fanin-run1.json").read_text())
    conc = json.loads((results / "fanin-manifest-concurrency.json").read_text())
    argo = json.loads((results / "argo-overhead.json").read_text())
    ctrl = chart_controller()
    if requeue is None:
        requeue = {e["name"]: e["value"] for e in ctrl.get("extraEnv", [])}.get(
            "DEFAULT_REQUEUE_TIME", "10s"
        )
    cs = res["commit_scale"]
    commits = run1["cost"]["one_process"]["commits"]
    # x = commits already on the branch (group i is committed after init + i groups).
    slope, first = _fit([float(c["group"]) + 1 for c in commits], [c["cpu_s"] for c in commits])
    round_trips = statistics.median(
        c["round_trips"] for c in conc["cost"]["one_process"]["commits"]
    )
    source = "fanin-run1.json"
    if (results / COMMIT_NOW).exists():
        now = json.loads((results / COMMIT_NOW).read_text())["cost"]["one_process"]["commits"]
        # the fixed part: each commit's CPU less the history's share run1 measured
        first = statistics.median(c["cpu_s"] - slope * (float(c["group"]) + 1) for c in now)
        round_trips = statistics.median(c["round_trips"] for c in now)
        source = COMMIT_NOW
    rewrite_extra = 0.0
    if (results / "profile_commit_rewrite.json").exists():
        new_cpu, again_cpu = (
            statistics.median(r["cpu_s"] for r in json.loads((results / n).read_text())["runs"])
            for n in ("profile_commit.json", "profile_commit_rewrite.json")
        )
        rewrite_extra = max(0.0, again_cpu - new_cpu)
    rewrite_trips = a("rewrite_round_trips")
    pack = results / "pack-refresh.json"
    pack_s = 0.0
    if pack.exists():
        pack_s = float(json.loads(pack.read_text())["one_new_month"]["estimate_seconds"])
    tip = None
    if (results / TIP).exists():
        # Measured at the tip over S3, as commit-all commits: the CPU grows from the fresh
        # branch's (above) to the tip's; a group again costs what the tip's re-commits did.
        tip = fanin_report.tip_stats(json.loads((results / TIP).read_text()))
        slope = (tip["new"]["cpu_s"] - first) / tip["history"]
        round_trips = tip["new"]["round_trips"]
        rewrite_extra = tip["again"]["cpu_s"] - tip["new"]["cpu_s"]
        rewrite_trips = tip["again"]["round_trips"] - tip["new"]["round_trips"]
        source = TIP
    chain = argo["summary"][requeue]["chain"]
    child = argo["summary"][requeue]["child"]
    in_commit = json.loads(cs["cli_summary"])["seconds"]
    return Measured(
        scan_cpu_per_file=res["scan_local"]["median_s"]["cpu"]["vcube"],
        scan_round_trips_per_file=res["scan_s3"]["prefetched_round_trips_per_file_isolated"],
        prefetch_depth=res["scan_s3"]["depth"],
        plan_cpu_per_file=cs["plan_s"] / cs["files"],
        init_s=cs["init_s"],
        process_start=cs["cli_commit_s"] - in_commit,
        commit_cpu_first=first,
        commit_cpu_slope=slope,
        commit_round_trips=round_trips,
        commit_source=source,
        rewrite_cpu_extra=rewrite_extra,
        rewrite_round_trips=rewrite_trips,
        pack_estimate_s=pack_s,
        tip=tip,
        requeue=requeue,
        handoff=chain["handoff"],
        finish=chain["run"],
        notice=chain["notice"],
        first_pod=chain["first_pod_created"],
        child_created=child["child_created"],
        child_first_pod=child["child_first_pod"],
        child_release=child["child_done_to_resource_pod_done"],
        pod_rate=float(ctrl["resourceRateLimit"]["limit"]),
        pod_burst=float(ctrl["resourceRateLimit"]["burst"]),
    )


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def pod_step(m: Measured, work: float) -> float:
    """One pod of a sequential step, from its predecessor's end to its own pod Succeeded."""
    return m.handoff + a("pod_start") + m.process_start + work + m.finish


def plan_work(m: Measured, files: int) -> float:
    listing = math.ceil(GROUPS / 16) * math.ceil(FILES_PER_SHARD * SHARDS_PER_GROUP / 1000)
    return (
        listing * a("s3_list_page")
        + files * m.plan_cpu_per_file
        + a("history_round_trips") * a("s3_latency")
    )


def commit_s(m: Measured, n: int, *, rewrite: bool = False) -> float:
    """A commit by the long-lived committer with `n` commits on the branch before it; with
    `rewrite`, of a group committed before (a new month does that to every group).

    Its CPU grows with the groups in the snapshot (each commit rewrites the list of every
    group's manifests), so past the 690th it stays at the full atlas's value: a new month
    replaces each group's manifests, it does not add groups.
    """
    cpu = m.commit_cpu_first + m.commit_cpu_slope * min(n, GROUPS)
    trips = m.commit_round_trips
    if rewrite:
        cpu += m.rewrite_cpu_extra
        trips += m.rewrite_round_trips
    return cpu + trips * a("s3_latency")


@dataclass(frozen=True)
class Item:
    """One child Workflow of the fan-out: its scan pods, the most shards one of them scans,
    and the groups whose last shard it holds (complete, for the committer, when it ends)."""

    pods: int
    shards_per_pod: int
    groups_done: int


def group_items() -> list[Item]:
    """A full build: a child per group, a pod per shard."""
    return [Item(SHARDS_PER_GROUP, 1, 1)] * GROUPS


def packed_items(files_per_shard: int, to_scan: int) -> list[Item]:
    """The fan-out `plan` makes (`vcube.packing.pack_work`, the code itself) when each shard of
    every group has `to_scan` of its `files_per_shard` files to scan."""
    from vcube.packing import pack_work

    groups = {
        f"{g:03d}": [f"{g:03d}-{s:02d}" for s in range(SHARDS_PER_GROUP)] for g in range(GROUPS)
    }
    shards = [s for ss in groups.values() for s in ss]
    files, work = dict.fromkeys(shards, files_per_shard), dict.fromkeys(shards, to_scan)
    out = []
    for it in pack_work(groups, files, work):
        pods = [p.split(",") for p in it["shards"]]
        held = {s for p in pods for s in p}
        done = sum(1 for ss in groups.values() if ss[-1] in held)
        out.append(Item(len(pods), max(len(p) for p in pods), done))
    if sum(i.groups_done for i in out) != GROUPS:
        raise AssertionError("packed items must complete every group once")
    return out


@functools.cache
def new_month_items() -> list[Item]:
    """One new month's fan-out: every shard has one new file to scan (packed once per process:
    the scenarios and the text both use it)."""
    return packed_items(FILES_PER_SHARD + 1, 1)


def fan(
    m: Measured,
    t0: float,
    scan_work: float,
    commits_before: int,
    *,
    rewrite: bool = False,
    items: list[Item] | None = None,
) -> dict[str, float]:
    """The fan-out (a child Workflow per item, 25 at a time: the parent's parallelism; pod
    creation paced by the chart's rate limit) and the one committer, which commits each group
    once its results exist. `scan_work`: one shard's scan; `items`: a child per group by
    default. Times from t0 (init done)."""
    items = items if items is not None else group_items()
    slots = [t0] * (int(a("scan_pods")) // SHARDS_PER_GROUP)
    spot_ready = t0 + a("node_launch")  # the spot pool starts empty
    per_shard_io = a("shard_io_round_trips") * a("s3_latency")
    complete: list[float] = []
    pods = 0
    for item in items:
        k = min(range(len(slots)), key=slots.__getitem__)
        # The group step's resource pod (on-demand: plan's node is up), then the child.
        res_pod = max(slots[k], t0 + max(0.0, pods - m.pod_burst) / m.pod_rate)
        child = res_pod + a("pod_start") + m.child_created
        scan_pod = max(child + m.child_first_pod, t0 + (pods + 1 - m.pod_burst) / m.pod_rate)
        pods += 1 + item.pods
        running = max(scan_pod + a("pod_start"), spot_ready)
        written = running + m.process_start + item.shards_per_pod * (scan_work + per_shard_io)
        complete += [written] * item.groups_done
        # child notices its pods, the resource step sees the child done, the parent moves on
        slots[k] = written + m.finish + m.notice + m.child_release + m.handoff
    scans_end = max(slots)
    t = t0 + m.handoff + a("pod_start") + m.process_start  # committer up (on-demand node)
    for g, ready in enumerate(complete):
        start = max(t, ready + a("poll") / 2)
        t = start + commit_s(m, commits_before + g, rewrite=rewrite)
    return {"scans_end": scans_end, "commits_end": t, "end": max(scans_end, t) + m.finish}


def scenarios(m: Measured) -> dict[str, dict[str, float]]:
    """Each run's parts (seconds) and total."""
    lat = a("s3_latency")
    io_per_file = m.scan_round_trips_per_file * lat / m.prefetch_depth
    full_file = m.scan_cpu_per_file / a("scan_cores") + io_per_file
    out: dict[str, dict[str, float]] = {}
    for name, files, scan_files, commits_before, items in (
        ("full build", FILES, FILES_PER_SHARD, 0, group_items()),
        ("one new month", FILES + SHARDS, 1, GROUPS, new_month_items()),
    ):
        work = plan_work(m, files)
        if commits_before:  # plan reads each changed shard's previous list, 16 at a time
            work += m.pack_estimate_s + math.ceil(SHARDS / 16) * lat
        t_plan = m.first_pod + a("node_launch") + pod_step(m, work) - m.handoff
        t_init = pod_step(m, m.init_s + commit_s(m, commits_before))
        f = fan(
            m,
            t_plan + t_init,
            scan_files * full_file + lat,
            commits_before + 1,
            rewrite=commits_before > 0,  # a new month commits every group again
            items=items,
        )
        t_fan = f["end"] - t_plan - t_init
        t_val = pod_step(m, a("validate_work"))
        t_exit = pod_step(m, a("status_plot_work")) + m.notice
        out[name] = {
            "submit -> plan done": t_plan,
            "init": t_init,
            "scan fan-out (last child done)": f["scans_end"] - t_plan - t_init,
            "fan-in (last commit)": f["commits_end"] - t_plan - t_init,
            "scans + commits (overlapped)": t_fan,
            "validate": t_val,
            "exit handler (status --plot)": t_exit,
            "total": t_plan + t_init + t_fan + t_val + t_exit,
        }
    t_plan = m.first_pod + a("node_launch") + pod_step(m, plan_work(m, FILES)) - m.handoff
    t_val = pod_step(m, a("validate_work"))
    t_exit = pod_step(m, a("status_plot_work")) + m.notice
    out["refresh, no change"] = {
        "submit -> plan done": t_plan,
        "validate": t_val,
        "exit handler (status --plot)": t_exit,
        "total": t_plan + t_val + t_exit,
    }
    return out


def render(results: Path) -> list[str]:
    """The README section (empty when a results file is missing)."""
    need = ("results.json", "fanin-run1.json", "fanin-manifest-concurrency.json")
    if not all((results / n).exists() for n in (*need, "argo-overhead.json")):
        return []
    m = load(results)
    argo = json.loads((results / "argo-overhead.json").read_text())
    by_rq = {rq: scenarios(load(results, rq)) for rq in argo["requeue_values"]}
    sc = scenarios(m)
    order = ("full build", "refresh, no change", "one new month")
    lines = [
        "## The atlas on EKS (model, issue 10)",
        "",
        "`python -m bench.atlas_model` (`bench/atlas_model.py`): wall time of the atlas "
        f"({GROUPS} groups, {FILES:,} files, {SHARDS:,} scan shards on "
        f"{int(a('scan_pods'))} pods) with the fan-in chosen above (one long-lived committer "
        "overlapping the scans), from the measured parts below and the listed assumptions. "
        f"Argo overheads at the deployed `DEFAULT_REQUEUE_TIME` ({m.requeue}, "
        "k8s/argocd/apps/argo-workflows.yaml).",
        "",
        "| run | " + " | ".join(order) + " |",
        "|---|---:|---:|---:|",
    ]
    parts = [p for p in sc["full build"] if p != "total"]
    for p in parts:
        lines.append(
            f"| {p} (min) | "
            + " | ".join(f"{sc[o][p] / 60:.1f}" if p in sc[o] else "-" for o in order)
            + " |"
        )
    lines.append(
        "| **total (min)** | " + " | ".join(f"**{sc[o]['total'] / 60:.1f}**" for o in order) + " |"
    )
    lines.append("| target (min) | " + " | ".join(f"{TARGETS_MIN[o]:.0f}" for o in order) + " |")
    lines.append(
        "| status | "
        + " | ".join(
            "met" if sc[o]["total"] / 60 <= TARGETS_MIN[o] else "**not met**" for o in order
        )
        + " |"
    )
    month = sc["one new month"]
    commits = sum(commit_s(m, GROUPS + 1 + g, rewrite=True) for g in range(GROUPS))
    budget = (TARGETS_MIN["one new month"] * 60 - (month["total"] - commits)) / GROUPS
    lines += [
        "",
        f"One new month: plan packs the 2,760 changed shards into "
        f"{len(new_month_items())} children "
        f"({sum(i.pods for i in new_month_items())} scan pods; "
        "`vcube.packing`, `pack-refresh.json`), so its scans end after "
        f"{month['scan fan-out (last child done)'] / 60:.1f} min and the run is bound by the "
        f"committer: {GROUPS} commits of {commits / GROUPS:.2f} s ({commits / 60:.1f} min). "
        f"Within {TARGETS_MIN['one new month']:.0f} min the rest of that run leaves "
        f"{budget:.2f} s per commit: a group committed again at the tip takes "
        f"{(m.commit_cpu_first + m.commit_cpu_slope * GROUPS + m.rewrite_cpu_extra):.2f} s "
        f"of CPU and {m.commit_round_trips + m.rewrite_round_trips:.0f} sequential round "
        "trips. It sets only the refs of its shards' new files (`commit.build_group_refs`: the "
        "files its last commit holds are proven unchanged by a digest); most of what is left is "
        "Icechunk's `Session.commit`, which rewrites the group's manifests and a snapshot "
        "listing every group's. A group written whole again (one of its files changed) costs "
        "more: `profile_commit_rewrite.txt`.",
    ]
    lines += [
        "",
        "The same with the Argo overheads measured at each requeue time (total, min):",
        "",
        "| DEFAULT_REQUEUE_TIME | " + " | ".join(order) + " |",
        "|---|---:|---:|---:|",
    ]
    for rq, s in by_rq.items():
        lines.append(f"| {rq} | " + " | ".join(f"{s[o]['total'] / 60:.1f}" for o in order) + " |")
    c0, c690 = commit_s(m, 0), commit_s(m, GROUPS)
    lines += [
        "",
        "Measured parts (committed JSON):",
        "",
        f"- scan CPU per full-grid file {m.scan_cpu_per_file * 1000:.1f} ms, "
        f"{m.scan_round_trips_per_file:.1f} round trip per file with {m.prefetch_depth} files "
        "in flight (`results.json`, sections 1-2); a shard of 180 files on "
        f"{a('scan_cores')} core: {FILES_PER_SHARD * m.scan_cpu_per_file / a('scan_cores'):.1f} s;",
        f"- planner CPU {m.plan_cpu_per_file * 1e6:.0f} us per file, init "
        f"{m.init_s:.1f} s, CLI process start-up {m.process_start:.1f} s (`results.json`, "
        "section 3);",
        *commit_lines(m, c0, c690),
        f"- Argo at {m.requeue} (`argo-overhead.json`, p50 of the chain): submit -> first pod "
        f"{m.first_pod:.2f} s, pod Succeeded -> next pod created {m.handoff:.2f} s, a trivial "
        f"pod's Running -> Succeeded (argoexec wait, log upload) {m.finish:.2f} s, pod "
        f"Succeeded -> node Succeeded {m.notice:.2f} s; a group step's resource pod Running ->"
        f" child created {m.child_created:.2f} s, child created -> its pod {m.child_first_pod:.2f}"
        f" s, child Succeeded -> the step's pod Succeeded {m.child_release:.2f} s (executor "
        "`RESOURCE_STATE_CHECK_INTERVAL` as deployed); pod creation paced at "
        f"{m.pod_rate:.0f}/s, burst {m.pod_burst:.0f} (chart `resourceRateLimit`).",
        "",
        "Assumptions:",
        "",
    ]
    for name, (value, why) in ASSUMPTIONS.items():
        lines.append(f"- `{name}` = {value:g}: {why};")
    lines += [
        "- the local controller's overheads hold on EKS (measured with small Workflows; a "
        "reconcile of the ~2,770-node build Workflow takes longer, not measured);",
        "- the committer commits groups in plan order, scans run in group order, one "
        "Icechunk commit per group; S3 sustains the request rate (one prefix per polygon);",
        "- commit CPU grows with the groups in the snapshot, not with the history's length "
        "(bench/results/README.md, Fan-in: requests per commit stay flat, the snapshot lists "
        "every group's manifests), so a new month's commits cost what the 690th did, plus "
        "what committing a group again adds;",
        "- in a big fan-out a finished pod waits for the next reconcile (at most one requeue "
        "time); the chain's handoff (about requeue minus the pod's own exit) is used for every "
        "pod, which is on the safe side;",
        "- plan lists the 690 polygon prefixes 16 at a time (`storage.LIST_CONCURRENCY`); a "
        "refresh with nothing to do runs no init, scan or commit pod.",
        "",
    ]
    return lines


def commit_lines(m: Measured, c0: float, c690: float) -> list[str]:
    if m.tip is not None:
        t = m.tip
        return [
            f"- one commit by the long-lived committer (`{TIP}`: {t['history']} groups committed "
            "back to back over S3 at 20 ms as `vcube commit-all` does, then one month more "
            f"everywhere and {t['n']} of them committed again by a new process; medians of the "
            f"last {t['n']} new and of the {t['n']} again): CPU {m.commit_cpu_first:.2f} s on a "
            f"fresh branch (`{COMMIT_NOW}`)"
            f", {t['new']['cpu_s']:.2f} s at the tip, {t['again']['cpu_s']:.2f} s for a group "
            f"committed again; {t['new']['round_trips']:.0f} and "
            f"{t['again']['round_trips']:.0f} sequential round trips: {c0:.2f} s on a fresh "
            f"branch, {c690:.2f} s after {GROUPS} commits, "
            f"{commit_s(m, GROUPS, rewrite=True):.2f} s for a group again;"
        ]
    if m.commit_source == COMMIT_NOW:
        fixed = (
            f"CPU {m.commit_cpu_first:.2f} s (`{COMMIT_NOW}`: median of its long-lived loop's "
            "commits, which commit as `vcube commit-all` does, less the history's share below) + "
        )
        trips = f"{m.commit_round_trips:.0f} sequential round trips (same file)"
    else:
        fixed = f"CPU {m.commit_cpu_first:.2f} s + "
        trips = (
            f"{m.commit_round_trips:.0f} sequential round trips (`fanin-manifest-concurrency.json`)"
        )
    again = (
        f"; a group committed again: {m.rewrite_cpu_extra * 1000:.0f} ms more CPU "
        "(`profile_commit_rewrite.json` less `profile_commit.json`, local disk, medians)"
        if m.rewrite_cpu_extra
        else ""
    )
    return [
        f"- one commit by the long-lived committer: {fixed}"
        f"{m.commit_cpu_slope * 1000:.2f} ms per earlier commit (least squares over the 670 "
        f"commits of `fanin-run1.json`, which reopened the repository for every commit) and "
        f"{trips}: {c0:.2f} s on a fresh branch, {c690:.2f} s after {GROUPS} commits{again};"
    ]


def section(results: Path) -> list[str]:
    return render(results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.atlas_model", description=__doc__)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    lines = render(args.results)
    if not lines:
        print(f"missing results in {args.results}")
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
