"""The fan-in at atlas size over S3 with 20 ms per request (issue 10): what one commit costs on a
fresh repo and deep into the history, and what concurrent writers on one branch achieve.

    python -m bench.fanin [--groups 690] [--files 720] [--edge 10] [--writers 1,5,25]
                          [--writer-commits 100] [--again N] [--out bench/results]

Everything runs against the local moto S3 server (tests/support/s3server.py) behind the latency
proxy (tests/support/faultproxy.py, 20 ms before every request), which counts the requests.

- **Commit cost.** A synthetic listing with the atlas's layout (G polygons x 4 injection months
  x F/4 months) is planned by vcube's planner; every shard gets a synthetic scan result whose
  refs are real refs of a small sample archive (cycled), with the atlas's 34 virtual variables
  and inline values: 720 files x 34 = 24,480 refs per group. The first and last `edge` groups
  are committed by `vcube commit` in a child process each (as an Argo pod does: wall time, CPU
  of all threads, peak RSS, S3 requests); the groups between them by one long-lived child process
  (as a single committer would: per-commit wall, CPU, resident memory and requests, the trend
  with history). With `--again N`, after the last edge group, one month more is planned in every
  series (F/4 + 1 months, the work area rewritten as `vcube plan` would, init growing the cube,
  one more file in every shard's result), and a new long-lived process commits the first N
  middle groups again at the tip of the whole history: what each commit of a new month costs.
- **Concurrent writers** (design b). For N writers, a fresh repo; N child processes each commit
  their own groups to the same branch with vcube's commit code (rebase on conflict as `main` does
  when this runs); commits per minute and rebase attempts are counted in each writer.

The grid of the sample files is small (48x40): the refs' count, the manifests and the inline
values a commit writes do not depend on it (one chunk per variable per file, like the atlas).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import common
from bench.commit_scale import prepare_work_area, write_shard_results
from bench.scan_s3 import round_trips
from tests.support.faultproxy import FaultProxy, ProxyStats, RequestRecord
from tests.support.s3server import REGION, S3Server, dummy_aws_session
from vcube import commit, template
from vcube.places import Places
from vcube.plan import Plan, PlannedFile
from vcube.repo import history
from vcube.spec import DatasetSpec

BUCKET = "fanin"
LATENCY = 0.02
VCUBE = str(Path(sys.executable).parent / "vcube")


def _opts(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "region": REGION, "force_path_style": True, "allow_http": True}


def _spec(arch: common.Archive, label: str, endpoint: str) -> DatasetSpec:
    return common.atlas_spec(
        str(arch.root),
        f"s3://{BUCKET}/{label}",
        target_storage=_opts(endpoint),
        work=f"s3://{BUCKET}/work",
    )


def _write_spec(spec: DatasetSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return path


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 10 samples, p95 is the largest."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return float(s[k])


def _summary(xs: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


# --- setup: plan, template, init, shard results -------------------------------------------------


def prepare(
    direct: DatasetSpec, *, groups: int, files: int, only: list[str] | None = None
) -> tuple[Plan, template.Template, PlannedFile]:
    """Plan the synthetic listing and write the plan, the template and the shard results (of
    the groups `only`, else all) into the shared work area (straight to the server: setup, not
    measured). No per-shard lists: the commits measured here do not read them."""
    work = prepare_work_area(direct, polygons=groups, months=files // 4, shard_lists=False)
    t0 = time.perf_counter()
    shards = [s for g in only for s in work.plan.groups[g]] if only else list(work.shard_files)

    def one(sid: str) -> None:
        write_shard_results(direct, work.tmpl, work.plan, {sid: work.shard_files[sid]}, work.real)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, shards))
    common.log(f"fanin: {len(shards)} shard results written in {time.perf_counter() - t0:.0f} s")
    return work.plan, work.tmpl, work.first


# --- measuring child processes ------------------------------------------------------------------


def _requests(proxy: FaultProxy, t0: float, t1: float) -> list[RequestRecord]:
    return [r for r in proxy.stats.records if t0 <= r.started <= t1]


def in_flight_s(recs: list[RequestRecord]) -> float:
    """Time during which at least one request was in flight: what a commit waits on S3 when
    nothing else overlaps it. Unlike `round_trips`, which merges requests that overlap, it sees
    the waves of a bounded number of concurrent requests (34 manifests 16 at a time)."""
    total, end = 0.0, -1.0
    for r in sorted(recs, key=lambda r: r.started):
        if r.finished <= end:
            continue
        total += r.finished - max(r.started, end)
        end = r.finished
    return total


def _kind(target: str) -> str:
    """The object kind of a request path (Icechunk's manifests/, snapshots/, ...; scans/)."""
    parts = target.split("?", maxsplit=1)[0].strip("/").split("/")
    return parts[2] if len(parts) > 3 else "(" + (parts[-1] if parts else "") + ")"


def _by_kind(recs: list[RequestRecord]) -> dict[str, int]:
    """Requests by method and object kind."""
    return dict(Counter(f"{r.method} {_kind(r.target)}" for r in recs))


class Child:
    """A command run through `bench.rusage` (so its peak RSS is its own), output captured."""

    def __init__(self, cmd: list[str], tmp: Path) -> None:
        fd, name = tempfile.mkstemp(suffix=".json", dir=tmp)
        os.close(fd)
        self.rusage_path = Path(name)
        self.t0 = time.monotonic()
        self.what = " ".join(cmd[-4:])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.rusage", name, "--", *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=common.ROOT,
        )
        self._err = b""
        self._drain = threading.Thread(target=self._read_err, daemon=True)
        self._drain.start()

    def _read_err(self) -> None:
        self._err = self.proc.stderr.read() if self.proc.stderr else b""

    def wait(self) -> tuple[str, dict[str, float]]:
        """(stdout, {wall_s, cpu_s, peak_rss_mb}); raises with stderr's tail on failure."""
        out_b = self.proc.stdout.read() if self.proc.stdout else b""
        code = self.proc.wait()
        self._drain.join()
        self.t1 = time.monotonic()
        if code != 0:
            raise RuntimeError(f"{self.what} failed: {self._err.decode()[-3000:]}")
        ru = json.loads(self.rusage_path.read_text())
        return out_b.decode(), ru


