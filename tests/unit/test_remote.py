"""RemoteFile (and the Prefetcher) over an in-memory obstore store: byte semantics, request
accounting, h5py walks."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import h5py
import numpy as np
import obstore
import pytest
from obstore.store import MemoryStore

from vcube.prefetch import Prefetcher
from vcube.remote import (
    ObjectVersion,
    RemoteFile,
    RemoteReadError,
    open_remote,
)

KiB = 1024


def _h5_bytes(tmp_path: Path, seed: int, nvars: int = 12) -> bytes:
    """A small netCDF4-like HDF5 file: chunked zlib+shuffle floats, contiguous scalars."""
    rng = np.random.default_rng(seed)
    path = tmp_path / f"f{seed}.h5"
    with h5py.File(path, "w", libver="earliest") as f:
        for i in range(nvars):
            data = rng.normal(size=(1, 20, 48, 40)).astype("f4").cumsum(axis=-1)
            f.create_dataset(
                f"var{i:02d}",
                data=data,
                chunks=data.shape,
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
            f.create_dataset(f"const{i:02d}", data=np.float64(i) + 0.5)
        f.create_dataset("time", data=np.arange(3, dtype="f8"))
        f["var00"].attrs["units"] = "mol/m^3"
    return path.read_bytes()


def _walk(f: h5py.File) -> dict[str, object]:
    """Every dataset's chunk index (offset, size) and the values of the contiguous ones."""
    out: dict[str, object] = {}

    def visit(name: str, obj: object) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        if obj.chunks is not None:
            out[name] = [
                (obj.id.get_chunk_info(i).byte_offset, obj.id.get_chunk_info(i).size)
                for i in range(obj.id.get_num_chunks())
            ]
        else:
            out[name] = (obj.id.get_offset(), np.asarray(obj[()]).tolist())

    f.visititems(visit)
    return out


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("h5")
    return {f"a/{i}.nc": _h5_bytes(tmp, seed=i) for i in range(4)}


@pytest.fixture
def files(blobs: dict[str, bytes]) -> tuple[MemoryStore, dict[str, bytes]]:
    store = MemoryStore()
    for key, data in blobs.items():
        obstore.put(store, key, data)
    return store, blobs


def test_byte_semantics_match_bytesio(files: tuple[MemoryStore, dict[str, bytes]]) -> None:
    store, blobs = files
    data = blobs["a/0.nc"]
    rf = RemoteFile(store, "a/0.nc", block_size=4 * KiB, initial_bytes=0)
    ref = io.BytesIO(data)
    rng = np.random.default_rng(0)
    for _ in range(200):
        pos = int(rng.integers(0, len(data) + 100))
        n = int(rng.integers(0, 20 * KiB))
        assert rf.seek(pos) == ref.seek(pos)
        assert rf.read(n) == ref.read(n)
        assert rf.tell() == ref.tell()
    assert rf.seek(-10, os.SEEK_END) == len(data) - 10
    buf = bytearray(32)
    assert rf.readinto(buf) == 10
    assert bytes(buf[:10]) == data[-10:]
    rf.seek(5)
    rf.seek(7, os.SEEK_CUR)
    assert rf.read(3) == data[12:15]
    rf.seek(0)
    assert rf.read() == data
    assert rf.readable()
    assert rf.seekable()
    assert not rf.writable()
    with pytest.raises(ValueError, match="negative"):
        rf.seek(-1)


