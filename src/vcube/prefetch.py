"""Which files are opened ahead of the reader, and with which blocks? The Prefetcher.

Reading a shard's files one by one over S3 costs a round trip per metadata read that misses the
cache. Files of one archive share their layout, so the blocks one file's walk touched are a good
guess of what the next file's walk will touch: `Prefetcher` opens the next files
(`remote.open_remote_async`: first blocks plus those hinted ranges, in one parallel batch) in a
background event loop while h5py parses the current one. h5py holds one global lock while it
calls back into a reader, so threads would not overlap the round trips of different files inside
h5py; obstore's own I/O in the event loop does. Measured to help: about one round trip per file
instead of one per miss (tests/support/measure_remote.py, bench/scan_s3.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from vcube.remote import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_INITIAL_BYTES,
    DEFAULT_MAX_CACHE_BYTES,
    ObjectVersion,
    RemoteFile,
    open_remote_async,
)


class Prefetcher:
    """Open the files of a list ahead of the reader, learning which blocks a walk needs.

    `for rf in Prefetcher(loc, items, depth=8): walk(rf)` yields the files in order, each
    already holding its first blocks plus the blocks the previous walks touched (`hint`), fetched
    in a background event loop while the caller parses the earlier files. Files of one archive
    share their layout, so after the first file most reads are cache hits and a file costs about
    one round trip of parallel requests instead of one round trip per metadata read.

    hint_pad: widen the previous walk's reads by this many bytes (see `touched_ranges`);
      0 uses the touched blocks as they are.
    cold_block_size: block size for files opened before any hint exists (0: `block_size`).
    """

    def __init__(
        self,
        where: Any,
        items: Sequence[tuple[str, ObjectVersion | None]],
        *,
        depth: int = 8,
        block_size: int = DEFAULT_BLOCK_SIZE,
        initial_bytes: int = DEFAULT_INITIAL_BYTES,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
        hint_pad: int = 0,
        cold_block_size: int = 0,
    ) -> None:
        self.where = where
        self.hint_pad = hint_pad
        self.cold_block_size = cold_block_size
        self.items = list(items)
        self.depth = max(depth, 1)
        self.block_size = block_size
        self.initial_bytes = initial_bytes
        self.max_cache_bytes = max_cache_bytes
        self.hint: list[tuple[int, int]] = []

    def _open(self, key: str, version: ObjectVersion | None) -> Any:
        # Without a hint the walk goes read by read: bigger blocks mean fewer round trips.
        cold = not self.hint and self.cold_block_size
        return open_remote_async(
            self.where,
            key,
            block_size=self.cold_block_size if cold else self.block_size,
            initial_bytes=self.initial_bytes,
            max_cache_bytes=self.max_cache_bytes,
            version=version,
            hint=list(self.hint),
        )

    def __iter__(self) -> Iterator[RemoteFile]:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="vcube-prefetch", daemon=True)
        thread.start()
        pending: deque[concurrent.futures.Future[RemoteFile]] = deque()
        nxt = 0
        try:
            while nxt < len(self.items) or pending:
                # Until one walk has taught the hint, open one file at a time.
                window = self.depth if self.hint else 1
                while nxt < len(self.items) and len(pending) < window:
                    key, version = self.items[nxt]
                    pending.append(asyncio.run_coroutine_threadsafe(self._open(key, version), loop))
                    nxt += 1
                rf = pending.popleft().result()
                yield rf
                # The last walk only: a union over a shard would keep growing where offsets
                # drift with the compressed data sizes. Files already in flight use an older
                # hint; their misses are fetched on demand.
                self.hint = rf.touched_ranges(self.hint_pad)
        finally:
            for fut in pending:
                fut.cancel()
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
