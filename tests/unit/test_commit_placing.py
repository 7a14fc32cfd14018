"""A group's refs and inline values placed for all files at once equal the per-file placing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.unit.test_layout import DIMS, _layout
from vcube.commit import CommitError, _place_inline, _place_inline_per_file
from vcube.layout import RefPlacer
from vcube.scan import ShardResult
from vcube.template import VarSchema


def _var(name: str, dims: list[str], shape: list[int], chunks: list[int] | None) -> VarSchema:
    return VarSchema(
        name=name,
        dims=dims,
        file_dims=dims,
        file_shape=shape,
        file_chunks=chunks or shape,
        kind="virtual",
        varies=[d for d in dims if d in DIMS],
        zarr={},
        fingerprint={"chunks": chunks, "dtype": "<f4"},
    )


@pytest.mark.parametrize(
    ("lengths", "chunks", "one_chunk"),
    [
        ({}, None, True),  # contiguous: the file is one chunk
        ({}, [1, 1, 1, 4, 6], True),  # chunked, one chunk per file
        ({}, [1, 1, 1, 2, 3], False),  # four chunks per file
        ({(0, 0): 3, (0, 1): 2}, None, False),  # contiguous, split into steps
        ({(0, 0): 3, (0, 1): 2}, [1, 1, 1, 4, 6], False),  # a file spans 3 chunks in time
    ],
)
def test_refs_of_many_files_equal_refs_per_file(
    lengths: dict[tuple[int, int], int], chunks: list[int] | None, one_chunk: bool
) -> None:
    layout, shard_files = _layout(lengths)
    v = _var("DIC", [*DIMS, "y", "x"], [1, 1, 1, 4, 6], chunks)
    placer = RefPlacer(v, layout)
    files = [pf for sid in sorted(shard_files) for pf in shard_files[sid]]
    wheres = [layout.places(pf.pos) for pf in files]
    rng = np.random.default_rng(0)
    grid = (1, 1, 1, 1, 1)
    offsets = rng.integers(1, 10**9, (len(files), *grid)).astype(np.uint64)
    lengths_ = rng.integers(0, 3, (len(files), *grid)).astype(np.uint64)  # 0: not stored
    many = placer.one_chunk_refs(wheres, offsets, lengths_)
    if not one_chunk:
        assert many is None  # several chunks per file: placed per file
        return
    per_file = [
        (k, list(index), off, n)
        for k, (pf, where) in enumerate(zip(files, wheres, strict=True))
        for index, off, n in placer.refs(pf.key, where, offsets[k], lengths_[k])
    ]
    assert many is not None
    assert list(zip(*many, strict=True)) == per_file
    assert 0 < len(per_file) < len(files)  # files without the chunk are left out


def _inline(
    v: VarSchema, files: list[tuple[ShardResult, int, dict[str, tuple[int, int]]]]
) -> tuple[dict[str, int], tuple[int, ...]]:
    starts = {d: min(p[d][0] for _, _, p in files) for d in v.varies}
    stops = {d: max(p[d][0] + p[d][1] for _, _, p in files) for d in v.varies}
    shape = tuple(stops[d] - starts[d] if d in starts else 2 for d in v.dims)
    return starts, shape


def _both(
    v: VarSchema,
    files: list[tuple[ShardResult, int, dict[str, tuple[int, int]]]],
    fill: Any = np.nan,
) -> tuple[tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray] | str]:
    """(at once: new, written or None if it gave up; per file: new, written or its error)."""
    starts, shape = _inline(v, files)
    new, written = np.full(shape, fill), np.zeros(shape, bool)
    at_once = (new, written) if _place_inline(v, files, starts, new, written) else None
    new2, written2 = np.full(shape, fill), np.zeros(shape, bool)
    try:
        _place_inline_per_file(v, files, starts, new2, written2, "000")
    except CommitError as e:
        return at_once, str(e)
    return at_once, (new2, written2)


def _files(layout: Any, shard_files: dict[str, list[Any]], v: VarSchema, value: Any) -> list[Any]:
    """Each shard's files in one result whose values of `v` come from value(pos, step)."""
    out = []
    for sid in sorted(shard_files):
        pfs = shard_files[sid]
        wheres = [layout.places(pf.pos) for pf in pfs]
        longest = max(w["elapsed_time"][1] for w in wheres)
        pad = [
            longest if d == "elapsed_time" else n for d, n in zip(v.dims, v.file_shape, strict=True)
        ]
        vals = np.full((len(pfs), *pad), -1.0)  # padding: never placed
        for k, (pf, w) in enumerate(zip(pfs, wheres, strict=True)):
            for s in range(w["elapsed_time"][1]):
                sl = tuple(s if d == "elapsed_time" else slice(None) for d in v.dims)
                vals[(k, *sl)] = value(pf.pos, w["elapsed_time"][0] + s)
        res = ShardResult({"files": [{"key": pf.key} for pf in pfs]}, {}, {}, {v.name: vals})
        out += [(res, k, w) for k, w in enumerate(wheres)]
    return out


@pytest.mark.parametrize("lengths", [{}, {(0, 0): 3, (0, 1): 2, (1, 0): 3, (1, 1): 2}])
def test_inline_values_placed_at_once_equal_per_file(lengths: dict[tuple[int, int], int]) -> None:
    layout, shard_files = _layout(lengths)
    time = VarSchema(
        "time",
        ["injection_date", "elapsed_time", "d2"],
        ["injection_date", "elapsed_time", "d2"],
        [1, 1, 2],
        [1, 1, 2],
        "inline",
        ["injection_date", "elapsed_time"],
        {},
        {"chunks": None, "dtype": "<f8"},
    )
    # every polygon's files carry the same times: each place is written by several files
    files = _files(layout, shard_files, time, lambda pos, step: [pos[1] * 100 + step, step])
    at_once, per_file = _both(time, files)
    assert at_once is not None and not isinstance(per_file, str)
    np.testing.assert_array_equal(at_once[0], per_file[0])
    np.testing.assert_array_equal(at_once[1], per_file[1])
    assert per_file[1].all()

    polygon = VarSchema(
        "polygon_id", ["polygon_id"], ["polygon_id"], [1], [1], "inline", ["polygon_id"], {}, {}
    )
    files = _files(layout, shard_files, polygon, lambda pos, step: pos[0] + 7)
    at_once, per_file = _both(polygon, files, fill=0)
    assert at_once is not None and not isinstance(per_file, str)
    assert at_once[0].tolist() == per_file[0].tolist() == [7, 8]


def test_files_that_disagree_are_named_by_the_per_file_placing() -> None:
    layout, shard_files = _layout({})
    time = VarSchema(
        "time",
        ["injection_date", "elapsed_time"],
        ["injection_date", "elapsed_time"],
        [1, 1],
        [1, 1],
        "inline",
        ["injection_date", "elapsed_time"],
        {},
        {"chunks": None, "dtype": "<f8"},
    )
    files = _files(
        layout, shard_files, time, lambda pos, step: np.nan if pos[0] else float(step)
    )  # polygon 001 has NaN where 000 has a time
    at_once, per_file = _both(time, files)
    assert at_once is None
    assert isinstance(per_file, str) and "files disagree on time at the same place" in per_file
    same = _files(layout, shard_files, time, lambda pos, step: np.nan)  # NaN equals NaN here
    at_once, per_file = _both(time, same)
    assert at_once is not None and not isinstance(per_file, str)
    assert np.isnan(at_once[0]).all() and at_once[1].all()