def run_child(args: list[str], tmp: Path) -> tuple[str, dict[str, float]]:
    """Run `python -m bench.fanin ...` in a child; its stdout and its rusage (CPU, peak RSS)."""
    return Child([sys.executable, "-m", "bench.fanin", *args], tmp).wait()


# --- child entry points -------------------------------------------------------------------------


def _commit_loop(places: Places, groups: list[str]) -> list[dict[str, Any]]:
    """Commit groups one after another in this process as `vcube commit-all` does (one Places,
    so one open Repository, the plan and the template read once, then `commit.commit_groups`).
    Per commit: wall, CPU, resident memory after it, tries (Icechunk's commit and rebase are
    wrapped to count them)."""
    import icechunk

    from vcube import workarea

    counts = {"commit_calls": 0, "conflicts": 0, "rebases": 0}
    orig_commit, orig_rebase = icechunk.Session.commit, icechunk.Session.rebase

    def counted_commit(self: Any, *a: Any, **k: Any) -> Any:
        counts["commit_calls"] += 1
        try:
            return orig_commit(self, *a, **k)
        except icechunk.ConflictError:
            counts["conflicts"] += 1
            raise

    def counted_rebase(self: Any, *a: Any, **k: Any) -> Any:
        counts["rebases"] += 1
        return orig_rebase(self, *a, **k)

    icechunk.Session.commit = counted_commit  # type: ignore[method-assign]
    icechunk.Session.rebase = counted_rebase  # type: ignore[method-assign]
    plan = workarea.load_plan(places.work, places.spec)
    tmpl = template.load_template(places.work)
    out: list[dict[str, Any]] = []
    before = dict(counts)
    c0, t0, w0 = time.process_time(), time.perf_counter(), time.monotonic()
    # As commit-all: back to back, the next group's refs built while one commits, so a
    # commit's figures are the interval between two results (the prepare of the next
    # group included).
    for g, summary, err in commit.commit_groups(places, plan, tmpl, groups):
        c1, t1, w1 = time.process_time(), time.perf_counter(), time.monotonic()
        res = summary or {}
        out.append(
            {
                "group": g,
                "wall_s": t1 - t0,
                "cpu_s": c1 - c0,
                "start": w0,
                "end": w1,
                "changed": res.get("changed"),
                "refs": res.get("refs"),
                # a writer that gives up is a result, not a crash of the bench
                "error": None if err is None else f"{type(err).__name__}: {err}"[:300],
                "again": False,
                "rss_mb": common.rss_mb(),
                **{k: counts[k] - before[k] for k in counts},
            }
        )
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
        before = dict(counts)
        c0, t0, w0 = c1, t1, w1
    return out


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["loop"])
    ap.add_argument("spec")
    ap.add_argument("--groups", required=True)
    ap.add_argument("--ready-dir", help="say ready here, then wait for the file `go`")
    a = ap.parse_args(argv)
    os.environ.setdefault("ICECHUNK_LOG", "error")
    from vcube import spec as spec_mod

    places = Places.of(spec_mod.load_spec(a.spec))
    if a.ready_dir:
        places.repo()  # opened before the start, like a running pod
        ready = Path(a.ready_dir)
        (ready / str(os.getpid())).touch()
        while not (ready / "go").exists():
            time.sleep(0.01)
    res = _commit_loop(places, a.groups.split(","))
    print(json.dumps(res))


