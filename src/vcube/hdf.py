"""How is an HDF5 file opened and walked, local or remote?

h5py over the local path or a ranged `remote.RemoteFile`, and what the template and the scans
read through it: the node the cube is built from, its groups and unsupported types, each
variable's fingerprint, chunk refs and values. The two errors a file can raise live here, the
lowest module that reads files: `ScanError` (the file cannot be read) and `TemplateError` (the
file does not have the structure the cube needs); `scan` and `template` re-export them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vcube import storage


class ScanError(RuntimeError):
    """A file could not be scanned; the message names the file and the problem."""


class TemplateError(RuntimeError):
    """A file does not have the structure of the template; the message names file and variable."""


@contextlib.contextmanager
def open_h5(loc: storage.Location, key: str) -> Iterator[h5py.File]:
    """Open a source file for metadata reads: the path on local disk, a ranged reader on S3."""
    if loc.is_local:
        path = _local_path(loc, key)
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise ScanError(f"{key}: not a readable HDF5/netCDF4 file ({h5_message(e)})") from None
        with f:
            yield f
        return
    with open_source(loc, key) as reader, h5_on(reader, key) as f:
        yield f


def _local_path(loc: storage.Location, key: str) -> Path:
    path = loc.local_path / key
    if not path.exists():
        raise ScanError(f"{key}: file not found under {loc.url}")
    return path


@contextlib.contextmanager
def open_source(loc: storage.Location, key: str) -> Iterator[Any]:
    """One file-like reader of a source file, for every walk of it to share (closed on exit).

    On S3 a block-cached `remote.RemoteFile`: a second walk (h5py again, or VirtualiZarr's
    parser handed this reader) finds the blocks the first one fetched. On disk the open file.
    """
    if loc.is_local:
        with _local_path(loc, key).open("rb") as fh:
            yield fh
        return
    from vcube.remote import RemoteReadError, open_remote

    try:
        reader = open_remote(loc, key)
    except RemoteReadError as e:
        raise storage.StorageError(str(e)) from None
    with reader:
        yield reader


def store_failure(reader: Any, key: str) -> storage.StorageError | None:
    """A StorageError if the reader's store failed (then the file is not at fault), else None."""
    failure = getattr(reader, "failure", None)
    if failure is None:
        return None
    return storage.StorageError(f"{key}: {failure}")


@contextlib.contextmanager
def h5_on(reader: Any, key: str) -> Iterator[h5py.File]:
    """h5py on an open reader, which stays open. A read the store failed is a StorageError
    (h5py reports it as a generic HDF5 error), never blamed on the file."""
    try:
        try:
            f = h5py.File(reader, "r")
        except OSError as e:
            raise ScanError(f"{key}: not a readable HDF5/netCDF4 file ({h5_message(e)})") from None
        with f:
            yield f
    except (ScanError, OSError) as e:
        raise store_failure(reader, key) or e from None


@contextlib.contextmanager
def open_reader(reader: Any, key: str) -> Iterator[h5py.File]:
    """h5py on an open `vcube.remote.RemoteFile` (closed on exit)."""
    with reader, h5_on(reader, key) as f:
        yield f


def h5_message(e: Exception) -> str:
    msg = str(e)
    if "truncated" in msg.lower() or "eof" in msg.lower():
        return "truncated: " + msg
    return msg


