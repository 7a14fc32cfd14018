"""Does the cube say what the files say? A built cube checked against the plan and the files.

Dims must be as planned, every planned chunk must be present (or reported missing), and
values read through the cube must equal values read directly from sampled source files with
xarray — the comparison a user would make, NaN-aware and bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from vcube import storage, workarea
from vcube.hdf import file_node, open_h5, store_failure
from vcube.layout import RefPlacer, array_shape, static_refs
from vcube.places import Places
from vcube.plan import Plan, PlannedFile
from vcube.remote import RemoteReadError, open_remote
from vcube.repo import history
from vcube.scan import convert_times, read_result
from vcube.spec import DatasetSpec
from vcube.template import Template
from vcube.workarea import result_key

FULL_CHUNK_CHECK_LIMIT = 2_000_000  # list every chunk key when the cube has at most this many
SAMPLED_SHARDS = 20  # shards whose chunks are checked one by one in a big cube
VIRTUAL_KIND = 2  # icechunk.ChunkType in array_chunk_iterator rows: native 1, virtual 2, inline 3
RAW: dict[str, Any] = {"decode_times": False, "decode_timedelta": False, "mask_and_scale": False}


class ValidationFailed(RuntimeError):
    """The cube disagrees with the plan or the sources; `problems` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = " | ".join(problems[:5]) + (" | ..." if len(problems) > 5 else "")
        super().__init__(f"the cube has {len(problems)} problems: {shown}")


def open_cube(spec: DatasetSpec | Places, **kwargs: Any) -> xr.Dataset:
    places = Places.of(spec)
    spec = places.spec
    repo = places.repo()
    session = repo.readonly_session(spec.target.branch)
    # No dask (chunks=None) unless asked: zarr reads the many small chunks concurrently,
    # dask would make a task of each (an order of magnitude slower on per-step chunks).
    return xr.open_zarr(session.store, consolidated=False, **{"chunks": None, **kwargs})


@contextlib.contextmanager
def open_source_file(spec: DatasetSpec | Places, key: str, **kwargs: Any) -> Iterator[xr.Dataset]:
    """Open one source file with plain xarray — the reference a cube is compared with.

    A local file is opened by its path. An object in S3 is read through a ranged, block-cached
    reader: only the bytes xarray asks for are fetched (the metadata, then the values of the
    variables a comparison reads), never the whole file.
    """
    places = Places.of(spec)
    spec, src = places.spec, places.source
    if spec.cube.file_group:
        kwargs.setdefault("group", spec.cube.file_group)
    if src.is_local:
        with xr.open_dataset(src.local_path / key, **kwargs) as ds:
            yield ds
        return
    try:
        reader = open_remote(src, key)
    except RemoteReadError as e:
        if not storage.exists(src, key):
            raise FileNotFoundError(f"{src.url_of(key)} does not exist") from None
        raise storage.StorageError(str(e)) from None
    try:
        with reader, xr.open_dataset(reader, engine="h5netcdf", **kwargs) as ds:
            yield ds
    except Exception as e:
        # h5py reports a failed read of the store as a generic error: the reader knows better.
        failure = store_failure(reader, key)
        if failure is None:
            raise
        raise failure from e


def file_region(
    spec: DatasetSpec, template: Template, pos: tuple[int, ...]
) -> dict[str, slice | int]:
    """Where one file sits in the cube: a block per concat dim (an index if the file lacks it)."""
    absent = {
        d
        for d in spec.cube.dim_names
        if not any(d in v.file_dims for v in template.variables.values())
    }
    out: dict[str, slice | int] = {}
    for d, (start, n) in template.steps.places(pos).items():
        out[d] = start if d in absent else slice(start, start + n)
    return out


