"""Where does a chunk sit? Pure shape and chunk-index maths, shared by commit and validate.

No I/O of its own: a variable's array shape and chunk shape in the cube, whether the files' chunks
fit the cube's regular grid, where each scanned chunk of a file lands on it, and the chunk refs of
the template file's static variables (read through the open file it is given).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import h5py
import numpy as np

from vcube.hdf import chunk_refs
from vcube.plan import Layout, Plan
from vcube.spec import DatasetSpec
from vcube.template import Template, TemplateError, VarSchema


class CommitError(RuntimeError):
    """A group could not be committed; the message names the group and what to do."""


def chunk_grid(shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """How many chunks of this shape cover an array along each dim (the last may be partial)."""
    return tuple(-(-s // c) for s, c in zip(shape, chunks, strict=True))


def file_grid(v: VarSchema, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The chunk grid of one file's variable: a contiguous variable is one chunk."""
    if v.fingerprint["chunks"] is None:
        return (1,) * len(shape)
    return chunk_grid(shape, v.file_chunks)


def static_refs(
    node: h5py.Group, template: Template
) -> Iterator[tuple[VarSchema, tuple[int, ...], np.ndarray, np.ndarray]]:
    """The virtual variables that vary along no concat dim, written once from the template file:
    each with its chunk grid and the byte offset and length of every chunk (`node` is the
    template file's node, open)."""
    for v in template.variables.values():
        if v.kind != "virtual" or v.varies:
            continue
        grid = chunk_grid(v.file_shape, v.file_chunks)
        offsets, lengths = chunk_refs(node[v.name], grid)
        yield v, grid, offsets, lengths


def array_shape(v: VarSchema, plan: Plan, template: Template) -> list[int]:
    layout = template.steps
    file_size = dict(zip(v.file_dims, v.file_shape, strict=True))
    return [layout.total(d) if d in layout.dims else file_size[d] for d in v.dims]


def cube_chunks(v: VarSchema, layout: Layout) -> list[int]:
    """A variable's chunk shape in the cube, along its file dims.

    Chunked: the files' chunks (`check_grid` makes sure they tile every file). Contiguous
    (uncompressed, one byte range): one chunk per file while every file has the same length;
    otherwise per-step chunks, whose byte ranges are computable in C order: chunks of 1 up to
    the last concat dim whose length varies, there the gcd of the files' lengths, whole after.
    """
    if v.fingerprint["chunks"] is not None:
        return list(v.file_chunks)
    varying = [
        j for j, d in enumerate(v.file_dims) if d in layout.dims and len(layout.lengths(d)) > 1
    ]
    if not varying:
        return list(v.file_shape)
    last = max(varying)
    step = math.gcd(*layout.lengths(v.file_dims[last]))
    return [1] * last + [step] + list(v.file_shape[last + 1 :])


def check_grid(template: Template, layout: Layout) -> None:
    """Refuse a layout that a regular chunk grid cannot hold, naming the first file at fault.

    A chunked variable's chunks must start at every file's first step and tile the file; only
    the file that ends the whole dim may end in a partial chunk.
    """
    for v in template.virtual_varying():
        if v.fingerprint["chunks"] is None:
            continue  # contiguous: cube_chunks splits it so that it fits
        for d, c in zip(v.file_dims, v.file_chunks, strict=True):
            if d not in layout.dims or c == 1:
                continue
            if d == layout.dims[layout.commit_dim] and layout.commit_steps % c:
                raise TemplateError(
                    f"{template.source_key}: variable {v.name} has chunks of {c} along {d} but "
                    f"the file holds {layout.commit_steps}: a chunk must not straddle two files"
                )
            total = layout.total(d)
            for key, start, n, last in layout.entries(d):
                if start % c or (n % c and not (last and start + n == total)):
                    raise TemplateError(
                        f"{key}: variable {v.name} has chunks of {c} steps along {d!r}, but this "
                        f"file holds {n} steps starting at step {start} of its series: its chunks "
                        "cannot sit on the cube's regular chunk grid (the chunk length must "
                        "divide every file's length). Rechunk the files, or list the variable "
                        "under cube.inline if it is small"
                    )


def array_chunks(
    v: VarSchema, spec: DatasetSpec, shape: list[int], template: Template
) -> list[int]:
    """Virtual: see cube_chunks. Inline: whole, but one block per group along commit_by."""
    layout = template.steps
    if v.kind == "virtual":
        file_chunk = dict(zip(v.file_dims, cube_chunks(v, layout), strict=True))
        return [file_chunk.get(d, 1) for d in v.dims]
    return [
        layout.commit_steps if d == spec.cube.commit_by else max(s, 1)
        for d, s in zip(v.dims, shape, strict=True)
    ]


