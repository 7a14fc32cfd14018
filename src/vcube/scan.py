"""What refs and values does a shard hold? HDF5 metadata only: chunk refs, inline values, checks.

No xarray Dataset is built per file: h5py walks each variable's chunk index (byte offset and
size of every chunk) and reads the few small inline variables. The result of a shard is one
deterministic binary object in the work area, so a retried task writes the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from vcube import storage
from vcube.hdf import (
    ScanError,
    TemplateError,
    attr_text,
    check_groups,
    chunk_refs,
    file_node,
    fingerprint,
    h5_message,
    is_vlen_string,
    open_h5,
    open_reader,
    read_values,
    store_failure,
)
from vcube.layout import file_grid
from vcube.plan import PlannedFile
from vcube.spec import DatasetSpec
from vcube.template import Template, VarSchema, compare_fingerprint

# 2: files carry their steps; refs and values padded to the longest file.
# 3: files carry their ETag and last-modified time in fields of their own.
RESULT_FORMAT = 3


def result_digest(shard_digest: str, template: Template) -> str:
    """A scan depends on the shard's files and on the template it was checked against."""
    key = f"{shard_digest}:{template.digest}:{RESULT_FORMAT}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _check_unchanged(pf: PlannedFile, etag: str | None) -> None:
    """A file replaced between plan and scan would get refs with the old checksum: say so now."""
    if etag is not None and pf.etag is not None and etag != pf.etag:
        raise ScanError(
            f"{pf.key}: the file changed since the plan (ETag {etag}, planned {pf.etag}): "
            "run `vcube plan` again"
        )


@dataclass
class FileScan:
    refs: dict[str, tuple[np.ndarray, np.ndarray]]
    values: dict[str, np.ndarray]
    steps: list[int]  # the file's length along each concat dim (1 for a dim it lacks)


def scan_file(
    f: h5py.File,
    key: str,
    template: Template,
    skip_values: set[str],
    concat: list[str],
) -> FileScan:
    """Check one open file against the template; return its chunk refs, inline values and
    steps along the `concat` dims (outermost first). Files may differ from the template in
    their length along the concat dims only."""
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    values: dict[str, np.ndarray] = {}
    try:
        node = file_node(f, key, template.file_group)
        check_groups(f, key, template.file_group, template.dropped_groups, set(template.variables))
    except TemplateError as e:
        raise ScanError(str(e)) from None
    dim_cache: dict[Any, str] = {}
    steps: dict[str, tuple[int, str]] = {}
    converted: dict[str, tuple[VarSchema, tuple[str | None, str]]] = {}
    for v in template.variables.values():
        try:
            ds = node[v.name]
        except KeyError:
            raise ScanError(f"{key}: variable {v.name} is missing (the template has it)") from None
        fp = fingerprint(ds, dim_cache)
        if len(fp["shape"]) == len(v.file_dims):
            for j, d in enumerate(v.file_dims):
                if d not in concat:
                    continue
                n = fp["shape"][j]
                first = steps.setdefault(d, (n, v.name))
                if first[0] != n:
                    raise ScanError(
                        f"{key}: variables {first[1]} and {v.name} disagree on the length of "
                        f"{d!r} ({first[0]} and {n})"
                    )
                fp["shape"][j] = v.fingerprint["shape"][j]
        try:
            convert = compare_fingerprint(key, v.name, v.fingerprint, fp, inline=v.kind == "inline")
        except TemplateError as e:
            raise ScanError(str(e)) from None
        if convert and not v.varies:
            # Written once, from the template file: this file's values never reach the cube.
            a = convert[0]
            raise ScanError(
                f"{key}: variable {v.name} differs from the template: attribute {a} "
                f"{fp['attrs'][a]!r} (template: {v.fingerprint['attrs'][a]!r}); it does not vary "
                "along the concat dims, so the cube holds the template file's values only"
            )
        if not v.varies:
            continue
        try:
            if v.kind == "virtual":
                refs[v.name] = chunk_refs(ds, file_grid(v, ds.shape))
            elif v.name not in skip_values:
                values[v.name] = read_values(ds)
                if convert:
                    values[v.name] = convert_inline(key, v, ds, values[v.name], convert)
                    if "bounds" in ds.attrs:
                        converted[attr_text(ds.attrs["bounds"])] = (v, _time_encoding(ds.attrs))
        except ScanError as e:
            raise ScanError(f"{key}: {e}") from None
        except OSError as e:
            raise ScanError(f"{key}: cannot read variable {v.name} ({h5_message(e)})") from None
    _convert_bounds(key, template, values, converted)
    return FileScan(refs, values, [steps[d][0] if d in steps else 1 for d in concat])