def chunk_refs(ds: h5py.Dataset, grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Byte offset and length of every chunk of a dataset, laid out on its chunk grid.

    A chunk never written (all fill value) has length 0: it reads back as the fill value.
    An uncompressed contiguous dataset is one chunk.
    """
    offsets = np.zeros(grid, dtype=np.uint64)
    lengths = np.zeros(grid, dtype=np.uint64)
    dsid = ds.id
    if ds.chunks is None:
        dcpl = dsid.get_create_plist()
        layout = dcpl.get_layout()
        if layout != h5py.h5d.CONTIGUOUS or dcpl.get_external_count():
            what = "compact storage (inside the object header)"
            if layout == h5py.h5d.VIRTUAL:
                what = "HDF5 virtual-dataset layout"
            elif layout == h5py.h5d.CONTIGUOUS:
                what = "external storage"
            raise ScanError(
                f"variable {ds.name.lstrip('/')} has {what}: it cannot be referenced; "
                "list it under cube.inline in the spec"
            )
        off = dsid.get_offset()
        if off is not None:  # None: never written, reads as the fill value
            offsets.reshape(-1)[0] = off
            lengths.reshape(-1)[0] = dsid.get_storage_size()
        return offsets, lengths
    chunks = ds.chunks

    def visit(info: Any) -> None:
        if info.filter_mask:
            raise ScanError(
                f"variable {ds.name.lstrip('/')} has a chunk stored with skipped filters "
                f"(mask {info.filter_mask}): cannot reference it"
            )
        idx = tuple(o // c for o, c in zip(info.chunk_offset, chunks, strict=True))
        offsets[idx] = info.byte_offset
        lengths[idx] = info.size

    dsid.chunk_iter(visit)
    return offsets, lengths


def read_values(ds: h5py.Dataset) -> np.ndarray:
    """All values of a small variable; variable-length strings as text, not bytes."""
    if h5py.check_string_dtype(ds.dtype) is not None and ds.dtype.kind == "O":
        return np.asarray(ds.asstr()[()], dtype=object)
    return np.asarray(ds[()])


# CF attributes that change decoded values: checked, with their dtypes, in every file.
CF_ATTRS = (
    "scale_factor",
    "add_offset",
    "_FillValue",
    "missing_value",
    "units",
    "calendar",
    "valid_min",
    "valid_max",
    "valid_range",
    "_Unsigned",
)


_LAYOUTS = {
    h5py.h5d.COMPACT: "compact",
    h5py.h5d.CONTIGUOUS: "contiguous",
    h5py.h5d.CHUNKED: "chunked",
    h5py.h5d.VIRTUAL: "virtual",
}


def fingerprint(ds: h5py.Dataset, dim_cache: dict[Any, str] | None = None) -> dict[str, Any]:
    """Everything about a variable that changes its decoded values or how its bytes are read.

    `dim_cache` (one per open file) remembers the names of dimension scales already resolved.
    """
    fill = ds.fillvalue
    dcpl = ds.id.get_create_plist()
    attr_names = _attr_names(ds)
    layout = _LAYOUTS.get(dcpl.get_layout(), str(dcpl.get_layout()))
    if layout == "contiguous" and dcpl.get_external_count():
        layout = "external"
    return {
        "shape": list(ds.shape),
        "dtype": ds.dtype.str,
        "objtype": object_type(ds.dtype),
        "dims": dim_names(ds, attr_names, {} if dim_cache is None else dim_cache),
        "layout": layout,
        "chunks": list(ds.chunks) if ds.chunks else None,
        "filters": filter_pipeline(dcpl),
        # as bytes: a NaN fill value must equal itself
        "fillvalue": None
        if fill is None or ds.dtype.kind == "O"
        else np.asarray(fill, ds.dtype).tobytes().hex(),
        "attrs": cf_attrs(ds, attr_names),
    }


def _attr_names(ds: h5py.Dataset) -> list[str]:
    """The names of a dataset's attributes (the low-level listing: 6x faster than h5py's)."""
    names: list[bytes] = []
    if h5py.h5a.get_num_attrs(ds.id):
        h5py.h5a.iterate(ds.id, names.append)
    return [n.decode("utf-8", errors="replace") for n in names]


def object_type(dtype: np.dtype) -> str | None:
    """What an HDF5 type that numpy sees as `object` really holds (None: not an object type)."""
    if dtype.kind != "O":
        return None
    s = h5py.check_string_dtype(dtype)
    if s is not None:
        return f"string ({s.encoding}, variable length)"
    ref = h5py.check_ref_dtype(dtype)
    if ref is not None:
        return "region reference" if ref is h5py.RegionReference else "object reference"
    vlen = h5py.check_vlen_dtype(dtype)
    if vlen is not None:
        return f"variable-length sequence of {np.dtype(vlen).name}"
    return "object"


def is_vlen_string(fp: dict[str, Any]) -> bool:
    return str(fp.get("objtype") or "").startswith("string")


def filter_pipeline(dcpl: Any) -> list[str]:
    """Every HDF5 filter with its parameters, in order, plugins included ("32015 zstd [3]")."""
    out = []
    for i in range(dcpl.get_nfilters()):
        fid, _flags, params, name = dcpl.get_filter(i)
        label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        out.append(f"{fid} {label.split()[0] if label.strip() else '?'} {list(params)}")
    return out


def dim_names(
    ds: h5py.Dataset, attr_names: list[str], cache: dict[Any, Any]
) -> list[str | None] | None:
    """The names of the dimension scales attached to each axis (netCDF4 dimension names).

    Resolving a dimension-scale reference opens an object, so per file the names are cached by
    netCDF4's `_Netcdf4Coordinates` (the variable's dimension ids, unique within a file): a
    file's hundred variables share a few dimension tuples.
    """
    if not ds.shape:
        return []
    if "DIMENSION_LIST" not in attr_names:
        return None  # no dimension scales: plain HDF5, dims are anonymous
    key = None
    if "_Netcdf4Coordinates" in attr_names:
        key = ("ids", tuple(np.asarray(ds.attrs["_Netcdf4Coordinates"]).ravel().tolist()))
        if key in cache:
            return list(cache[key])
    lists = ds.attrs["DIMENSION_LIST"]
    out: list[str | None] = []
    for refs in lists:
        if len(refs) == 0:
            out.append(None)
            continue
        oid = h5py.h5r.dereference(refs[0], ds.id)
        if oid not in cache:
            cache[oid] = h5py.h5r.get_name(refs[0], ds.id).decode().rsplit("/", 1)[-1]
        out.append(cache[oid])
    if key is not None and len(key[1]) == len(out):
        cache[key] = tuple(out)
    return out


def cf_attrs(ds: h5py.Dataset, attr_names: list[str]) -> dict[str, str]:
    """The CF attributes that change decoded values, as text that shows value and dtype."""
    return {name: attr_text(ds.attrs[name]) for name in attr_names if name in CF_ATTRS}


def attr_text(value: Any) -> str:
    """'0.01 (float32)', 'days since 2000-01-01': equal texts mean equal values and dtypes."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, str):
        return value
    a = np.asarray(value)
    if a.dtype.kind in "SUO":
        items = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in a.ravel()]
        return " ".join(items)
    return " ".join(str(x) for x in a.ravel()) + f" ({a.dtype.name})"