def compare_file(
    cube: xr.Dataset,
    ref: xr.Dataset,
    region: dict[str, slice | int],
    key: str,
    *,
    include_static: bool,
    concat_dims: list[str],
    dropped: Iterable[str] = (),
) -> list[str]:
    """Every variable of the file against the same place in the cube; returns the differences."""
    problems = []
    for raw_name, var in ref.variables.items():
        name = str(raw_name)
        if name in dropped:
            continue
        if name not in cube.variables:
            problems.append(f"{key}: variable {name} is not in the cube")
            continue
        varies = any(d in concat_dims for d in var.dims)
        if not varies and not include_static:
            continue
        cv = cube.variables[name]
        sel = {d: s for d, s in region.items() if d in cv.dims}
        got = cv.isel(sel)
        if got.dims != var.dims or got.shape != var.shape:
            problems.append(
                f"{key}: {name} has dims {got.dims}{got.shape} in the cube, "
                f"{var.dims}{var.shape} in the file"
            )
            continue
        file_values = np.asarray(var.values)
        recoded = _recoding(name, var, got, ref, cube)
        if recoded is not None:  # times in the file's own units: as the scan converted them
            file_values = convert_times(file_values, *recoded)
        a, b = _comparable(np.asarray(got.values)), _comparable(file_values)
        if a.dtype != b.dtype and not a.dtype.kind == b.dtype.kind == "U":
            problems.append(f"{key}: {name} is {a.dtype} in the cube, {b.dtype} in the file")
            continue
        if not np.array_equal(a, b, equal_nan=a.dtype.kind in "fcmM"):
            bad = int(np.count_nonzero(~((a == b) | (_isnan(a) & _isnan(b)))))
            problems.append(f"{key}: {name} differs in {bad} of {a.size} values")
        skip = {"units", "calendar"} if recoded is not None else set()
        if not _attrs_equal(
            {k: x for k, x in got.attrs.items() if k not in skip},
            {k: x for k, x in var.attrs.items() if k not in skip},
        ):
            problems.append(
                f"{key}: {name} attributes differ: {dict(got.attrs)} vs {dict(var.attrs)}"
            )
    return problems


def compare_files(
    spec: DatasetSpec | Places,
    template: Template,
    cube: xr.Dataset,
    files: list[PlannedFile],
    *,
    include_static: bool | None = None,
    **open_kwargs: Any,
) -> list[str]:
    """Each file opened with xarray (same `open_kwargs` as the cube) against its place in the
    cube. Static variables are compared for the template file, or for all with include_static."""
    places = Places.of(spec)
    spec = places.spec
    problems = []
    for pf in files:
        with open_source_file(places, pf.key, **open_kwargs) as ref:
            problems += compare_file(
                cube,
                ref,
                file_region(spec, template, pf.pos),
                pf.key,
                include_static=include_static or pf.key == template.source_key,
                concat_dims=spec.cube.dim_names,
                dropped=set(spec.cube.drop),
            )
    return problems


def _recoding(
    name: str, var: xr.Variable, got: xr.Variable, ref: xr.Dataset, cube: xr.Dataset
) -> tuple[str, str, str, str] | None:
    """(file units, calendar, cube units, calendar) of raw times encoded differently in the file
    and in the cube; a bounds variable without units takes its parent's. None: compare as is."""

    def encoding(v: xr.Variable, ds: xr.Dataset) -> tuple[str, str] | None:
        if "units" not in v.attrs:
            parents = [p for p in ds.variables.values() if p.attrs.get("bounds") == name]
            if not parents:
                return None
            v = parents[0]
        units = str(v.attrs.get("units", ""))
        return (units, str(v.attrs.get("calendar", "standard"))) if " since " in units else None

    src, dst = encoding(var, ref), encoding(got, cube)
    if src is None or dst is None or src == dst:
        return None
    return (*src, *dst)


def _comparable(a: np.ndarray) -> np.ndarray:
    """Strings as one numpy type: Zarr and netCDF hand them back as different object types."""
    if a.dtype.kind == "T" or (a.dtype.kind == "O" and all(isinstance(x, str) for x in a.flat)):
        return np.array(a.tolist(), dtype=str).reshape(a.shape)
    return a


