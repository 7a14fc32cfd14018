"""Profile one group's commit at the tip of an atlas-size history (690 groups x 720 files).

    python -m bench.profile_commit [--groups 690] [--files 720] [--reps 3] [--base DIR]
                                   [--out bench/results]

On local disk (CPU, not S3 round trips: `bench.fanin` counts those): the first run plans a
synthetic listing with the atlas's layout, writes every shard's result (real refs of a small
sample archive, cycled; as `bench.fanin` does) and commits all groups but the last one in one
process, as the committer does (`--base`, default build/bench/commit-tip/; reused afterwards,
its per-commit CPU in `history.json`). Then, `--reps` times on a fresh copy of that repository,
the last group is committed with `commit.commit_group` (plan and template loaded once, as
`vcube commit-all` does): CPU (all threads, so Icechunk's too) per rep and per part of the
commit, medians over the reps, and a pyinstrument profile (wall time) of the first rep.
Writes `profile_commit.txt` and `profile_commit.json` to `--out`. With `--rewrite`, the first
group is committed again, written whole, as if one of its files had changed:
`profile_commit_rewrite.txt` and `.json` (a new month sets only the new files' refs: `bench.fanin
--again` measures that).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench import common
from bench.commit_scale import prepare_work_area, write_shard_results
from vcube import commit, spec, template, workarea
from vcube.places import Places
from vcube.repo import history


def build_history(base: Path, *, groups: int, files: int) -> None:
    """Plan, init, every shard's result, and all groups but the last committed in this process."""
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    arch = common.ensure_archive("fanin-archive", polygons=1, dates=4, months=2, grid=(48, 40))
    sp = common.atlas_spec(str(arch.root), str(base / "repo"), work=str(base / "work"))
    (base / "spec.yaml").write_text(yaml.safe_dump(sp.model_dump(mode="json"), sort_keys=False))
    work = prepare_work_area(sp, polygons=groups, months=files // 4, shard_lists=False)
    places = Places.of(sp)
    commit.init_cube(places, work.plan, work.tmpl, work.first)
    write_shard_results(sp, work.tmpl, work.plan, work.shard_files, work.real)
    rows = []
    for i, g in enumerate(list(work.plan.groups)[:-1]):
        c0, t0 = time.process_time(), time.perf_counter()
        out = commit.commit_group(places, work.plan, work.tmpl, g)
        rows.append(
            {
                "group": g,
                "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
                "refs": out["refs"],
            }
        )
        if i % 50 == 0:
            common.log(f"profile_commit: history: {g}: {rows[-1]['cpu_s']:.2f} s CPU")
    common.dump(base / "history.json", {"code": common.code_version(), "commits": rows})


# The parts of a commit, timed by CPU of the process: (label, module, attribute).
PARTS = [
    ("history (branch ancestry)", "vcube.commit", "history"),
    ("build_group_refs (all)", "vcube.commit", "build_group_refs"),
    ("  load_group_results (read + decode)", "vcube.commit", "load_group_results"),
    ("writable_session", "icechunk.repository", "Repository.writable_session"),
    ("_write_group (all)", "vcube.commit", "_write_group"),
    ("  set_virtual_refs (Icechunk)", "icechunk.store", "IcechunkStore.set_virtual_refs"),
    ("  _write_inline", "vcube.commit", "_write_inline"),
    ("  _delete_stale_refs", "vcube.commit", "_delete_stale_refs"),
    ("Session.commit (Icechunk)", "icechunk.session", "Session.commit"),
]


class PartTimer:
    """Wraps the PARTS' functions to add up the process CPU spent inside each."""

    def __init__(self) -> None:
        import importlib

        self.cpu: dict[str, float] = {label: 0.0 for label, _, _ in PARTS}
        self._orig: list[tuple[Any, str, Any]] = []
        for label, mod, attr in PARTS:
            owner: Any = importlib.import_module(mod)
            *path, name = attr.split(".")
            for p in path:
                owner = getattr(owner, p)
            fn = getattr(owner, name)
            self._orig.append((owner, name, fn))
            setattr(owner, name, self._wrap(label, fn))

    def _wrap(self, label: str, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            c0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.cpu[label] += time.process_time() - c0

        return timed

    def restore(self) -> None:
        for owner, name, fn in reversed(self._orig):
            setattr(owner, name, fn)

    def parts(self, total: float) -> dict[str, float]:
        out: dict[str, float] = {}
        c = self.cpu
        for label, v in c.items():
            out[label] = v
            if label == "  load_group_results (read + decode)":
                out["  refs built in Python (the rest)"] = c["build_group_refs (all)"] - v
            if label == "  _delete_stale_refs":
                parts = ("  set_virtual_refs (Icechunk)", "  _write_inline", label)
                inner = sum(c[k] for k in parts)
                out["  the rest of _write_group"] = c["_write_group (all)"] - inner
        top = sum(v for k, v in out.items() if not k.startswith(" "))
        out["rest (digests, checks, Python around)"] = total - top
        return out


def tip_spec(base: Path, repo: Path) -> spec.DatasetSpec:
    """The spec of `base` with its repository at `repo` (a copy; the work area is shared)."""
    raw = yaml.safe_load((base / "spec.yaml").read_text())
    raw["target"]["repo"] = str(repo)
    return spec.DatasetSpec.model_validate(raw)


def commit_at_tip(
    base: Path, scratch: Path, profiler: Any = None, *, rewrite: bool = False
) -> dict[str, Any]:
    """Commit the last group on a copy of the history; with `rewrite`, commit the first group
    again as if its inputs had changed (what a new month does to every group: the group's
    manifests are replaced, its stale refs looked for)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(base / "repo", scratch)
    sp = tip_spec(base, scratch)
    places = Places.of(sp)
    plan, tmpl = workarea.load_plan(places.work, sp), template.load_template(places.work)
    tmpl.digest  # noqa: B018 - computed once per process, as in `vcube commit-all`
    repo = places.repo()
    before = len(history(repo, sp.target.branch).groups)
    group = list(plan.groups)[0 if rewrite else -1]
    undo = common.commit_again_whole("-changed") if rewrite else None
    timer = None if profiler else PartTimer()
    if profiler:
        profiler.start()
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        out = commit.commit_group(places, plan, tmpl, group)
    finally:
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if profiler:
            profiler.stop()
        if timer:
            timer.restore()
        if undo:
            undo()
    if not out["changed"]:
        raise RuntimeError(f"group {group} was committed already in {base}")
    parts = timer.parts(cpu) if timer else None
    return {
        "group": group,
        "groups_before": before,
        "cpu_s": cpu,
        "wall_s": wall,
        "parts": parts,
        **out,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=690)
    ap.add_argument("--files", type=int, default=720, help="files per group (a multiple of 4)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--base", type=Path, default=common.CACHE / "commit-tip")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    ap.add_argument(
        "--rewrite",
        action="store_true",
        help="commit the first group again with changed inputs (profile_commit_rewrite.*)",
    )
    args = ap.parse_args(argv)
    from pyinstrument import Profiler

    os.environ.setdefault("ICECHUNK_LOG", "error")
    if not (args.base / "history.json").exists():
        common.log(f"profile_commit: building the history in {args.base} (once)")
        build_history(args.base, groups=args.groups, files=args.files)
    load0 = os.getloadavg()[0]
    scratch = args.base.with_name(args.base.name + "-scratch")
    prof = Profiler(interval=0.001)
    rw = args.rewrite
    profiled = commit_at_tip(args.base, scratch, prof, rewrite=rw)  # not counted: the profiler's
    runs = [commit_at_tip(args.base, scratch, rewrite=rw) for _ in range(args.reps)]
    shutil.rmtree(scratch, ignore_errors=True)
    load1 = os.getloadavg()[0]
    cpu = [r["cpu_s"] for r in runs]
    table = "\n".join(
        f"#   {label:48s} {common.median([r['parts'][label] for r in runs]) * 1000:7.1f} ms"
        for label in runs[0]["parts"]
    )
    given = list(argv if argv is not None else sys.argv[1:])
    for i, opt in enumerate(given[:-1]):
        if opt in ("--base", "--out"):
            given[i + 1] = "DIR"  # a machine path
    cmd = " ".join(["python -m bench.profile_commit", *given])
    head = (
        f"# `{cmd}` (code {common.code_version()}; {time.strftime('%Y-%m-%dT%H:%M:%SZ')})\n"
        f"# commit_group({runs[0]['group']!r}"
        f"{', again with changed inputs' if rw else ''}) on local disk at the tip of "
        f"{runs[0]['groups_before']} group commits, {runs[0]['refs']} refs: CPU (all threads) "
        f"{' / '.join(f'{c:.3f}' for c in cpu)} s (median {common.median(cpu):.3f}), wall "
        f"{' / '.join(f'{r["wall_s"]:.2f}' for r in runs)} s; load average (1 min) "
        f"{load0:.1f} before, {load1:.1f} after, on 2 shared cores.\n"
        f"# CPU per part (median of the {len(runs)} runs; indented: inside the one above):\n"
        f"{table}\n#\n# pyinstrument (wall time, so inflated by the load) of one more run:\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    name = "profile_commit_rewrite" if rw else "profile_commit"
    path = args.out / f"{name}.txt"
    path.write_text(head + prof.output_text(unicode=False, color=False, show_all=False))
    common.dump(
        args.out / f"{name}.json",
        {
            "command": cmd,
            "code": common.code_version(),
            "load_avg": [load0, load1],
            "runs": runs,
            "profiled_run": profiled,
        },
    )
    common.log(f"wrote {path}")
    print(json.dumps({"cpu_s": cpu}))


if __name__ == "__main__":
    main()