def test_open_reads_the_first_blocks_and_the_version(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, blobs = files
    rf = RemoteFile(store, "a/0.nc", block_size=16 * KiB, initial_bytes=20 * KiB)
    meta = obstore.head(store, "a/0.nc")
    assert rf.requests == 1
    assert rf.bytes_fetched == 32 * KiB  # rounded up to whole blocks
    assert rf.size == len(blobs["a/0.nc"]) == meta["size"]
    assert rf.etag == meta["e_tag"]
    assert rf.version.last_modified == meta["last_modified"]
    rf.read(32 * KiB)
    assert rf.requests == 1  # served from the initial blocks


def test_adjacent_missing_blocks_are_one_request(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, blobs = files
    rf = RemoteFile(store, "a/0.nc", block_size=4 * KiB, initial_bytes=4 * KiB)
    assert rf.requests == 1
    rf.seek(4 * KiB)
    assert rf.read(12 * KiB) == blobs["a/0.nc"][4 * KiB : 16 * KiB]
    assert rf.requests == 2
    assert rf.bytes_fetched == 16 * KiB
    # A read spanning a cached block and two missing ones on both sides: two runs.
    rf.seek(20 * KiB)
    rf.read(4 * KiB)
    assert rf.requests == 3
    rf.seek(16 * KiB)
    assert rf.read(12 * KiB) == blobs["a/0.nc"][16 * KiB : 28 * KiB]
    assert rf.requests == 5
    # Everything cached now: no request.
    rf.seek(0)
    rf.read(28 * KiB)
    assert rf.requests == 5
    assert rf.reads == 4


def test_h5py_walk_equals_local_read_with_few_requests(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, blobs = files
    local = _walk(h5py.File(io.BytesIO(blobs["a/0.nc"]), "r"))
    rf = open_remote(store, "a/0.nc", block_size=16 * KiB, initial_bytes=64 * KiB)
    with rf, h5py.File(rf, "r") as f:
        assert _walk(f) == local
        assert f["var00"].attrs["units"] == "mol/m^3"
    # Metadata only: far fewer bytes than the file, far fewer requests than reads.
    assert rf.bytes_fetched < len(blobs["a/0.nc"]) / 2
    assert rf.requests <= rf.reads // 2


def test_a_hint_from_one_file_serves_the_next_walk(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, _ = files
    first = RemoteFile(store, "a/0.nc", block_size=4 * KiB, initial_bytes=4 * KiB)
    with h5py.File(first, "r") as f:
        _walk(f)
    hint = first.touched_ranges()
    assert hint
    meta = obstore.head(store, "a/0.nc")
    version = ObjectVersion(meta["size"], meta["e_tag"], meta["last_modified"])
    # Same file, known version: everything comes in the open batch, no miss afterwards.
    again = RemoteFile(store, "a/0.nc", block_size=4 * KiB, version=version, hint=hint)
    at_open = again.requests
    with h5py.File(again, "r") as f:
        _walk(f)
    assert again.requests == at_open
    assert at_open <= len(hint) + 1


def test_prefetcher_yields_in_order_and_learns(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, blobs = files
    keys = sorted(blobs) * 2
    misses = []
    seen = []
    for rf in Prefetcher(
        store, [(k, None) for k in keys], depth=3, block_size=4 * KiB, initial_bytes=4 * KiB
    ):
        at_open = rf.requests
        with h5py.File(rf, "r") as f:
            assert _walk(f) == _walk(h5py.File(io.BytesIO(blobs[rf.key]), "r"))
        misses.append(rf.requests - at_open)
        seen.append(rf.key)
    assert seen == keys
    assert misses[0] > 3  # the first walk discovers the layout read by read
    # Later files find nearly everything prefetched (a block or two moved with the data).
    assert max(misses[1:]) <= 2
    assert sum(misses[1:]) <= misses[0]


def test_cache_is_bounded(files: tuple[MemoryStore, dict[str, bytes]]) -> None:
    store, blobs = files
    rf = RemoteFile(store, "a/0.nc", block_size=4 * KiB, initial_bytes=0, max_cache_bytes=16 * KiB)
    data = blobs["a/0.nc"]
    for pos in range(0, 64 * KiB, 4 * KiB):
        rf.seek(pos)
        assert rf.read(4 * KiB) == data[pos : pos + 4 * KiB]
    # The last 4 blocks are held, the first ones were dropped: reading one again is a request.
    before = rf.requests
    rf.seek(60 * KiB)
    assert rf.read(4 * KiB) == data[60 * KiB : 64 * KiB]
    assert rf.requests == before
    rf.seek(0)
    assert rf.read(4 * KiB) == data[: 4 * KiB]
    assert rf.requests == before + 1
    # A read bigger than the whole cache still returns the right bytes.
    rf.seek(0)
    assert rf.read(40 * KiB) == data[: 40 * KiB]


def test_empty_object(files: tuple[MemoryStore, dict[str, bytes]]) -> None:
    store, _ = files
    obstore.put(store, "empty", b"")
    rf = RemoteFile(store, "empty")
    assert rf.size == 0
    assert rf.read() == b""


def test_missing_object_names_the_key(files: tuple[MemoryStore, dict[str, bytes]]) -> None:
    store, _ = files
    with pytest.raises(RemoteReadError, match=r"a/nope\.nc"):
        RemoteFile(store, "a/nope.nc")
    with pytest.raises(RemoteReadError, match=r"a/nope\.nc"):
        RemoteFile(store, "a/nope.nc", initial_bytes=0)


def test_a_failing_read_names_the_key_and_range(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, _ = files
    rf = RemoteFile(store, "a/1.nc", block_size=4 * KiB, initial_bytes=4 * KiB)
    obstore.delete(store, "a/1.nc")
    assert rf.read(100)  # cached: still fine
    rf.seek(8 * KiB)
    with pytest.raises(RemoteReadError, match=r"a/1\.nc: cannot read bytes 8192-12288"):
        rf.read(10)


def test_h5py_surfaces_the_read_error(files: tuple[MemoryStore, dict[str, bytes]]) -> None:
    store, _ = files
    rf = RemoteFile(store, "a/2.nc", block_size=4 * KiB, initial_bytes=4 * KiB)
    obstore.delete(store, "a/2.nc")
    with pytest.raises(OSError, match=r"a/2\.nc"), h5py.File(rf, "r") as f:
        _walk(f)


def test_location_gives_urls_in_errors(tmp_path: Path) -> None:
    from vcube import storage

    loc = storage.resolve(str(tmp_path / "src"))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.nc").write_bytes(b"\x89HDF" + bytes(100))
    rf = open_remote(loc, "x.nc", block_size=4 * KiB)
    assert rf.read(4) == b"\x89HDF"
    with pytest.raises(RemoteReadError, match=r"file://.*/src/missing\.nc"):
        open_remote(loc, "missing.nc")


def test_touched_ranges_exact_reads_widened_by_pad(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    store, blobs = files
    rf = RemoteFile(store, "a/0.nc", block_size=4 * KiB, initial_bytes=0)
    for start, n in [(100, 100), (5000, 100), (5150, 10)]:
        rf.seek(start)
        rf.read(n)
    assert rf.touched_ranges() == [(0, 8 * KiB)]  # blocks 0 and 1, merged
    assert rf.touched_ranges(pad=1000) == [(0, 1200), (4000, 6160)]
    rf.seek(len(blobs["a/0.nc"]) - 10)
    rf.read(10)
    assert rf.touched_ranges(pad=1000)[-1] == (len(blobs["a/0.nc"]) - 1010, len(blobs["a/0.nc"]))


def test_opens_from_inside_a_running_event_loop(
    files: tuple[MemoryStore, dict[str, bytes]],
) -> None:
    """The blocking open runs its requests on its own loop, also where one is running already."""
    store, blobs = files

    async def inside() -> bytes:
        return RemoteFile(store, "a/0.nc", block_size=4 * KiB, initial_bytes=4 * KiB).read(10)

    assert asyncio.run(inside()) == blobs["a/0.nc"][:10]