def _convert_bounds(
    key: str,
    template: Template,
    values: dict[str, np.ndarray],
    converted: dict[str, tuple[VarSchema, tuple[str | None, str]]],
) -> None:
    """Bounds without units of their own (CF) are in their converted parent's units."""
    for name, (parent, encoding) in converted.items():
        b = template.variables.get(name)
        if b is None or "units" in b.fingerprint["attrs"]:
            continue  # not in the cube, or converted (or checked) on its own
        if b.kind != "inline":
            raise ScanError(
                f"{key}: variable {name} holds the bounds of {parent.name}, whose units differ "
                f"from the template's: list {name} under cube.inline so that it is converted too"
            )
        if name in values:
            values[name] = _convert_with(key, name, parent, values[name], encoding)


def _stack(arrays: list[np.ndarray], dtype: Any) -> np.ndarray:
    """One array per file, padded with zeros to the largest (files differ in length)."""
    shape = tuple(max(sizes) for sizes in zip(*(a.shape for a in arrays), strict=True))
    out = np.zeros((len(arrays), *shape), dtype)
    for i, a in enumerate(arrays):
        region: tuple[int | slice, ...] = (i, *[slice(0, n) for n in a.shape])
        out[region] = a
    return out


def convert_inline(
    key: str, v: VarSchema, ds: h5py.Dataset, values: np.ndarray, attrs: list[str]
) -> np.ndarray:
    """An inline variable whose `units`/`calendar` (listed in `attrs`) differ from the
    template's: its values in the template's encoding (decoded with the file's own attributes,
    encoded with the template's, `v.fingerprint["attrs"]`). Only times can be converted."""
    return _convert_with(key, v.name, v, values, _time_encoding(ds.attrs))


def _time_encoding(attrs: Any) -> tuple[str | None, str]:
    units = attrs.get("units")
    calendar = attrs.get("calendar")
    return (
        None if units is None else attr_text(units),
        "standard" if calendar is None else attr_text(calendar),
    )


def _convert_with(
    key: str, name: str, parent: VarSchema, values: np.ndarray, encoding: tuple[str | None, str]
) -> np.ndarray:
    """`values` of variable `name`, encoded as `encoding` in the file, in `parent`'s template
    encoding (a bounds variable takes its parent's)."""
    want = parent.fingerprint["attrs"]
    to_units, to_cal = want.get("units"), want.get("calendar") or "standard"
    units, cal = encoding
    if not (units and to_units and " since " in units and " since " in to_units):
        raise ScanError(
            f"{key}: variable {name} differs from the template: attribute units {units!r} "
            f"(template: {to_units!r}); only times ('<unit> since <date>') are converted"
        )
    try:
        return convert_times(values, units, cal, to_units, to_cal)
    except ValueError as e:
        raise ScanError(
            f"{key}: variable {name}: attribute units {units!r} (calendar {cal}): cannot convert "
            f"its times to the template's {to_units!r} ({to_cal}): {e}"
        ) from None


def convert_times(
    values: np.ndarray, units: str, calendar: str, to_units: str, to_calendar: str
) -> np.ndarray:
    """Times encoded with (units, calendar) re-encoded with (to_units, to_calendar), same dtype.

    Dates are carried between calendars field by field (a date that does not exist in the
    target calendar, such as Feb 29 into noleap, is refused). An integer dtype must receive
    whole numbers: a time that falls between two of the target's units is refused, never
    rounded. NaN stays NaN.
    """
    import cftime

    arr = np.asarray(values)
    flat = arr.astype(np.float64).ravel()
    ok = np.isfinite(flat)
    out = np.full(flat.shape, np.nan)
    if ok.any():
        dates = cftime.num2date(flat[ok], units, calendar=calendar, only_use_cftime_datetimes=True)
        if (
            cftime.datetime(2000, 1, 1, calendar=calendar).calendar
            != cftime.datetime(2000, 1, 1, calendar=to_calendar).calendar
        ):
            dates = [
                cftime.datetime(
                    d.year,
                    d.month,
                    d.day,
                    d.hour,
                    d.minute,
                    d.second,
                    d.microsecond,
                    calendar=to_calendar,
                )
                for d in np.ravel(dates)
            ]
        out[ok] = np.asarray(cftime.date2num(dates, to_units, calendar=to_calendar), np.float64)
    if arr.dtype.kind in "iu":
        if not ok.all():
            raise ValueError("an integer time is not finite")
        if not np.array_equal(out, np.round(out)):
            bad = out[out != np.round(out)][:3]
            raise ValueError(f"{bad.tolist()} are not whole numbers of the template's unit")
    return out.reshape(arr.shape).astype(arr.dtype)