class RefPlacer:
    """Turns one file's scanned refs of a virtual variable into refs on the cube's chunk grid."""

    def __init__(self, v: VarSchema, layout: Layout) -> None:
        self.v = v
        self.chunks = cube_chunks(v, layout)
        self.by_dim = dict(zip(v.file_dims, self.chunks, strict=True))
        self.file_axis = {d: j for j, d in enumerate(v.file_dims)}
        self.split = v.fingerprint["chunks"] is None and self.chunks != list(v.file_shape)
        self.chunk_bytes = math.prod(self.chunks) * np.dtype(v.fingerprint["dtype"]).itemsize
        self.base_terms = [(d, self.by_dim.get(d, 1)) for d in v.dims]
        # A file is one chunk when every dim fits in one: decided per file along concat dims.
        self.concat_chunks = [(d, c) for d, c in self.by_dim.items() if d in layout.dims]
        self.one_chunk = v.fingerprint["chunks"] is None or all(
            c >= s
            for d, s, c in zip(v.file_dims, v.file_shape, self.chunks, strict=True)
            if d not in layout.dims
        )

    def file_shape(self, places: dict[str, tuple[int, int]]) -> list[int]:
        return [
            places[d][1] if d in places else s
            for d, s in zip(self.v.file_dims, self.v.file_shape, strict=True)
        ]

    def refs(
        self,
        key: str,
        places: dict[str, tuple[int, int]],
        offsets: np.ndarray,
        lengths: np.ndarray,
    ) -> Iterator[tuple[list[int], int, int]]:
        """(cube chunk index, byte offset, length) of every stored chunk of the file."""
        base = [places[d][0] // c if d in places else 0 for d, c in self.base_terms]
        if (
            not self.split
            and self.one_chunk
            and all(places[d][1] <= c for d, c in self.concat_chunks)
        ):
            n = int(lengths.reshape(-1)[0])  # one chunk per file: the common case, kept cheap
            if n:
                yield base, int(offsets.reshape(-1)[0]), n
            return
        shape = self.file_shape(places)
        if self.split:
            off, length = int(offsets.reshape(-1)[0]), int(lengths.reshape(-1)[0])
            if not length:
                return  # never written: reads as the fill value
            grid = [s // c for s, c in zip(shape, self.chunks, strict=True)]
            if length != self.chunk_bytes * math.prod(grid):
                raise CommitError(
                    f"{key}: variable {self.v.name} stores {length} bytes, its shape {shape} "
                    f"needs {self.chunk_bytes * math.prod(grid)}: cannot split it into steps"
                )
            for k, sub in enumerate(np.ndindex(*grid)):
                yield self._index(base, sub), off + k * self.chunk_bytes, self.chunk_bytes
            return
        grid = list(chunk_grid(shape, self.chunks))
        region = tuple(slice(0, n) for n in grid)
        offs = offsets[region].reshape(-1).tolist()
        lens = lengths[region].reshape(-1).tolist()
        for sub, o, n in zip(np.ndindex(*grid), offs, lens, strict=True):
            if n:
                yield self._index(base, sub), o, n

    def one_chunk_refs(
        self,
        places: list[dict[str, tuple[int, int]]],
        offsets: np.ndarray,
        lengths: np.ndarray,
    ) -> tuple[list[int], list[list[int]], list[int], list[int]] | None:
        """`refs` of many files at once when each file is one chunk (the common case, in numpy
        rather than per file): (file of each ref, cube chunk index, byte offset, length), files
        without the chunk left out. None if some file is not one chunk: use `refs` per file.
        `offsets` and `lengths` hold the files' scanned refs, one file per row."""
        if self.split or not self.one_chunk:
            return None
        if any(p[d][1] > c for p in places for d, c in self.concat_chunks):
            return None
        n = len(places)
        index = np.zeros((n, len(self.base_terms)), np.int64)
        for j, (d, c) in enumerate(self.base_terms):
            if n and d in places[0]:
                index[:, j] = [p[d][0] // c for p in places]
        offs = offsets.reshape(n, -1)[:, 0]
        lens = lengths.reshape(n, -1)[:, 0]
        kept = np.flatnonzero(lens)
        return (
            kept.tolist(),
            index[kept].tolist(),
            offs[kept].tolist(),
            lens[kept].tolist(),
        )

    def _index(self, base: list[int], sub: tuple[int, ...]) -> list[int]:
        return [
            b + sub[self.file_axis[d]] if d in self.file_axis else b
            for b, d in zip(base, self.v.dims, strict=True)
        ]