def inline_fill_value(ds: h5py.Dataset) -> Any:
    """The fill value of an inline array: what an unwritten place reads as in the cube.

    It must not look like data (the files' own HDF5 fill value is often 0): the source's
    `_FillValue` if it has one (xarray masks it), else NaN for floats (NaT once decoded as
    times), else netCDF's default fill for the integer type (-2147483647 for int32, ...),
    which netCDF tools show as missing; "" for strings.
    """
    dt = ds.dtype
    if dt.kind == "O" or dt.kind in "SU":
        return ""
    if "_FillValue" in ds.attrs:
        fill = np.asarray(ds.attrs["_FillValue"]).astype(dt).ravel()[0]
    elif dt.kind == "f":
        return "NaN"
    elif dt.kind in "iu":
        import netCDF4

        fill = np.asarray(netCDF4.default_fillvals[f"{dt.kind}{dt.itemsize}"], dt)
    elif dt.kind == "b":
        return False
    else:
        return None  # keep VirtualiZarr's
    value = fill.item()
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def file_node(f: h5py.File, key: str, group: str) -> h5py.Group:
    """The group of an open file the cube is built from."""
    if not group:
        return f
    node = f.get(group)
    if not isinstance(node, h5py.Group):
        raise TemplateError(f"{key}: the file has no group /{group} (cube.file_group in the spec)")
    return node


def unmentioned_groups(f: h5py.File, group: str, dropped: list[str], known: set[str]) -> list[str]:
    """Groups in the file that the spec neither builds from nor drops, as '/path'.

    Looks at the members of the root and of every group down to the built one; members named in
    `known` (the template's variables in the built group) are datasets and are not opened.
    """
    parts = [p for p in group.split("/") if p]
    skip = set(dropped)
    found = []
    node: h5py.Group = f
    path = ""
    for depth in range(len(parts) + 1):
        on_path = parts[depth] if depth < len(parts) else None
        for name in node:
            if name == on_path or (on_path is None and name in known) or path + name in skip:
                continue
            if node.get(name, getclass=True) is h5py.Group:
                found.append("/" + path + name)
        if on_path is None:
            break
        node = node[on_path]
        path += on_path + "/"
    return found


def check_groups(f: h5py.File, key: str, group: str, dropped: list[str], known: set[str]) -> None:
    """A file with groups the spec does not mention is refused: they would vanish silently."""
    extra = unmentioned_groups(f, group, dropped, known)
    if extra:
        where = f"/{group}" if group else "the root group"
        raise TemplateError(
            f"{key}: the file has netCDF4 groups {extra} that the spec does not mention (the "
            f"cube is built from {where} only, the others would be left out silently): add "
            f"{', '.join(repr(g) for g in extra)} to cube.drop to leave them out, or set "
            f"cube.file_group to the one to build from"
        )


def check_unsupported(node: h5py.Group, key: str, drop: set[str]) -> None:
    """Types no Zarr array can hold from these files: refused, naming the variable and the fix."""
    for name in node:
        if name in drop or node.get(name, getclass=True) is not h5py.Dataset:
            continue
        kind = object_type(node[name].dtype)
        if kind is not None and not kind.startswith("string"):
            raise TemplateError(
                f"{key}: variable {name} holds HDF5 {kind}s, which have no meaning outside their "
                f"file and no Zarr type: list it under cube.drop in the spec"
            )