def scan_shard(
    spec: DatasetSpec,
    src: storage.Location,
    template: Template,
    shard: str,
    files: list[PlannedFile],
    digest: str,
    *,
    on_file: Callable[[int, int], None] | None = None,
    reuse: dict[FileId, FileScan] | None = None,
) -> bytes:
    """Scan every file of a shard; return the serialized result (deterministic bytes).

    Files found in `reuse` (their scans from an earlier result, same identity and template) are
    not opened: the result is the same bytes as a scan of every file.
    """
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    virt = template.virtual_varying()
    inl = [v for v in template.inline_varying() if v.name not in path_dims]
    reuse = reuse or {}
    known = {i: reuse[file_id(pf)] for i, pf in enumerate(files) if file_id(pf) in reuse}
    fresh = [pf for i, pf in enumerate(files) if i not in known]
    n = len(fresh)
    scanned: list[FileScan] = []
    # Remote files are opened ahead in the background, each with the blocks the previous walks
    # touched (vcube.prefetch.Prefetcher): about one round trip per file instead of one per miss.
    readers: Iterator[Any] | None = None
    if not src.is_local:
        from vcube.prefetch import Prefetcher

        # 16 KiB blocks, hints widened by 24 KiB: on full-grid atlas-like files one round trip
        # and ~3 MB per file after the first (tests/support/measure_remote.py).
        readers = iter(
            Prefetcher(
                src,
                [(pf.key, None) for pf in fresh],
                depth=8,
                block_size=16 * 1024,
                initial_bytes=64 * 1024,
                hint_pad=24 * 1024,
                cold_block_size=64 * 1024,
            )
        )
    try:
        for i, pf in enumerate(fresh):
            scanned.append(_scan_one(pf, src, readers, template, path_dims, spec.cube.dim_names))
            if on_file:
                on_file(i + 1, n)
    finally:
        if readers is not None:
            readers.close()  # type: ignore[attr-defined]
    new = iter(scanned)
    scans = [known[i] if i in known else next(new) for i in range(len(files))]
    offsets = {v.name: _stack([s.refs[v.name][0] for s in scans], np.uint64) for v in virt}
    lengths = {v.name: _stack([s.refs[v.name][1] for s in scans], np.uint64) for v in virt}
    values = {v.name: _stack([s.values[v.name] for s in scans], _value_dtype(v)) for v in inl}
    meta = {
        "shard": shard,
        "digest": digest,
        "template": template.digest,
        "format": RESULT_FORMAT,
        "refs": int(sum(np.count_nonzero(a) for a in lengths.values())),
        "files": [
            {
                "key": p.key,
                "size": int(p.size),
                "etag": p.etag,
                "last_modified": p.last_modified,
                "pos": list(p.pos),
                "steps": s.steps,
            }
            for p, s in zip(files, scans, strict=True)
        ],
    }
    arrays = {f"offsets/{k}": a for k, a in offsets.items()}
    arrays |= {f"lengths/{k}": a for k, a in lengths.items()}
    # Strings are stored as fixed-width unicode: a result holds no pickled objects.
    arrays |= {
        f"values/{k}": a.astype(str) if a.dtype.kind == "O" else a for k, a in values.items()
    }
    return write_result(meta, arrays)


def _value_dtype(v: VarSchema) -> np.dtype:
    return np.dtype(object) if is_vlen_string(v.fingerprint) else np.dtype(v.fingerprint["dtype"])