# --- the measurements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What every measurement works on: the archive, the S3 server and the latency proxy in
    front of it, the synthetic plan with its template and template file, a scratch directory."""

    arch: common.Archive
    server: S3Server
    proxy: FaultProxy
    plan: Plan
    tmpl: template.Template
    pf: PlannedFile
    tmp: Path

    def fresh_cube(self, label: str) -> tuple[DatasetSpec, Path]:
        """A new cube `label`, initialised straight on the server: its spec, and the file of
        the same spec through the proxy (what the measured commits use)."""
        direct = _spec(self.arch, label, self.server.endpoint)
        via = _spec(self.arch, label, self.proxy.endpoint)
        commit.init_cube(Places.of(direct), self.plan, self.tmpl, self.pf)
        return direct, _write_spec(via, self.tmp / f"{label}.yaml")


def commit_cost(
    s: Setup, *, edge: int, upto: int, fill_direct: bool = False, again: int = 0
) -> dict[str, Any]:
    proxy, tmp = s.proxy, s.tmp
    direct, path = s.fresh_cube("cost")
    groups = list(s.plan.groups)[:upto]
    first, middle, last = groups[:edge], groups[edge:-edge], groups[-edge:]
    res: dict[str, Any] = {"groups_committed": len(groups), "edge": edge}
    res["fresh"] = _cli_series(path, first, proxy, tmp)
    t0 = time.monotonic()
    if middle:
        fill = path if not fill_direct else _write_spec(direct, tmp / "cost-direct.yaml")
        cmd = ["loop", str(fill), "--groups", ",".join(middle)]
        out, ru = run_child(cmd, tmp)
        loop = json.loads(out.strip().splitlines()[-1])
        for r in loop:
            recs = _requests(proxy, r["start"], r["end"])
            r["requests"] = len(recs)
            r["round_trips"] = round_trips(recs)
            r["in_flight_s"] = in_flight_s(recs)
            r["by_kind"] = _by_kind(recs)
        res["one_process"] = {"commits": loop, "rusage": ru, "through_proxy": not fill_direct}
    res["middle_wall_s"] = time.monotonic() - t0
    res["tip"] = _cli_series(path, last, proxy, tmp)
    res["history_commits_before_tip"] = 1 + len(first) + len(middle)
    if again and middle:
        res["new_month"] = _new_month(s, direct, path, middle[:again])
        # (as before: the re-commits follow the loop's own, flagged `again`)
        res["one_process"]["commits"] += res["new_month"]["commits"]
    return res


def _new_month(s: Setup, direct: DatasetSpec, path: Path, groups: list[str]) -> dict[str, Any]:
    """One more month in every series, as a refresh finds it: plan and init (straight to the
    server: setup), the shard results of `groups` with their one new file each, then one new
    long-lived process (commit-all in the refresh's own pod) commits `groups` through the
    proxy. Its rows are flagged `again`."""
    files = s.plan.n_files // len(s.plan.groups) + 4
    plan, tmpl, pf = prepare(direct, groups=len(s.plan.groups), files=files, only=groups)
    commit.init_cube(Places.of(direct), plan, tmpl, pf)
    out, ru = run_child(["loop", str(path), "--groups", ",".join(groups)], s.tmp)
    rows = json.loads(out.strip().splitlines()[-1])
    for r in rows:
        recs = _requests(s.proxy, r["start"], r["end"])
        r["requests"] = len(recs)
        r["round_trips"] = round_trips(recs)
        r["in_flight_s"] = in_flight_s(recs)
        r["by_kind"] = _by_kind(recs)
        r["again"] = True
    return {"files_per_group": files, "commits": rows, "rusage": ru}


def _cli_series(path: Path, groups: list[str], proxy: FaultProxy, tmp: Path) -> dict[str, Any]:
    rows = []
    for g in groups:
        child = Child([VCUBE, "commit", str(path), "--group", g], tmp)
        out, ru = child.wait()
        summary = json.loads(out)
        recs = _requests(proxy, child.t0, child.t1)
        rows.append(
            {
                "group": g,
                "wall_s": ru["wall_s"],
                "commit_s": summary["seconds"],
                "cpu_s": ru["cpu_s"],
                "peak_rss_mb": ru["peak_rss_mb"],
                "refs": summary["refs"],
                "changed": summary["changed"],
                "requests": len(recs),
                "round_trips": round_trips(recs),
                "by_method": dict(ProxyStats(recs).by_method),
                "by_kind": _by_kind(recs),
            }
        )
        common.log(
            f"fanin: vcube commit {g}: {rows[-1]['wall_s']:.2f} s wall "
            f"({summary['seconds']:.2f} s in commit), {rows[-1]['cpu_s']:.2f} s CPU, "
            f"{rows[-1]['peak_rss_mb']:.0f} MB, {len(recs)} requests"
        )
    return {
        "commits": rows,
        "wall_s": _summary([r["wall_s"] for r in rows]),
        "commit_s": _summary([r["commit_s"] for r in rows]),
        "cpu_s": _summary([r["cpu_s"] for r in rows]),
        "peak_rss_mb": _summary([r["peak_rss_mb"] for r in rows]),
        "requests": _summary([float(r["requests"]) for r in rows]),
        "round_trips": _summary([float(r["round_trips"]) for r in rows]),
    }


def writers(s: Setup, *, n: int, commits: int) -> dict[str, Any]:
    """N writers committing disjoint groups to one branch of a fresh repo, all at once."""
    tmp = s.tmp
    label = f"writers-{n}"
    direct, path = s.fresh_cube(label)
    groups = list(s.plan.groups)[:commits]
    mine = [groups[i::n] for i in range(n)]
    ready = tmp / f"{label}.ready"
    ready.mkdir()
    procs = [
        Child(
            [
                sys.executable,
                "-m",
                "bench.fanin",
                "loop",
                str(path),
                "--groups",
                ",".join(gs),
                "--ready-dir",
                str(ready),
            ],
            tmp,
        )
        for gs in mine
        if gs
    ]
    while len(list(ready.iterdir())) < len(procs):  # every writer imported, repo open
        if any(p.proc.poll() is not None for p in procs):
            raise RuntimeError("a writer exited before the start")
        time.sleep(0.1)
    (ready / "go").touch()
    rows: list[dict[str, Any]] = []
    cpu = 0.0
    peak = 0.0
    for p in procs:
        out, ru = p.wait()
        rows += json.loads(out.strip().splitlines()[-1])
        cpu += ru["cpu_s"]
        peak = max(peak, ru["peak_rss_mb"])
    ok = [r for r in rows if r["error"] is None]
    t_first = min(r["start"] for r in rows)
    t_last = max(r["end"] for r in rows)
    span = t_last - t_first
    landed = [r for r in ok if r["changed"]]
    hist = history(Places.of(direct).repo(), direct.target.branch)
    res = {
        "writers": n,
        "groups": len(rows),
        "committed": len(landed),
        "failed": [r for r in rows if r["error"]],
        "in_history": len(hist.groups),
        "span_s": span,
        "commits_per_min": len(landed) / span * 60 if span else 0.0,
        "conflicts": sum(r["conflicts"] for r in rows),
        "rebases": sum(r["rebases"] for r in rows),
        "commit_calls": sum(r["commit_calls"] for r in rows),
        "rebases_per_commit": _summary([float(r["rebases"]) for r in ok]) if ok else {},
        "max_rebases_one_commit": max((r["rebases"] for r in rows), default=0),
        "commit_wall_s": _summary([r["wall_s"] for r in ok]) if ok else {},
        "cpu_s_all_writers": cpu,
        "cpu_s_per_commit": cpu / max(1, len(landed)),
        "peak_rss_mb_one_writer": peak,
        "commits": rows,
    }
    common.log(
        f"fanin: {n} writers: {len(landed)} commits in {span:.0f} s = "
        f"{res['commits_per_min']:.1f}/min, {res['rebases']} rebases, "
        f"{len(res['failed'])} failed, {res['in_history']} groups in the history"
    )
    return res


def _command(args: list[str]) -> str:
    """The command line as run, quoted, with the output directory (a machine path) as DIR."""
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a == "--out":
            out[i + 1] = "DIR"
    return shlex.join(["python", "-m", "bench.fanin", *out])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=690, help="groups planned and committed")
    ap.add_argument("--files", type=int, default=720, help="files per group (a multiple of 4)")
    ap.add_argument("--edge", type=int, default=10, help="CLI commits at the start and the tip")
    ap.add_argument("--writers", default="1,5,25")
    ap.add_argument("--writer-commits", type=int, default=100)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument(
        "--again",
        type=int,
        default=0,
        help="then one month more everywhere: its first N middle groups committed again",
    )
    ap.add_argument(
        "--fill-direct",
        action="store_true",
        help="commit the history between the first and last edge groups without the proxy",
    )
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    arch = common.ensure_archive("fanin-archive", polygons=1, dates=4, months=2, grid=(48, 40))
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanin-"))  # dummy_aws_session's config files
    for name in ("config", "credentials"):  # empty: nothing from ~/.aws, and no warning
        (tmp / name).touch()
    os.environ.setdefault("ICECHUNK_LOG", "error")
    results: dict[str, Any] = {
        "machine": common.machine(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code": common.code_version(),
        "latency_s": LATENCY,
        "files_per_group": args.files,
        "groups": args.groups,
        "command": _command(argv if argv is not None else sys.argv[1:]),
    }
    out_path = args.out / "fanin.json"
    try:
        # Dummy keys for the local server, this run only.
        with dummy_aws_session(tmp), S3Server() as server:
            server.create_bucket(BUCKET)
            with FaultProxy("127.0.0.1", server.port, latency=LATENCY, lifetime=6 * 3600) as proxy:
                direct = _spec(arch, "cost", server.endpoint)
                plan, tmpl, pf = prepare(direct, groups=args.groups, files=args.files)
                results["virtual_vars"] = len(tmpl.virtual_varying())
                results["inline_varying"] = [v.name for v in tmpl.inline_varying()]
                setup = Setup(arch, server, proxy, plan, tmpl, pf, tmp)
                for n in [int(x) for x in args.writers.split(",") if x]:
                    results[f"writers_{n}"] = writers(setup, n=n, commits=args.writer_commits)
                    common.dump(out_path, results)
                if not args.skip_cost:
                    results["cost"] = commit_cost(
                        setup,
                        edge=args.edge,
                        upto=args.groups,
                        fill_direct=args.fill_direct,
                        again=args.again,
                    )
    finally:
        results["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        results["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        common.dump(out_path, results)
    common.log(f"fanin: wrote {out_path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "loop":
        child_main(sys.argv[1:])
    else:
        main()
