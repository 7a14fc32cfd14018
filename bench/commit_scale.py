"""Sections 3 and 5: commit scaling at atlas size, then reading the cube that results.

The archive is a synthetic *listing* with the atlas's key layout (690 polygons x 4 injection
months x T months), planned by vcube's real planner. Its shard results are synthetic too, but
every chunk ref in them is a real ref of one of the cached full-grid files (cycled), with that
file's real modification time as checksum: the cube commits like the atlas and any of its
chunks can be read back (section 5). Commits go through `vcube.commit.commit_group`, the code
`vcube commit` runs; the last group is committed by the CLI in a child process to measure the
peak RSS of one commit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from bench import common
from vcube import commit, hdf, scan, storage, template, workarea
from vcube.places import Places
from vcube.plan import Plan, PlannedFile, build_layout, build_plan
from vcube.sample import INJECTION_MONTHS, sample_path

INJECTIONS = list(INJECTION_MONTHS)


def synthetic_listing(
    polygons: int, months: int, size: int, mtime: datetime
) -> list[storage.ObjectInfo]:
    return [
        storage.ObjectInfo(sample_path(p, inj, i), size, mtime, None)
        for p in range(polygons)
        for inj in INJECTIONS
        for i in range(months)
    ]


def write_shard_lists(spec: Any, shard_files: dict[str, list[PlannedFile]]) -> None:
    """The per-shard file lists `vcube plan` writes (a re-commit reads them)."""
    work = Places.of(spec).work
    for sid, files in shard_files.items():
        payload = json.dumps([dataclasses.asdict(p) for p in files], sort_keys=True).encode()
        storage.write_bytes(work, workarea.shard_key(sid), payload)


def _inline_value(v: template.VarSchema, pos: dict[str, int]) -> np.ndarray:
    """A deterministic value per place: depends only on the dims the variable varies along."""
    x = 0
    for k, d in enumerate(v.varies):
        x += (pos[d] + 1) * 1000**k
    return np.full(v.file_shape, x, dtype=np.dtype(v.fingerprint["dtype"]))


def write_shard_results(
    spec: Any,
    tmpl: template.Template,
    plan: Plan,
    shard_files: dict[str, list[PlannedFile]],
    real: list[tuple[PlannedFile, scan.FileScan]],
) -> None:
    work = Places.of(spec).work
    dims = spec.cube.dim_names
    virt = tmpl.virtual_varying()
    inl = tmpl.inline_varying()
    for sid, files in shard_files.items():
        n = len(files)
        arrays: dict[str, np.ndarray] = {}
        metas = []
        for v in virt:
            grid = real[0][1].refs[v.name][0].shape
            arrays[f"offsets/{v.name}"] = np.zeros((n, *grid), np.uint64)
            arrays[f"lengths/{v.name}"] = np.zeros((n, *grid), np.uint64)
        for v in inl:
            arrays[f"values/{v.name}"] = np.zeros(
                (n, *v.file_shape), np.dtype(v.fingerprint["dtype"])
            )
        for i, pf in enumerate(files):
            src_pf, fs = real[(pf.pos[0] * 7 + pf.pos[1] * 3 + pf.pos[2]) % len(real)]
            for v in virt:
                arrays[f"offsets/{v.name}"][i] = fs.refs[v.name][0]
                arrays[f"lengths/{v.name}"][i] = fs.refs[v.name][1]
            pos = dict(zip(dims, pf.pos, strict=True))
            for v in inl:
                arrays[f"values/{v.name}"][i] = _inline_value(v, pos)
            metas.append(
                {
                    "key": src_pf.key,  # a real file: the ref can be read back
                    "size": int(src_pf.size),
                    "etag": src_pf.etag,
                    "last_modified": src_pf.last_modified,
                    "pos": list(pf.pos),
                    "steps": fs.steps,
                }
            )
        meta = {"shard": sid, "digest": _result_digest(plan, sid, tmpl), "files": metas}
        storage.write_bytes(work, workarea.result_key(sid), scan.write_result(meta, arrays))


def save_layout(
    spec: Any,
    plan: Plan,
    tmpl: template.Template,
    shard_files: dict[str, list[PlannedFile]],
    steps: list[int],
) -> None:
    """The layout `vcube init` would learn from the layout shards (every file `steps` long)."""
    dims = spec.cube.dim_names
    files = [(pf.key, pf.pos, steps) for sid in plan.layout_shards for pf in shard_files[sid]]
    tmpl.layout = build_layout(plan, dims, dims.index(spec.cube.commit_by), files)
    workarea.save_layout(Places.of(spec).work, tmpl.layout)


def _result_digest(plan: Plan, sid: str, tmpl: template.Template) -> str:
    """The digest `vcube scan` writes into a shard result (what `vcube commit` checks)."""
    of = getattr(scan, "result_digest", None)  # newer vcube: the template is part of it
    return of(plan.shards[sid]["digest"], tmpl) if of else str(plan.shards[sid]["digest"])


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclasses.dataclass(frozen=True)
class SyntheticWork:
    """What `prepare_work_area` planned and wrote, for writing the shard results after it."""

    plan: Plan
    tmpl: template.Template
    shard_files: dict[str, list[PlannedFile]]
    real: list[tuple[PlannedFile, scan.FileScan]]  # the scanned real files, cycled in the results
    plan_s: float  # planning the synthetic listing and writing the plan (and shard lists)

    @property
    def first(self) -> PlannedFile:
        """The template file (the first real one), which `commit.init_cube` takes."""
        return self.real[0][0]


def prepare_work_area(
    spec: Any,
    *,
    polygons: int,
    months: int,
    real_files: int | None = None,
    shard_lists: bool = True,
) -> SyntheticWork:
    """Scan the first `real_files` real files (all if None), plan the synthetic listing and
    write the plan (with the per-shard lists if `shard_lists`), the template and the layout
    into the spec's work area: what `vcube plan` and `vcube init`'s layout step leave there.
    The shard results are left to the caller (`write_shard_results`)."""
    real_planned = [pf for fs in common.plan_files(spec).values() for pf in fs][:real_files]
    tmpl = template.derive_template(Places.of(spec).source, spec, real_planned[0].key)
    src = Places.of(spec).source
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    real = []
    for pf in real_planned:
        with hdf.open_h5(src, pf.key) as f:
            real.append((pf, scan.scan_file(f, pf.key, tmpl, path_dims, spec.cube.dim_names)))
    t0 = time.perf_counter()
    listing = synthetic_listing(
        polygons, months, real_planned[0].size, datetime(2026, 1, 1, tzinfo=UTC)
    )
    plan, shard_files = build_plan(spec, listing)
    if shard_lists:
        write_shard_lists(spec, shard_files)
    storage.write_bytes(Places.of(spec).work, workarea.PLAN_KEY, plan.to_json())
    plan_s = time.perf_counter() - t0
    template.save_template(Places.of(spec).work, tmpl)
    save_layout(spec, plan, tmpl, shard_files, real[0][1].steps)
    return SyntheticWork(plan, tmpl, shard_files, real, plan_s)


def build(
    arch: common.Archive, *, polygons: int, months: int, real_files: int
) -> tuple[Any, Plan, template.Template, dict[str, Any]]:
    """Plan, init and write synthetic shard results; returns (spec, plan, template, info)."""
    base = common.CACHE / "atlas-cube"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    spec = common.atlas_spec(str(arch.root), str(base / "repo"), work=str(base / "work"))
    (base / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    work = prepare_work_area(spec, polygons=polygons, months=months, real_files=real_files)
    plan, tmpl = work.plan, work.tmpl
    t0 = time.perf_counter()
    commit.init_cube(Places.of(spec), plan, tmpl, work.first)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_shard_results(spec, tmpl, plan, work.shard_files, work.real)
    results_s = time.perf_counter() - t0
    info = {
        "plan_s": work.plan_s,
        "init_s": init_s,
        "write_shard_results_s": results_s,
        "shards": len(plan.shards),
        "files": plan.n_files,
        "real_files_cycled": len(work.real),
        "virtual_vars": len(tmpl.virtual_varying()),
    }
    return spec, plan, tmpl, info


def commit_all(spec: Any, plan: Plan, tmpl: template.Template) -> dict[str, Any]:
    groups = list(plan.groups)
    in_process, last = groups[:-1], groups[-1]
    seconds, cpu, refs = [], [], 0
    t_all = time.perf_counter()
    for i, g in enumerate(in_process):
        c0, t0 = time.process_time(), time.perf_counter()
        out = commit.commit_group(Places.of(spec), plan, tmpl, g)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # all threads (Icechunk's Rust threads too)
        refs += out["refs"]
        if i % 50 == 0:
            common.log(f"commit {g}: {seconds[-1]:.2f} s ({out['refs']} refs)")
    total_in_process = time.perf_counter() - t_all
    # The last group through the CLI in a child process: its peak RSS is one commit's.
    base = common.CACHE / "atlas-cube"
    cmd = [str(Path(sys.executable).parent / "vcube"), "commit", str(base / "spec.yaml")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--group", last], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=common.ROOT
    )
    _, status, rusage = os.wait4(proc.pid, 0)
    out_b = proc.stdout.read() if proc.stdout else b""
    err_b = proc.stderr.read() if proc.stderr else b""
    cli_s = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"vcube commit --group {last} failed: {err_b.decode()[-2000:]}")
    first20, last20 = seconds[:20], seconds[-20:]
    return {
        "groups": len(groups),
        "files_per_group": plan.group_files(groups[0]),
        "refs_in_process": refs,
        "commit_s": seconds,
        "commit_cpu_s": cpu,
        "first20_cpu_median_s": common.median(cpu[:20]),
        "last20_cpu_median_s": common.median(cpu[-20:]),
        "first20_median_s": common.median(first20),
        "last20_median_s": common.median(last20),
        "last_over_first": common.median(last20) / common.median(first20),
        "total_commit_s": total_in_process + cli_s,
        "cli_commit_s": cli_s,
        "cli_commit_peak_rss_mb": rusage.ru_maxrss / 1024,
        "cli_summary": out_b.decode().strip()[-500:],
        "repo_bytes": du(base / "repo"),
    }


def read_bench(spec: Any, plan: Plan, arch: common.Archive, reps: int) -> dict[str, Any]:
    """Section 5: open the cube with xarray; one 3-D chunk through the cube vs h5py.

    Each repetition reads a different chunk, with every method, in rotated order.
    """
    import xarray as xr
    import zarr

    open_s, open_zarr_s, open_nodask_s = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        repo = Places.of(spec).repo()
        store = repo.readonly_session(spec.target.branch).store
        t1 = time.perf_counter()
        ds = xr.open_zarr(store, consolidated=False)
        t2 = time.perf_counter()
        open_s.append(t2 - t0)
        open_zarr_s.append(t2 - t1)
        t0 = time.perf_counter()
        xr.open_zarr(store, consolidated=False, chunks=None)
        open_nodask_s.append(time.perf_counter() - t0)
    sizes = dict(ds.sizes)
    n_vars = len(ds.data_vars)
    dsn = xr.open_zarr(store, consolidated=False, chunks=None)
    var = "DIC"
    zarr_arr = zarr.open_array(store, path=var, mode="r")
    work = Places.of(spec).work
    groups = list(plan.groups)
    fill = np.float32(9.96921e36)
    times: dict[str, list[float]] = {
        "xarray_dask": [],
        "xarray_no_dask": [],
        "zarr": [],
        "h5py_open_and_read": [],
        "h5py_read": [],
    }
    same = True
    for r in range(reps):
        g = groups[(r * 97) % len(groups)]
        sid = plan.groups[g][r % len(plan.groups[g])]
        res = scan.read_result(storage.read_bytes(work, workarea.result_key(sid)))
        fm = res.meta["files"][(r * 13) % len(res.meta["files"])]
        p, d, t = fm["pos"]
        path = arch.root / fm["key"]
        got: dict[str, np.ndarray] = {}

        def cube_dask(p: int = p, d: int = d, t: int = t) -> np.ndarray:
            return ds[var].isel(polygon_id=p, injection_date=d, elapsed_time=t).values

        def cube_nodask(p: int = p, d: int = d, t: int = t) -> np.ndarray:
            return dsn[var].isel(polygon_id=p, injection_date=d, elapsed_time=t).values

        def cube_zarr(p: int = p, d: int = d, t: int = t) -> np.ndarray:
            return np.asarray(zarr_arr[p, d, t])

        def h5_open_read(path: Path = path) -> np.ndarray:
            with h5py.File(path, "r") as f:
                return np.asarray(f[var][0, 0, 0])

        methods: dict[str, Callable[[], np.ndarray]] = {
            "xarray_dask": cube_dask,
            "xarray_no_dask": cube_nodask,
            "zarr": cube_zarr,
            "h5py_open_and_read": h5_open_read,
        }
        names = list(methods)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            got[name] = methods[name]()
            times[name].append(time.perf_counter() - t0)
        with h5py.File(path, "r") as f:
            dset = f[var]
            t0 = time.perf_counter()
            dset[0, 0, 0]
            times["h5py_read"].append(time.perf_counter() - t0)
        ref = got["h5py_open_and_read"]
        ref = np.where(ref == fill, np.nan, ref)  # the cube decodes the fill value to NaN
        for k in ("xarray_dask", "xarray_no_dask"):
            same &= bool(np.array_equal(ref, got[k], equal_nan=True))
        same &= bool(np.array_equal(got["h5py_open_and_read"], got["zarr"]))
    med = {k: common.median(v) for k, v in times.items()}
    return {
        "sizes": sizes,
        "data_vars": n_vars,
        "open_repo_and_xr_open_zarr_s": common.median(open_s),
        "xr_open_zarr_s": common.median(open_zarr_s),
        "xr_open_zarr_no_dask_s": common.median(open_nodask_s),
        "chunk_var": var,
        "chunk_shape": list(zarr_arr.chunks),
        "chunk_read_s": med,
        "ratio_cube_vs_h5py": {
            k: med[k] / med["h5py_open_and_read"] for k in ("xarray_dask", "xarray_no_dask", "zarr")
        },
        "values_equal": same,
        "reps": reps,
    }


def run(
    arch: common.Archive, *, polygons: int, months: int, real_files: int, read_reps: int
) -> dict[str, Any]:
    spec, plan, tmpl, info = build(arch, polygons=polygons, months=months, real_files=real_files)
    common.log(f"commit_scale: {info['files']} files in {len(plan.groups)} groups")
    res = commit_all(spec, plan, tmpl)
    res |= info
    res["read"] = read_bench(spec, plan, arch, read_reps)
    return res