def _scan_one(
    pf: PlannedFile,
    src: storage.Location,
    readers: Iterator[Any] | None,
    template: Template,
    path_dims: set[str],
    concat: list[str],
) -> FileScan:
    """Scan one file of a shard.

    A read that failed in the object store (connection refused, timeouts after the client's own
    retries) is a StorageError (exit 3, retried by Argo), never blamed on the file.
    """
    from vcube.remote import RemoteReadError

    reader = None
    try:
        if readers is None:
            opened = open_h5(src, pf.key)
        else:
            reader = next(readers)
            _check_unchanged(pf, reader.etag)
            opened = open_reader(reader, pf.key)
        with opened as f:
            fs = scan_file(f, pf.key, template, path_dims, concat)
    except RemoteReadError as e:
        raise storage.StorageError(f"{pf.key}: {e}") from None
    except (ScanError, OSError) as e:
        failure = store_failure(reader, pf.key)
        if failure is not None:
            raise failure from None
        if isinstance(e, ScanError):
            raise
        raise ScanError(f"{pf.key}: cannot read ({h5_message(e)})") from None
    for name, (o, ln) in fs.refs.items():
        size = int(pf.size)
        if int((o + ln).max(initial=0)) > size:
            raise ScanError(
                f"{pf.key}: variable {name} has chunks past the end of the file "
                f"({size} bytes): truncated?"
            )
    return fs


FileId = tuple[str, int, str]  # key, size, revision (ETag, else last-modified) as planned


def file_id(pf: PlannedFile) -> FileId:
    """What a file's scan depends on besides the template: a new version is a new file."""
    return (pf.key, int(pf.size), pf.revision)


def reusable_scans(data: bytes, template: Template, concat: list[str]) -> dict[FileId, FileScan]:
    """The per-file scans held in an earlier shard result, if it was made against this template
    (and result format); else none. Each file's refs and values are cut back out of the
    shard's padded arrays with its own steps, so they are what scanning it again would give."""
    try:
        res = read_result(data)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return {}  # unreadable: scan everything again
    meta = res.meta
    if meta.get("template") != template.digest or meta.get("format") != RESULT_FORMAT:
        return {}
    virt = [v.name for v in template.virtual_varying()]
    inl = [v.name for v in template.inline_varying() if v.name in res.values]
    if any(v not in res.offsets or v not in res.lengths for v in virt):
        return {}
    out: dict[FileId, FileScan] = {}
    for i, f in enumerate(meta.get("files", [])):
        if "size" not in f:
            return {}
        steps = dict(zip(concat, f["steps"], strict=True))
        refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        values: dict[str, np.ndarray] = {}
        for name in virt:
            v = template.variables[name]
            cut = _cut(i, file_grid(v, _file_shape(v, steps)))
            refs[name] = (res.offsets[name][cut].copy(), res.lengths[name][cut].copy())
        for name in inl:
            v = template.variables[name]
            a = np.array(res.values[name][_cut(i, _file_shape(v, steps))])
            values[name] = a.astype(object) if is_vlen_string(v.fingerprint) else a
        planned = PlannedFile(f["key"], int(f["size"]), f["etag"], f["last_modified"], ())
        out[file_id(planned)] = FileScan(refs, values, list(f["steps"]))
    return out


def _cut(i: int, shape: tuple[int, ...]) -> tuple[int | slice, ...]:
    """File `i`'s part of a shard array padded to its longest file."""
    return (i, *[slice(0, n) for n in shape])


def _file_shape(v: VarSchema, steps: dict[str, int]) -> tuple[int, ...]:
    """A variable's shape in a file holding `steps` along the concat dims."""
    return tuple(steps.get(d, n) for d, n in zip(v.file_dims, v.file_shape, strict=True))


def write_result(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """A zip of .npy arrays plus meta.json with fixed timestamps: same input, same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(
            zipfile.ZipInfo("meta.json", (1980, 1, 1, 0, 0, 0)), json.dumps(meta, sort_keys=True)
        )
        for name in sorted(arrays):
            b = io.BytesIO()
            np.lib.format.write_array(b, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, b.getvalue())
    return buf.getvalue()


@dataclass
class ShardResult:
    meta: dict[str, Any]
    offsets: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    values: dict[str, np.ndarray]


def read_meta(data: bytes) -> dict[str, Any]:
    """Only the small meta.json of a shard result (what is it, which files, how many refs)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        meta: dict[str, Any] = json.loads(z.read("meta.json"))
    return meta


def read_result(data: bytes) -> ShardResult:
    out = ShardResult({}, {}, {}, {})
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        out.meta = json.loads(z.read("meta.json"))
        for name in z.namelist():
            if not name.endswith(".npy"):
                continue
            kind, var = name.removesuffix(".npy").split("/", 1)
            arr = np.lib.format.read_array(io.BytesIO(z.read(name)), allow_pickle=False)
            getattr(out, kind)[var] = arr
    return out
