"""What a second core gives the committer (issue 10): a new month's commits at the tip of an
atlas-size history, on one core and on two, one group after another or pipelined.

    python -m bench.committer_cores [--groups 40] [--rounds 4] [--base DIR] [--out bench/results]

On local disk, so the time is CPU and the local disk, no S3 latency (`bench.fanin` counts round
trips). Uses `bench.profile_commit`'s history (689 group commits of 720 files x 34 virtual
variables; built once in `--base`). Each configuration runs in its own process, pinned to its
cores from its start (`os.sched_setaffinity`, so Icechunk's threads are pinned too), on a fresh
copy of that repository (nothing in Icechunk's caches, as in a committer pod), and commits the
first `--groups` groups again, each written whole (`common.commit_again_whole`; a new month
sets only the new files' refs, `bench.fanin --again` measures that):
- `one-by-one`: `commit.commit_group` per group (no second thread);
- `pipelined`: `commit.commit_groups`, what commit-all runs (the next group's results read,
  refs built and manifests fetched in a second thread while one commits; the branch history
  read once).
Per configuration: wall and CPU per commit (medians over the groups, the first left out) and the
ratios to one-by-one on one core. Configurations alternate within each round and their order
rotates between rounds, so load drifts and whatever one run leaves behind hit them alike.
Writes `committer-cores.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.profile_commit import build_history, tip_spec

CONFIGS = [("one-by-one", 1), ("pipelined", 1), ("one-by-one", 2), ("pipelined", 2)]


def child(mode: str, cores: int, groups: int, base: Path, scratch: Path) -> dict[str, Any]:
    """One configuration in this process: the commits' wall and CPU, per commit."""
    from vcube import commit, template, workarea
    from vcube.places import Places

    if len(os.sched_getaffinity(0)) != cores:
        raise SystemExit(f"committer_cores: not pinned to {cores} cores")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(base / "repo", scratch)
    sp = tip_spec(base, scratch)
    places = Places.of(sp)
    plan, tmpl = workarea.load_plan(places.work, sp), template.load_template(places.work)
    tmpl.digest  # noqa: B018 - computed once per process, as in `vcube commit-all`
    places.repo()
    todo = list(plan.groups)[:groups]
    common.commit_again_whole("-new-month")
    rows: list[dict[str, float]] = []
    c0, t0 = time.process_time(), time.perf_counter()
    if mode == "pipelined":
        results = commit.commit_groups(places, plan, tmpl, todo)
    else:
        results = ((g, commit.commit_group(places, plan, tmpl, g), None) for g in todo)
    for g, res, err in results:
        if err is not None or res is None or not res["changed"]:
            raise SystemExit(f"committer_cores: group {g} not committed: {err}")
        c1, t1 = time.process_time(), time.perf_counter()
        rows.append({"wall_s": t1 - t0, "cpu_s": c1 - c0})
        c0, t0 = c1, t1
    shutil.rmtree(scratch, ignore_errors=True)
    return {"mode": mode, "cores": cores, "commits": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=40, help="groups committed again per run")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--base", type=Path, default=common.CACHE / "commit-tip")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CORES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("ICECHUNK_LOG", "error")
    scratch = args.base.with_name(args.base.name + "-cores")
    if args.child:
        out = child(args.child[0], int(args.child[1]), args.groups, args.base, scratch)
        print(json.dumps(out))
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("committer_cores: needs 2 cores")
    if not (args.base / "history.json").exists():
        common.log(f"committer_cores: building the history in {args.base} (once)")
        build_history(args.base, groups=690, files=720)
    load0 = os.getloadavg()[0]
    runs: dict[str, list[dict[str, float]]] = {f"{m}, {c} core(s)": [] for m, c in CONFIGS}
    for r in range(args.rounds):
        for mode, cores in CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]:
            cmd = [sys.executable, "-m", "bench.committer_cores", "--child", mode, str(cores)]
            cmd += ["--groups", str(args.groups), "--base", str(args.base)]
            pin = sorted(os.sched_getaffinity(0))[:cores]
            # Pinned from its start, so every thread it makes (Icechunk's too) inherits it.
            done = subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                text=True,
                preexec_fn=lambda pin=pin: os.sched_setaffinity(0, pin),  # type: ignore[misc]
            )
            rows = json.loads(done.stdout.strip().splitlines()[-1])["commits"][1:]
            runs[f"{mode}, {cores} core(s)"] += rows
            med = common.median([x["wall_s"] for x in rows])
            common.log(f"committer_cores: round {r + 1}: {mode}, {cores} core(s): {med:.3f} s")
    summary = {
        label: {
            "wall_s": common.median([x["wall_s"] for x in rows]),
            "cpu_s": common.median([x["cpu_s"] for x in rows]),
            "commits": len(rows),
        }
        for label, rows in runs.items()
    }
    ref = summary["one-by-one, 1 core(s)"]["wall_s"]
    for s in summary.values():
        s["wall_vs_one_by_one_1_core"] = s["wall_s"] / ref
    given = [("DIR" if a in {str(args.base), str(args.out)} else a) for a in (argv or sys.argv[1:])]
    res = {
        "command": " ".join(["python -m bench.committer_cores", *given]),
        "code": common.code_version(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_start": load0,
        "load_average_end": os.getloadavg()[0],
        "groups_again_per_run": args.groups,
        "rounds": args.rounds,
        "summary": summary,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    common.dump(args.out / "committer-cores.json", res)
    for label, s in summary.items():
        print(
            f"{label:28s} wall {s['wall_s']:.3f} s  CPU {s['cpu_s']:.3f} s  "
            f"x{s['wall_vs_one_by_one_1_core']:.2f}"
        )


if __name__ == "__main__":
    main()