def _attrs_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Attribute dicts equal, with NaN equal to NaN (a common _FillValue)."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        xa, ya = np.asarray(x), np.asarray(y)
        if xa.dtype.kind in "fc" and ya.dtype.kind in "fc" and xa.shape == ya.shape:
            if not np.array_equal(xa, ya, equal_nan=True):
                return False
        elif not np.array_equal(xa, ya):
            return False
    return True


def _isnan(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "fc":
        return np.isnan(a)
    if a.dtype.kind in "mM":
        return np.isnat(a)
    return np.zeros(a.shape, bool)


def planned_files(
    spec: DatasetSpec | Places, plan: Plan, groups: list[str] | None = None
) -> list[PlannedFile]:
    work = Places.of(spec).work
    out = []
    for g in groups or list(plan.groups):
        for sid in plan.groups[g]:
            out.extend(workarea.load_shard_files(work, sid, plan))
    return out


Ref = tuple[str, int, int]  # (source key, byte offset, length)


def expected_chunks(places: Places, template: Template, shard: str) -> dict[str, Ref]:
    """Chunk key -> (source file, offset, length) for every chunk the shard's scan found stored."""
    res = read_result(storage.read_bytes(places.work, result_key(shard)))
    out: dict[str, Ref] = {}
    placers = [RefPlacer(v, template.steps) for v in template.virtual_varying()]
    for i, f in enumerate(res.meta["files"]):
        blocks = template.steps.places(f["pos"])
        for p in placers:
            name = p.v.name
            refs = p.refs(f["key"], blocks, res.offsets[name][i], res.lengths[name][i])
            for idx, off, length in refs:
                out[f"{name}/c/" + "/".join(map(str, idx))] = (f["key"], off, length)
    return out


def static_chunks(places: Places, template: Template) -> dict[str, Ref]:
    """Chunk key -> ref of the virtual variables written once, from the template file."""
    out: dict[str, Ref] = {}
    key = template.source_key
    with open_h5(places.source, key) as f:
        node = file_node(f, key, template.file_group)
        for v, grid, offsets, lengths in static_refs(node, template):
            for idx in np.ndindex(*grid):
                if lengths[idx]:
                    k = f"{v.name}/c/" + "/".join(map(str, idx))
                    out[k] = (key, int(offsets[idx]), int(lengths[idx]))
    return out


def cube_refs(store: Any, names: list[str]) -> dict[str, tuple[str, int, int, int]]:
    """Every chunk of these arrays as the cube holds it: key -> (location, offset, length, kind)."""
    out: dict[str, tuple[str, int, int, int]] = {}

    async def collect(name: str) -> None:
        async for coords, kinds, paths, offsets, lengths, _ in store.array_chunk_iterator(name):
            for row, path in enumerate(paths):
                k = f"{name}/c/" + "/".join(str(int(c)) for c in coords[row])
                out[k] = (path, int(offsets[row]), int(lengths[row]), int(kinds[row]))

    for name in names:
        sync(collect(name))
    return out


def check_refs(
    places: Places,
    template: Template,
    shards: list[str],
    store: Any,
    *,
    complete: bool,
) -> list[str]:
    """Every chunk ref of the virtual arrays against what the scans found, byte for byte.

    Names the file and the chunk of a missing ref, of a ref that points elsewhere (swapped
    between files, shifted by a position, another byte range) and, if `complete` (the whole
    cube is validated), of a ref the plan does not place at all.
    """
    expected = static_chunks(places, template)
    for sid in shards:
        expected |= expected_chunks(places, template, sid)
    names = [v.name for v in template.variables.values() if v.kind == "virtual"]
    found = cube_refs(store, names)
    prefix = places.source.url

    def where(loc: str) -> str:
        return urllib.parse.unquote(loc.removeprefix(prefix)) if loc.startswith(prefix) else loc

    problems = []
    for key, (source, off, length) in expected.items():
        got = found.get(key)
        if got is None:
            problems.append(f"{source}: chunk {key} is missing from the cube")
        elif got[3] != VIRTUAL_KIND or (where(got[0]), got[1], got[2]) != (
            source,
            off,
            length,
        ):
            problems.append(
                f"{source}: chunk {key} points to {where(got[0]) or 'data stored in the repo'} "
                f"bytes {got[1]}+{got[2]}; the scan found {source} bytes {off}+{length}"
            )
    if complete:
        for key in sorted(found.keys() - expected.keys()):
            loc, off, length, _ = found[key]
            problems.append(
                f"chunk {key} points to {where(loc) or 'data stored in the repo'} bytes "
                f"{off}+{length}, where the scans found no chunk"
            )
    return problems


def missing_chunks(places: Places, template: Template, shards: list[str], store: Any) -> list[str]:
    """Chunks the scans found that the cube lacks, checked key by key (a big cube's sample)."""
    problems = []
    for sid in shards:
        for key, (source, _, _) in expected_chunks(places, template, sid).items():
            if not sync(store.exists(key)):
                problems.append(f"{source}: chunk {key} is missing from the cube")
    return problems


def check_inline(places: Places, template: Template, shards: list[str], store: Any) -> list[str]:
    """Every inline value the scans of `shards` read against its place in the cube (stored
    values, NaN equal to NaN): a commit that lost or misplaced one is named with its file."""
    spec = places.spec
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    inline = [v for v in template.inline_varying() if v.name not in path_dims]
    if not inline or not shards:
        return []
    arrays = {
        v.name: np.asarray(zarr.open_array(store, path=v.name, mode="r")[...]) for v in inline
    }
    problems = []
    for sid in shards:
        res = read_result(storage.read_bytes(places.work, result_key(sid)))
        for i, f in enumerate(res.meta["files"]):
            region = file_region(spec, template, tuple(f["pos"]))
            for v in inline:
                index = tuple(region.get(d, slice(None)) for d in v.dims)
                got = _comparable(arrays[v.name][index])
                want = _comparable(res.values[v.name][i])
                if want.ndim == got.ndim:  # a file shorter than the longest of its shard
                    want = want[tuple(slice(0, n) for n in got.shape)]
                want = want.reshape(got.shape)
                same = (got == want) | (_isnan(got) & _isnan(want))
                if not np.all(same):
                    bad = int(np.count_nonzero(~same))
                    problems.append(
                        f"{f['key']}: {v.name} differs from the values its scan read in {bad} "
                        f"of {got.size} places"
                    )
    return problems


def check_metadata(template: Template, store: Any) -> list[str]:
    """Each array's Zarr metadata (dtype, fill value, codecs, dims, attributes) as the template
    says; shape and chunking are checked against the plan elsewhere."""
    proto = default_buffer_prototype()
    problems = []
    root = sync(store.get("zarr.json", prototype=proto))
    root_attrs = json.loads(root.to_bytes()).get("attributes", {}) if root is not None else {}
    problems += _attr_diffs("the cube", root_attrs, template.attrs)
    for v in template.variables.values():
        buf = sync(store.get(f"{v.name}/zarr.json", prototype=proto))
        if buf is None:
            continue  # reported as missing by validate_cube
        got = json.loads(buf.to_bytes())
        ones = [1] * len(v.dims)  # shape and chunks are not compared here
        grid: dict[str, Any] = {"name": "regular", "configuration": {"chunk_shape": ones}}
        want_md = ArrayV3Metadata.from_dict(
            {**v.zarr, "dimension_names": v.dims, "shape": ones, "chunk_grid": grid}
        )
        want = json.loads(want_md.to_buffer_dict(proto)["zarr.json"].to_bytes())
        for k in sorted((got.keys() | want.keys()) - {"shape", "chunk_grid", "attributes"}):
            if got.get(k) != want.get(k):
                problems.append(
                    f"{v.name}: {k} is {got.get(k)!r} in the cube, {want.get(k)!r} in the template"
                )
        problems += _attr_diffs(v.name, got.get("attributes", {}), want.get("attributes", {}))
    return problems


def _attr_diffs(what: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    return [
        f"{what}: attribute {k} is "
        + (f"{got[k]!r}" if k in got else "absent")
        + " in the cube, "
        + (f"{want[k]!r}" if k in want else "absent")
        + " in the template"
        for k in sorted(got.keys() | want.keys())
        if not _attrs_equal({k: got.get(k)}, {k: want.get(k)})
    ]


def validate_cube(
    spec: DatasetSpec | Places,
    plan: Plan,
    template: Template,
    *,
    samples: int = 3,
    seed: int = 0,
    groups: list[str] | None = None,
) -> dict[str, Any]:
    """Validate the whole cube, or only `groups` (a partial build)."""
    t0 = time.perf_counter()
    selected = [g for g in plan.groups if not groups or g in groups]
    problems: list[str] = []
    places = Places.of(spec)
    spec = places.spec
    repo = places.repo()
    hist = history(repo, spec.target.branch)
    pending = [g for g in selected if g not in hist.groups]
    if pending:
        problems.append(f"{len(pending)} groups are not committed: {', '.join(pending[:10])}")
    session = repo.readonly_session(spec.target.branch)
    # Stored values bit for bit: no CF decoding on either side (Zarr's JSON attributes lose the
    # float32 type of scale_factor, so decoded packed integers differ in dtype, not in content).
    cube = xr.open_zarr(session.store, consolidated=False, chunks=None, **RAW)
    for v in template.variables.values():
        if v.name not in cube.variables:
            problems.append(f"variable {v.name} is missing from the cube")
            continue
        want = tuple(array_shape(v, plan, template))
        if cube.variables[v.name].shape != want:
            problems.append(f"{v.name} has shape {cube.variables[v.name].shape}, planned {want}")
    problems += check_metadata(template, session.store)
    shards = [s for g in selected if g in hist.groups for s in plan.groups[g]]
    n_files = sum(plan.shards[s]["files"] for s in shards)
    small = n_files * max(len(template.virtual_varying()), 1) <= FULL_CHUNK_CHECK_LIMIT
    if small:  # every ref of the cube against the scans
        complete = not groups and not pending
        problems += check_refs(places, template, shards, session.store, complete=complete)
    else:  # a big cube: a deterministic sample of shards, checked key by key
        shards = sorted(random.Random(seed).sample(shards, min(len(shards), SAMPLED_SHARDS)))
        problems += missing_chunks(places, template, shards, session.store)
    problems += check_inline(places, template, shards, session.store)
    files = [pf for sid in shards for pf in workarea.load_shard_files(places.work, sid, plan)]
    sampled = _pick(files, samples, seed)
    problems += compare_files(places, template, cube, sampled, **RAW)
    summary = {
        "step": "validate",
        "ok": not problems,
        "groups": len(selected),
        "committed": len(selected) - len(pending),
        "shards_checked_for_chunks": len(shards),
        "files_checked_for_chunks": len(files),
        "files_compared": len(sampled),
        "missing_files": len(plan.missing),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if problems:
        raise ValidationFailed(problems)
    return summary


def _pick(files: list[PlannedFile], n: int, seed: int) -> list[PlannedFile]:
    """The first and last file plus random others: the edges are where layouts go wrong."""
    if n <= 0 or not files:
        return []
    if n >= len(files):
        return list(files)
    chosen = {0, len(files) - 1}
    rng = random.Random(seed)
    while len(chosen) < n:
        chosen.add(rng.randrange(len(files)))
    return [files[i] for i in sorted(chosen)[:n]]
