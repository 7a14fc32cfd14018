"""How is one object read like a file? Read-only, seekable, block-cached, for HDF5 metadata walks.

`h5py.File(RemoteFile(...), "r")` works on it. Reading HDF5 metadata means hundreds of small
reads spread over the file, each depending on the previous one; against S3 every read is a
round trip. So reads go through a block cache: the first `initial_bytes` come in one request at
open (superblock, root group, and for netCDF4 usually every object header), a miss fetches the
blocks it covers, and missing blocks that touch are merged into one ranged GET. Counters
(`requests`, `bytes_fetched`, ...) let tests and benchmarks see the cost per file.

One open path: `open_remote_async` fetches the first blocks and any hinted ranges in one parallel
batch; the blocking `open_remote` (and `RemoteFile(...)`) runs it to completion. Opening files
ahead of the reader, with hints learnt from earlier walks, is `vcube.prefetch`'s job.

Why not obspec-utils' `BlockStoreReader` underneath: walked alone it costs what `RemoteFile` costs
plus a HEAD (same blocks and bytes, one round trip more per file), and it has no way to open
with the first blocks and hinted ranges in one batch, which is what makes a prefetched file cost
one round trip instead of ~50 (`python -m tests.support.measure_remote DIR --obspec-utils`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import obstore

from vcube.storage import first_line

DEFAULT_BLOCK_SIZE = 64 * 1024
DEFAULT_INITIAL_BYTES = 256 * 1024
DEFAULT_MAX_CACHE_BYTES = 256 * 1024 * 1024


class RemoteReadError(OSError):
    """A ranged read of a remote object failed; the message names the object and the range."""


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """What identifies the bytes that were read: Icechunk's ref checksum comes from here."""

    size: int
    etag: str | None
    last_modified: datetime | None


def _store_and_name(where: Any, key: str) -> tuple[Any, str]:
    """Accept a vcube `storage.Location` (anything with `.store` and `.url_of`) or a store."""
    store = getattr(where, "store", where)
    url_of = getattr(where, "url_of", None)
    name = url_of(key) if callable(url_of) else key
    return store, name


