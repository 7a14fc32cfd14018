"""Shared pieces of the benchmarks: the cached full-grid files, specs, timing helpers.

Every benchmark measures its competitors side by side in one process run on the same files,
interleaving them repetition by repetition, so that load from other processes on this shared
machine hits every method alike; the figures that matter are ratios and counts.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vcube import storage, template
from vcube.places import Places
from vcube.plan import PlannedFile, build_plan
from vcube.spec import DatasetSpec

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "bench"  # gitignored: generated files, repos, work areas
RESULTS = ROOT / "bench" / "results"
SAMPLE_SPEC = ROOT / "datasets" / "sample.yaml"

FULL_GRID = (384, 320)
LEVELS = 60


@dataclass(frozen=True)
class Archive:
    """A directory of generated atlas-like files and the shape it was generated with."""

    root: Path
    polygons: int
    dates: int
    months: int
    grid: tuple[int, int]

    @property
    def n_files(self) -> int:
        return self.polygons * self.dates * self.months

    def file_keys(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*.nc"))


def ensure_archive(
    name: str, *, polygons: int, dates: int, months: int, grid: tuple[int, int] = FULL_GRID
) -> Archive:
    """Generate the files once with `vcube sample` (it skips files that are already current)."""
    root = CACHE / name
    arch = Archive(root, polygons, dates, months, grid)
    if root.exists() and len(arch.file_keys()) >= arch.n_files:
        return arch
    log(f"generating {arch.n_files} files at {grid[0]}x{grid[1]} into {root} (once)")
    subprocess.run(
        [
            str(Path(sys.executable).parent / "vcube"),
            "sample",
            str(root),
            "--polygons",
            str(polygons),
            "--dates",
            str(dates),
            "--months",
            str(months),
            "--grid",
            f"{grid[0]}x{grid[1]}",
            "--levels",
            str(LEVELS),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return arch


def atlas_spec(
    source_root: str,
    repo: str,
    *,
    source_storage: dict[str, Any] | None = None,
    target_storage: dict[str, Any] | None = None,
    work: str | None = None,
) -> DatasetSpec:
    """The sample spec (atlas layout) pointed at another source and target."""
    raw = yaml.safe_load(SAMPLE_SPEC.read_text())
    raw["name"] = "bench"
    raw["source"]["root"] = source_root
    raw["source"]["storage"] = source_storage or {}
    raw["target"]["repo"] = repo
    raw["target"]["storage"] = target_storage or {}
    if work is not None:
        raw["target"]["work"] = work
    return DatasetSpec.model_validate(raw)


def derive(spec: DatasetSpec, key: str) -> template.Template:
    return template.derive_template(Places.of(spec).source, spec, key)


def loadable_variables(tmpl: template.Template) -> list[str]:
    """What the atlas keeps inline: the spec's inline variables, dim coords and the scalars."""
    return sorted(v.name for v in tmpl.variables.values() if v.kind == "inline")


def plan_files(spec: DatasetSpec) -> dict[str, list[PlannedFile]]:
    src = Places.of(spec).source
    _, shard_files = build_plan(spec, storage.list_objects(src), allow_missing=True)
    return shard_files


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    methods: dict[str, Callable[[Any], Any]], items: list[Any], reps: int
) -> dict[str, dict[str, list[float]]]:
    """Per-item wall and CPU times of every method, methods rotated between repetitions.

    CPU time (this process, all threads) is the robust figure on a shared, loaded machine:
    it does not grow when other processes take the cores. Returns
    {"wall": {method: [s, ...]}, "cpu": {method: [s, ...]}}, reps * len(items) values each.
    """
    names = list(methods)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            gc.collect()
            fn = methods[n]
            for it in items:
                c0, t0 = time.process_time(), time.perf_counter()
                fn(it)
                wall[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
    return {"wall": wall, "cpu": cpu}


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def rss_mb() -> float:
    """This process's resident memory now (what a pod's memory limit counts), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def code_version() -> str:
    """The commit measured: `VCUBE_BENCH_COMMIT` (set for an exported tree) or git's HEAD."""
    if os.environ.get("VCUBE_BENCH_COMMIT"):
        return os.environ["VCUBE_BENCH_COMMIT"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        out = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out + (" (working tree with uncommitted changes)" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on (no host names or paths)."""
    import platform

    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_at_start": round(load[0], 2),
    }


def commit_again_whole(label: str) -> Callable[[], None]:
    """From now on in this process, a committed group commits again as if one of its files had
    changed: its inputs' digest differs, and its refs are made for every file and written over
    the whole group (not only those of files added since: `commit.build_group_refs` is not
    given the earlier commit). The costliest re-commit; a new month's, which sets only the new
    files' refs, is `bench.fanin --again`. Returns what undoes it."""
    from vcube import commit

    digest, build = commit.inputs_digest, commit.build_group_refs
    commit.inputs_digest = lambda *a: digest(*a) + label  # type: ignore[assignment]
    commit.build_group_refs = lambda *a, **k: build(*a, **{**k, "done": None})  # type: ignore[assignment]

    def undo() -> None:
        commit.inputs_digest, commit.build_group_refs = digest, build

    return undo
