"""Profile one commit at the tip of the atlas-size history that `commit_scale` built.

    python -m bench.profile_commit [--out DIR]

Re-commits the last group with a changed plan digest (so `commit_group` does the full work:
history, shard results, refs, inline values, commit) and writes a pyinstrument profile, plus
the time of reading the branch history alone, next to the results. Run after `bench.run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from bench import common
from vcube import commit, spec, template, workarea
from vcube.places import Places
from vcube.repo import history


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    args = ap.parse_args(argv)
    from pyinstrument import Profiler

    sp = spec.load_spec(common.CACHE / "atlas-cube" / "spec.yaml")
    plan = workarea.load_plan(Places.of(sp).work, sp)
    tmpl = template.load_template(Places.of(sp).work)
    repo = Places.of(sp).repo()
    hist_s = []
    for _ in range(5):
        t0 = time.perf_counter()
        h = history(repo, sp.target.branch)
        hist_s.append(time.perf_counter() - t0)
    group = list(plan.groups)[-1]
    changed = dataclasses.replace(plan, spec_digest=plan.spec_digest + "-profile")
    prof = Profiler(interval=0.001)
    prof.start()
    t0 = time.perf_counter()
    out = commit.commit_group(Places.of(sp), changed, tmpl, group)
    took = time.perf_counter() - t0
    prof.stop()
    head = (
        f"# commit_group({group!r}) at the tip of {len(h.groups)} group commits: {took:.2f} s, "
        f"{out['refs']} refs; reading the branch history alone: "
        f"{common.median(hist_s):.3f} s (median of 5)\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "profile_commit.txt"
    path.write_text(head + prof.output_text(unicode=False, color=False, show_all=False))
    common.log(f"wrote {path}")


if __name__ == "__main__":
    main()
