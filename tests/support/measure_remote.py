"""Measure `vcube.remote` and `vcube.prefetch` on real files over the local S3 server and a proxy.

    python -m tests.support.measure_remote DIR [--latency 0.02] [--blocks 16,64,256,1024]

DIR holds `.nc` files (e.g. from `vcube sample DIR --grid 384x320`). For every block size it
reports, per file, for a full h5py walk (open, every dataset's chunk index, the values of the
small contiguous variables): requests and bytes seen by the proxy, sequential round trips
(requests made from inside h5py, one after another), and wall time — once per file on its own
("cold") and once through `Prefetcher` (hints learned from the previous files, files opened
ahead in the background); with `--obspec-utils` also through obspec-utils' `BlockStoreReader`
(VirtualiZarr's default reader), one file at a time. moto's own time per request is not
realistic (it copies whole objects for a ranged GET); the "no latency" column shows it so it can
be subtracted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import h5py

from tests.support.faultproxy import FaultProxy
from tests.support.s3server import S3Server
from vcube.prefetch import Prefetcher
from vcube.remote import RemoteFile


def walk(f: h5py.File) -> int:
    """Open every dataset, read its chunk index, read small contiguous values; count chunks."""
    n = 0

    def visit(_name: str, obj: object) -> None:
        nonlocal n
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.chunks is not None:
            for i in range(obj.id.get_num_chunks()):
                obj.id.get_chunk_info(i)
                n += 1
        else:
            obj.id.get_offset()
            if obj.nbytes < 1 << 20:
                obj[()]

    f.visititems(visit)
    return n


def _cold(store: object, keys: list[str], proxy: FaultProxy, bs: int) -> dict[str, float]:
    proxy.reset_stats()
    seq, walls = [], []
    for key in keys:
        t0 = time.perf_counter()
        rf = RemoteFile(store, key, block_size=bs, initial_bytes=bs)
        opened = rf.requests
        with h5py.File(rf, "r") as f:
            walk(f)
        walls.append(time.perf_counter() - t0)
        seq.append(rf.requests - opened + 1)
    n = len(keys)
    return {
        "req": proxy.stats.requests / n,
        "mb": proxy.stats.response_bytes / n / 1e6,
        "seq": statistics.mean(seq),
        "ms": statistics.median(walls) * 1000,
    }


def _waves(proxy: FaultProxy) -> int:
    """Sequential round trips: requests that started after every earlier one had finished."""
    waves, wave_end = 0, -1.0
    for r in sorted(proxy.stats.records, key=lambda r: r.started):
        if r.started >= wave_end:
            waves += 1
            wave_end = r.finished
        else:
            wave_end = max(wave_end, r.finished)
    return waves


def _obspec_utils(store: object, keys: list[str], proxy: FaultProxy, bs: int) -> dict[str, float]:
    """The same walk through obspec-utils' `BlockStoreReader` (what VirtualiZarr uses by default),
    one file at a time: the candidate to build `RemoteFile` on."""
    from obspec_utils.readers import BlockStoreReader

    proxy.reset_stats()
    walls = []
    for key in keys:
        t0 = time.perf_counter()
        reader = BlockStoreReader(store, key, block_size=bs)
        with h5py.File(reader, "r") as f:
            walk(f)
        walls.append(time.perf_counter() - t0)
    n = len(keys)
    return {
        "req": proxy.stats.requests / n,
        "mb": proxy.stats.response_bytes / n / 1e6,
        "seq": _waves(proxy) / n,
        "ms": statistics.median(walls) * 1000,
    }


def _prefetched(
    store: object, keys: list[str], proxy: FaultProxy, bs: int, depth: int, pad: int = 0
) -> dict[str, float]:
    proxy.reset_stats()
    misses = []
    t0 = time.perf_counter()
    for rf in Prefetcher(
        store,
        [(k, None) for k in keys],
        depth=depth,
        block_size=bs,
        initial_bytes=bs,
        hint_pad=pad,
    ):
        opened = rf.requests
        with h5py.File(rf, "r") as f:
            walk(f)
        misses.append(rf.requests - opened)
    n = len(keys)
    return {
        "req": proxy.stats.requests / n,
        "mb": proxy.stats.response_bytes / n / 1e6,
        "seq": 1 + statistics.mean(misses[1:] or misses),
        "ms": (time.perf_counter() - t0) / n * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--blocks", default="16,64,256,1024", help="block sizes in KiB")
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--pads", default="0", help="Prefetcher hint_pad values in KiB")
    ap.add_argument("--no-cold", action="store_true", help="skip the one-file-at-a-time rows")
    ap.add_argument(
        "--obspec-utils", action="store_true", help="add rows for obspec-utils' BlockStoreReader"
    )
    args = ap.parse_args(argv)
    files = sorted(args.dir.rglob("*.nc"))
    if not files:
        raise SystemExit(f"no .nc files under {args.dir}")
    local = []
    for p in files:
        t0 = time.perf_counter()
        with h5py.File(p, "r") as f:
            walk(f)
        local.append(time.perf_counter() - t0)
    print(
        f"{len(files)} files, {statistics.mean(p.stat().st_size for p in files) / 1e6:.0f} MB "
        f"each; local-disk walk {statistics.median(local) * 1000:.0f} ms/file (CPU floor)"
    )
    with S3Server() as server:
        server.create_bucket("measure")
        keys = server.upload_dir(args.dir, "measure")
        keys = [k for k in keys if k.endswith(".nc")]
        with (
            FaultProxy("127.0.0.1", server.port, latency=0.0, lifetime=3600) as p0,
            FaultProxy("127.0.0.1", server.port, latency=args.latency, lifetime=3600) as p1,
        ):
            s0 = server.obstore_store("measure", endpoint=p0.endpoint)
            s1 = server.obstore_store("measure", endpoint=p1.endpoint)
            lat = f"{args.latency * 1000:.0f} ms"
            print(
                f"| block | mode | requests/file | MB/file | sequential round trips/file "
                f"| ms/file no latency | ms/file at {lat} |"
            )
            print("|---|---|---|---|---|---|---|")
            for kib in (int(x) for x in args.blocks.split(",")):
                bs = kib * 1024
                if not args.no_cold:
                    c0, c1 = _cold(s0, keys, p0, bs), _cold(s1, keys, p1, bs)
                    print(
                        f"| {kib} KiB | one file | {c1['req']:.1f} | {c1['mb']:.2f} | "
                        f"{c1['seq']:.1f} | {c0['ms']:.0f} | {c1['ms']:.0f} |"
                    )
                if args.obspec_utils:
                    o0, o1 = _obspec_utils(s0, keys, p0, bs), _obspec_utils(s1, keys, p1, bs)
                    print(
                        f"| {kib} KiB | obspec-utils BlockStoreReader, one file | "
                        f"{o1['req']:.1f} | {o1['mb']:.2f} | {o1['seq']:.1f} | "
                        f"{o0['ms']:.0f} | {o1['ms']:.0f} |"
                    )
                for pad in (int(x) for x in args.pads.split(",")):
                    f0 = _prefetched(s0, keys, p0, bs, args.depth, pad * 1024)
                    f1 = _prefetched(s1, keys, p1, bs, args.depth, pad * 1024)
                    print(
                        f"| {kib} KiB | Prefetcher depth {args.depth}, pad {pad} KiB | "
                        f"{f1['req']:.1f} | {f1['mb']:.2f} | {f1['seq']:.1f} | "
                        f"{f0['ms']:.0f} | {f1['ms']:.0f} |"
                    )


if __name__ == "__main__":
    main()