def _merge_runs(blocks: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted block indexes -> [(first, last_inclusive), ...] runs of consecutive blocks."""
    runs: list[tuple[int, int]] = []
    for b in sorted(set(blocks)):
        if runs and b == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((b, b))
    return runs


class RemoteFile(io.RawIOBase):
    """Read-only, seekable, block-cached view of `key` in an obstore store.

    Parameters (keyword-only):
      block_size: cache granularity; every request covers whole blocks.
      initial_bytes: fetched at open in one request (at least the first block when the
        version is not known: that GET also tells the size and ETag).
      max_cache_bytes: beyond this the oldest fetched blocks are dropped.
      version: size/ETag already known (from a listing): then no request is made at open
        unless `initial_bytes` > 0.
    Counters: requests, bytes_fetched, reads (calls from the reader), bytes_read (asked for).
    """

    def __init__(
        self,
        where: Any,
        key: str,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        initial_bytes: int = DEFAULT_INITIAL_BYTES,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
        version: ObjectVersion | None = None,
        hint: Sequence[tuple[int, int]] = (),
        _opened: _Opened | None = None,
    ) -> None:
        super().__init__()
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.store, self.name = _store_and_name(where, key)
        self.key = key
        self.block_size = block_size
        self.max_cache_bytes = max(max_cache_bytes, block_size)
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._touched: set[int] = set()
        self._reads: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._pos = 0
        self.requests = 0
        self.bytes_fetched = 0
        self.reads = 0
        self.bytes_read = 0
        # The last failed read. h5py swallows an exception raised in a read callback and reports
        # a generic HDF5 error instead, so callers look here to tell "the store failed" (retry)
        # from "the bytes are not HDF5" (the file's fault).
        self.failure: RemoteReadError | None = None
        if _opened is None:
            _opened = _run(
                _open_async(self.store, key, self.name, block_size, initial_bytes, version, hint)
            )
        self.version = _opened.version
        self.requests += _opened.requests
        for start, data in _opened.runs:
            self.bytes_fetched += len(data)
            self._store_run(start // block_size, data)

    # -- metadata ---------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """Read-only binary, as `open(path, "rb")`: xarray's file protocol asks for it."""
        return "rb"

    @property
    def size(self) -> int:
        return self.version.size

    @property
    def etag(self) -> str | None:
        return self.version.etag

    def _error(self, what: str, e: BaseException) -> RemoteReadError:
        self.failure = _error(self.name, what, e)
        return self.failure

    # -- cache ------------------------------------------------------------------------------

    def _store_run(self, first_block: int, data: bytes) -> None:
        bs = self.block_size
        with self._lock:
            for i in range(0, len(data), bs):
                b = first_block + i // bs
                if b in self._blocks:
                    self._blocks.move_to_end(b)
                    continue
                piece = data[i : i + bs]
                self._blocks[b] = piece
                self._cached_bytes += len(piece)
            while self._cached_bytes > self.max_cache_bytes and len(self._blocks) > 1:
                _, old = self._blocks.popitem(last=False)
                self._cached_bytes -= len(old)

    def _missing_runs(self, start: int, end: int) -> list[tuple[int, int]]:
        """Byte ranges [(start, end)) of the uncached blocks covering [start, end)."""
        bs = self.block_size
        end = min(end, self.size)
        if end <= start:
            return []
        with self._lock:
            missing = [b for b in range(start // bs, (end - 1) // bs + 1) if b not in self._blocks]
        return [(a * bs, min((z + 1) * bs, self.size)) for a, z in _merge_runs(missing)]

    def _fetch(self, ranges: Sequence[tuple[int, int]]) -> None:
        if not ranges:
            return
        try:
            parts = obstore.get_ranges(
                self.store,
                self.key,
                starts=[a for a, _ in ranges],
                ends=[z for _, z in ranges],
                coalesce=0,  # runs are already merged; let obstore fetch them in parallel
            )
        except Exception as e:
            where = ", ".join(f"{a}-{z}" for a, z in ranges[:4])
            raise self._error(f"cannot read bytes {where}", e) from None
        self._account_and_store(ranges, parts)

    def _account_and_store(self, ranges: Sequence[tuple[int, int]], parts: Sequence[Any]) -> None:
        self.requests += len(ranges)
        for (a, _), part in zip(ranges, parts, strict=True):
            data = bytes(part)
            self.bytes_fetched += len(data)
            self._store_run(a // self.block_size, data)

    def pread(self, start: int, n: int) -> bytes:
        """Bytes [start, start+n) (fewer at the end of the object), fetching what is missing."""
        end = min(start + n, self.size)
        if end <= start:
            return b""
        bs = self.block_size
        self._reads.append((start, end))
        first = start // bs
        if first == (end - 1) // bs:
            # The common case (small metadata reads): one block, maybe already cached.
            block = self._blocks.get(first)
            if block is None:
                self._fetch(self._missing_runs(start, end))
                block = self._blocks.get(first)
            if block is not None:
                self._touched.add(first)
                return block[start - first * bs : end - first * bs]
        self._fetch(self._missing_runs(start, end))
        out = bytearray()
        self._touched.update(range(start // bs, (end - 1) // bs + 1))
        with self._lock:
            for b in range(start // bs, (end - 1) // bs + 1):
                block = self._blocks.get(b)
                if block is None:  # evicted between fetch and copy: tiny cache, huge read
                    break
                lo = max(start - b * bs, 0)
                hi = min(end - b * bs, len(block))
                out += block[lo:hi]
        if len(out) < end - start:
            # The cache is smaller than this read: go to the store for the whole of it.
            self._fetch_uncached_into(out, start, end)
        return bytes(out)

    def _fetch_uncached_into(self, out: bytearray, start: int, end: int) -> None:
        try:
            data = bytes(obstore.get_range(self.store, self.key, start=start, end=end))
        except Exception as e:
            raise self._error(f"cannot read bytes {start}-{end}", e) from None
        self.requests += 1
        self.bytes_fetched += len(data)
        out[:] = data

    # -- io.RawIOBase -----------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.pread(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        self.reads += 1
        self.bytes_read += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(self.size - self._pos, 0)
        data = self.pread(self._pos, size)
        self._pos += len(data)
        self.reads += 1
        self.bytes_read += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def touched_ranges(self, pad: int = 0) -> list[tuple[int, int]]:
        """Byte ranges [(start, end)) the reader actually read: a hint for the next file.

        Files of one archive share their structure, so what one file's metadata walk touched is
        a good guess of what the next file's walk will touch. With `pad` 0 the hint is the
        touched blocks; with `pad` > 0 it is every read widened by `pad` bytes on both sides,
        which absorbs offsets drifting from file to file with the compressed data sizes
        (a few KB to tens of KB in the atlas-like sample) even across block boundaries.
        """
        if pad <= 0:
            bs = self.block_size
            return [(a * bs, min((z + 1) * bs, self.size)) for a, z in _merge_runs(self._touched)]
        out: list[tuple[int, int]] = []
        for a, z in sorted(self._reads):
            lo, hi = max(a - pad, 0), min(z + pad, self.size)
            if out and lo <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out

    def __repr__(self) -> str:
        return f"RemoteFile({self.name!r}, size={self.size}, block_size={self.block_size})"


def _version_of(meta: Any) -> ObjectVersion:
    return ObjectVersion(
        size=int(meta["size"]), etag=meta.get("e_tag"), last_modified=meta.get("last_modified")
    )


def open_remote(where: Any, key: str, **kw: Any) -> RemoteFile:
    """Open `key` under a vcube `storage.Location` (or an obstore store) for reading."""
    return RemoteFile(where, key, **kw)


@dataclass(frozen=True, slots=True)
class _Opened:
    """What an open fetched: the object's version and byte runs [(start, data)]."""

    version: ObjectVersion
    runs: list[tuple[int, bytes]]
    requests: int


def _open_plan(
    block_size: int, initial_bytes: int, size: int | None, hint: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Block-aligned, merged byte ranges to fetch at open (clipped to `size` when known)."""
    bs = block_size
    blocks: set[int] = set()
    if initial_bytes > 0:
        blocks.update(range(-(-initial_bytes // bs)))
    for start, stop in hint:
        end = stop if size is None else min(stop, size)
        if end > start:
            blocks.update(range(start // bs, (end - 1) // bs + 1))
    ranges = [(a * bs, (z + 1) * bs) for a, z in _merge_runs(blocks)]
    if size is not None:
        ranges = [(a, min(z, size)) for a, z in ranges if a < size]
    return ranges


def _run(coro: Coroutine[Any, Any, _Opened]) -> _Opened:
    """Run an open to completion from blocking code (in a helper thread if this thread already
    runs an event loop: asyncio.run refuses to nest)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _open_async(
    store: Any,
    key: str,
    name: str,
    block_size: int,
    initial_bytes: int,
    version: ObjectVersion | None,
    hint: Sequence[tuple[int, int]],
) -> _Opened:
    """Fetch the first blocks and the hinted ranges in one parallel batch.

    With the version known (from a listing) everything goes out at once; without it the first
    GET must come back first (it tells the size, needed to clip the hints).
    """
    requests = 0
    if version is None:
        n = max(initial_bytes, block_size)
        n = -(-n // block_size) * block_size
        try:
            result = await obstore.get_async(store, key, options={"range": (0, n)})
            first = bytes(await result.bytes_async())
            version = _version_of(result.meta)
            requests = 1
        except Exception as e:
            with contextlib.suppress(Exception):
                meta = await obstore.head_async(store, key)
                if int(meta["size"]) == 0:
                    return _Opened(_version_of(meta), [], 2)
            raise _error(name, f"cannot read bytes 0-{n}", e) from None
        runs = [(0, first)]
        plan = [r for r in _open_plan(block_size, 0, version.size, hint) if r[1] > len(first)]
        plan = [(max(a, len(first)), z) for a, z in plan]
    else:
        runs = []
        plan = _open_plan(block_size, initial_bytes, version.size, hint)
    if plan:
        try:
            parts = await obstore.get_ranges_async(
                store, key, starts=[a for a, _ in plan], ends=[z for _, z in plan], coalesce=0
            )
        except Exception as e:
            where = ", ".join(f"{a}-{z}" for a, z in plan[:4])
            raise _error(name, f"cannot read bytes {where}", e) from None
        requests += len(plan)
        runs += [(a, bytes(p)) for (a, _), p in zip(plan, parts, strict=True)]
    return _Opened(version, runs, requests)


def _error(name: str, what: str, e: BaseException) -> RemoteReadError:
    return RemoteReadError(f"{name}: {what}: {type(e).__name__}: {first_line(e, '')}")


async def open_remote_async(
    where: Any,
    key: str,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    initial_bytes: int = DEFAULT_INITIAL_BYTES,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    version: ObjectVersion | None = None,
    hint: Sequence[tuple[int, int]] = (),
) -> RemoteFile:
    """`open_remote` whose first requests do not block the event loop."""
    store, name = _store_and_name(where, key)
    opened = await _open_async(store, key, name, block_size, initial_bytes, version, hint)
    return RemoteFile(
        where, key, block_size=block_size, max_cache_bytes=max_cache_bytes, _opened=opened
    )
