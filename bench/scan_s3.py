"""Section 2: scanning over S3 with 20 ms per request — requests, bytes, round trips, files/s.

The full-grid files go to the local moto S3 server (tests/support/s3server.py); every client
talks to it through the latency proxy (tests/support/faultproxy.py), which counts requests
and response bytes. moto itself is slow per request (it copies objects for ranged GETs) and
shares the 2 cores with the client, so wall times here are an upper bound; the counts are exact.

Compared, on the same objects in one run:
  vcube scan_shard   the scan step as committed (vcube.remote reader)
  vcube prefetched   vcube's scan_file over vcube.prefetch.Prefetcher (files opened ahead,
                     block hints learned from the previous files), one process; then two
                     processes (one 2-core worker) for files/s
  virtualizarr       open_virtual_dataset(HDFParser, the atlas's inline variables) over obstore
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench import common
from tests.support.faultproxy import FaultProxy, RequestRecord
from tests.support.s3server import REGION, S3Server, dummy_aws_session
from vcube import scan, template
from vcube.places import Places
from vcube.spec import DatasetSpec

BUCKET = "bench-archive"
LATENCY = 0.02


def round_trips(records: list[RequestRecord]) -> int:
    """Sequential round trips: requests that started after every earlier one had finished."""
    waves, wave_end = 0, -1.0
    for r in sorted(records, key=lambda r: r.started):
        if r.started >= wave_end:
            waves += 1
        wave_end = max(wave_end, r.finished) if r.started < wave_end else r.finished
    return waves


def _stats(proxy: FaultProxy, n: int, wall: float) -> dict[str, float]:
    recs = list(proxy.stats.records)
    service = [r.finished - r.started - LATENCY for r in recs]
    return {
        "requests_per_file": len(recs) / n,
        "mb_per_file": sum(r.body_bytes for r in recs) / n / 1e6,
        "round_trips_per_file": round_trips(recs) / n,
        "wall_per_file_s": wall / n,
        "files_per_s": n / wall,
        # moto's own time per request (the proxy's time minus the injected latency)
        "server_ms_per_request": common.median(service) * 1000 if service else 0.0,
    }


def _prefetched_scan(
    spec_json: str, tmpl_json: bytes, files: list[Any], depth: int
) -> tuple[int, list[int]]:
    """vcube's per-file scan over prefetch.Prefetcher; runs in this or a worker process."""
    import h5py

    from vcube.prefetch import Prefetcher
    from vcube.remote import ObjectVersion

    spec = DatasetSpec.model_validate_json(spec_json)
    tmpl = template.Template.from_json(tmpl_json)
    src = Places.of(spec).source
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    items = [(pf.key, ObjectVersion(pf.size, None, None)) for pf in files]
    n, misses = 0, []
    for rf, pf in zip(Prefetcher(src, items, depth=depth), files, strict=True):
        opened = rf.requests
        with rf, h5py.File(rf, "r") as f:
            scan.scan_file(f, pf.key, tmpl, path_dims, spec.cube.dim_names)
        misses.append(rf.requests - opened)  # each miss is one more round trip for this file
        n += 1
    return n, misses


def run(arch: common.Archive, *, n_files: int, vz_files: int, depth: int = 8) -> dict[str, Any]:
    keys = arch.file_keys()[:n_files]
    cfg_dir = Path(tempfile.mkdtemp(prefix="bench-aws-"))
    # Dummy keys for the local server, this run only.
    with dummy_aws_session(cfg_dir), S3Server() as server:
        server.create_bucket(BUCKET)
        client = server.boto3_client()
        for k in keys:
            client.upload_file(str(arch.root / k), BUCKET, f"archive/{k}")
        with FaultProxy("127.0.0.1", server.port, latency=LATENCY) as proxy:
            return _measure(arch, keys, proxy, n_files, vz_files, depth)


def _measure(
    arch: common.Archive,
    keys: list[str],
    proxy: FaultProxy,
    n_files: int,
    vz_files: int,
    depth: int,
) -> dict[str, Any]:
    opts = {
        "endpoint": proxy.endpoint,
        "region": REGION,
        "force_path_style": True,
        "allow_http": True,
    }
    spec = common.atlas_spec(
        f"s3://{BUCKET}/archive", str(common.CACHE / "s3-unused-repo"), source_storage=opts
    )
    local_spec = common.atlas_spec(str(arch.root), str(common.CACHE / "unused-repo"))
    tmpl = template.derive_template(Places.of(local_spec).source, local_spec, keys[0])
    files = [pf for fs in common.plan_files(spec).values() for pf in fs]
    files = [pf for pf in files if pf.key in set(keys)]
    n = len(files)
    out: dict[str, Any] = {"files": n, "latency_s": LATENCY, "depth": depth}
    common.log(f"scan_s3: {n} files on moto behind a {LATENCY * 1000:.0f} ms proxy")

    proxy.reset_stats()
    t0 = time.perf_counter()
    scan.scan_shard(spec, Places.of(spec).source, tmpl, "bench", files, "x")
    out["vcube_scan_shard"] = _stats(proxy, n, time.perf_counter() - t0)

    spec_json, tmpl_json = spec.model_dump_json(), tmpl.to_json()
    proxy.reset_stats()
    t0 = time.perf_counter()
    _, misses = _prefetched_scan(spec_json, tmpl_json, files, depth)
    out["vcube_prefetched_1proc"] = _stats(proxy, n, time.perf_counter() - t0)
    # A file's own round trips: the open (first blocks + learned hints, one parallel batch)
    # plus one per cache miss; the first file has no hints yet, so it is left out.
    out["prefetched_round_trips_per_file_isolated"] = 1 + common.median(misses[1:] or misses)

    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        # warm the workers (start-up, imports, one file each) before timing
        warm = [
            pool.submit(_prefetched_scan, spec_json, tmpl_json, files[:1], depth) for _ in range(2)
        ]
        for w in warm:
            w.result()
        proxy.reset_stats()
        t0 = time.perf_counter()
        halves = [files[0::2], files[1::2]]
        futs = [pool.submit(_prefetched_scan, spec_json, tmpl_json, h, depth) for h in halves]
        done = sum(f.result()[0] for f in futs)
        out["vcube_prefetched_2proc"] = _stats(proxy, done, time.perf_counter() - t0)

    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    src = Places.of(spec).source
    registry = ObjectStoreRegistry({src.url: src.store})
    loadable = common.loadable_variables(tmpl)
    proxy.reset_stats()
    t0 = time.perf_counter()
    for pf in files[:vz_files]:
        vds = open_virtual_dataset(
            src.url_of(pf.key),
            registry=registry,
            parser=HDFParser(),
            loadable_variables=loadable,
        )
        vds.close()
    out["virtualizarr"] = _stats(proxy, min(vz_files, n), time.perf_counter() - t0)
    return out
