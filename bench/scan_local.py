"""Section 1: scan cost per file on local disk, vcube vs VirtualiZarr vs kerchunk vs bare h5py.

All four read the same full-grid files in the same run, methods rotated between repetitions.
The files are in the page cache after the first pass (they are read many times), so this
measures CPU cost of parsing HDF5 metadata, not disk speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from bench import common
from vcube import hdf, scan
from vcube.places import Places


def h5py_floor(path: Path) -> int:
    """Open, visit every dataset, walk its chunk index (or get its offset). Nothing else."""
    n = 0

    def visit(_name: str, obj: Any) -> None:
        nonlocal n
        if isinstance(obj, h5py.Dataset):
            if obj.chunks is not None:
                obj.id.chunk_iter(lambda _info: None)
            else:
                obj.id.get_offset()
            n += 1

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return n


def make_methods(spec: Any, tmpl: Any) -> dict[str, Any]:
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    src = Places.of(spec).source
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    loadable = common.loadable_variables(tmpl)
    registry = ObjectStoreRegistry({src.url: src.store})

    def vcube_scan(key: str) -> None:
        with hdf.open_h5(src, key) as f:
            scan.scan_file(f, key, tmpl, path_dims, spec.cube.dim_names)

    def virtualizarr(key: str) -> None:
        vds = open_virtual_dataset(
            src.url_of(key), registry=registry, parser=HDFParser(), loadable_variables=loadable
        )
        vds.close()

    def kerchunk(key: str) -> None:
        from kerchunk.hdf import SingleHdf5ToZarr

        SingleHdf5ToZarr(str(src.local_path / key)).translate()

    def floor(key: str) -> None:
        h5py_floor(src.local_path / key)

    return {
        "vcube": vcube_scan,
        "virtualizarr": virtualizarr,
        "kerchunk": kerchunk,
        "h5py_floor": floor,
    }


def profile_vcube(spec: Any, tmpl: Any, keys: list[str], out: Path) -> None:
    """A pyinstrument profile of vcube's per-file scan (the hot path), as text."""
    from pyinstrument import Profiler

    src = Places.of(spec).source
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    prof = Profiler(interval=0.0005)
    prof.start()
    for _ in range(3):
        for key in keys:
            with hdf.open_h5(src, key) as f:
                scan.scan_file(f, key, tmpl, path_dims, spec.cube.dim_names)
    prof.stop()
    out.write_text(prof.output_text(unicode=False, color=False, show_all=False))


def run(arch: common.Archive, *, n_files: int, reps: int, out: Path) -> dict[str, Any]:
    spec = common.atlas_spec(str(arch.root), str(common.CACHE / "unused-repo"))
    keys = arch.file_keys()[:n_files]
    tmpl = common.derive(spec, keys[0])
    methods = make_methods(spec, tmpl)
    for fn in methods.values():  # warm the page cache and imports
        fn(keys[0])
    common.log(f"scan_local: {len(keys)} files x {reps} reps x {len(methods)} methods")
    times = common.interleaved(methods, keys, reps)
    med = {kind: {k: common.median(v) for k, v in ts.items()} for kind, ts in times.items()}
    cpu = med["cpu"]

    # vcube's whole shard step (result serialization included), for completeness.
    shard_files = [pf for files in common.plan_files(spec).values() for pf in files][:n_files]
    shard_times = []
    for _ in range(reps):
        shard_times.append(
            common.timed(
                lambda: scan.scan_shard(
                    spec, Places.of(spec).source, tmpl, "bench", shard_files, "x"
                )
            )
            / len(shard_files)
        )
    size = sum((arch.root / k).stat().st_size for k in keys) / len(keys)
    refs = sum(len(v.file_chunks) > 0 for v in tmpl.virtual_varying())
    out.mkdir(parents=True, exist_ok=True)
    profile_vcube(spec, tmpl, keys[:4], out / "profile_scan_local.txt")
    return {
        "files": len(keys),
        "reps": reps,
        "mean_file_mb": round(size / 1e6, 1),
        "virtual_vars": refs,
        "loadable_variables": len(common.loadable_variables(tmpl)),
        "median_s": med,
        "per_file_s": times,
        "vcube_scan_shard_per_file_s": common.median(shard_times),
        "cpu_speedup_vs_virtualizarr": cpu["virtualizarr"] / cpu["vcube"],
        "cpu_speedup_vs_kerchunk": cpu["kerchunk"] / cpu["vcube"],
        "cpu_vcube_over_floor": cpu["vcube"] / cpu["h5py_floor"],
    }
