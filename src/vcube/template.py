"""The cube's schema, derived once from a template file through VirtualiZarr.

VirtualiZarr's HDF parser turns the template into Zarr V3 array metadata (dtype, codecs, fill
value, CF attributes, dimension names); we keep that metadata verbatim and only change shapes
and chunking to the cube's. Every other file is then only checked against the template's
*fingerprint* (what h5py reports about each variable's storage), which is cheap to compute.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import h5py
import numpy as np

from vcube import catalog, storage
from vcube.spec import DatasetSpec

TEMPLATE_KEY = "template.json"
# 2: fingerprints hold dims, layout, the filter pipeline and the CF attributes. A template of an
# older vcube would not check those: `vcube init` derives it again.
TEMPLATE_FORMAT = 2


class TemplateError(RuntimeError):
    """A file does not have the structure of the template; the message names file and variable."""


@dataclass
class VarSchema:
    """One cube variable: how it is stored in a file and how it is laid out in the cube."""

    name: str
    dims: list[str]  # in the cube: concat dims the files lack (values: path) come first
    file_dims: list[str]
    file_shape: list[int]
    file_chunks: list[int]
    kind: str  # "virtual" (chunk refs into the files) or "inline" (values stored in the repo)
    varies: list[str]  # the concat dims it spans (empty: written once, from the template)
    zarr: dict[str, Any]  # Zarr V3 array metadata from VirtualiZarr (shape/chunks of one file)
    fingerprint: dict[str, Any]


@dataclass
class Template:
    source_key: str
    attrs: dict[str, Any]
    variables: dict[str, VarSchema]
    blocks: dict[str, int]  # length of the template file along each concat dim
    spec_digest: str = ""  # the spec it was derived for: another spec needs another template
    file_group: str = ""  # the group inside each file the cube is built from ("": the root)
    dropped_groups: list[str] = field(default_factory=list)  # other groups, left out on purpose
    format: int = 0  # TEMPLATE_FORMAT when derived (absent from templates of older versions)
    # Steps per file along the concat dims, learnt by init from scans (catalog.Layout). Kept
    # in its own object in the work area and out of the digest: scans do not depend on it.
    layout: catalog.Layout | None = None

    def to_json(self) -> bytes:
        raw = asdict(self)
        raw.pop("layout")
        return json.dumps(raw, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Template:
        raw = json.loads(data)
        raw["variables"] = {k: VarSchema(**v) for k, v in raw["variables"].items()}
        return cls(**raw)

    @cached_property
    def digest(self) -> str:
        """Hash of the whole schema (computed once: commits ask for it per shard)."""
        return hashlib.sha256(self.to_json()).hexdigest()[:16]

    @property
    def steps(self) -> catalog.Layout:
        """The layout; every step after init needs it."""
        if self.layout is None:
            raise TemplateError("the cube's layout is not known yet: run `vcube init` first")
        return self.layout

    def virtual_varying(self) -> list[VarSchema]:
        return [v for v in self.variables.values() if v.kind == "virtual" and v.varies]

    def inline_varying(self) -> list[VarSchema]:
        return [v for v in self.variables.values() if v.kind == "inline" and v.varies]


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
# Differences an inline variable may have: its values are converted to the template's encoding
# (decoded with the file's units and calendar, encoded with the template's) by the scan.
CONVERTIBLE_ATTRS = ("units", "calendar")
# How the bytes are stored. Inline values are read decoded by HDF5, so for them these may differ.
STORAGE_KEYS = ("layout", "chunks", "filters", "fillvalue")
_LAYOUTS = {
    h5py.h5d.COMPACT: "compact",
    h5py.h5d.CONTIGUOUS: "contiguous",
    h5py.h5d.CHUNKED: "chunked",
    h5py.h5d.VIRTUAL: "virtual",
}
# Per layout: why it cannot be referenced by byte ranges, and what to do instead.
UNREFERENCEABLE = {
    "compact": "compact layout (the values sit inside the object header)",
    "virtual": "HDF5 virtual-dataset layout (the values live in other datasets or files)",
    "external": "external storage (the values live in another raw file)",
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


def compare_fingerprint(
    key: str, name: str, want: dict[str, Any], got: dict[str, Any], *, inline: bool = False
) -> list[str]:
    """Raise TemplateError naming file, variable and attribute if a file would decode otherwise.

    With `inline` (an inline variable read from every file): the storage may differ, and a
    difference in `units` or `calendar` is returned instead of raised, for the scan to convert
    the values to the template's encoding.
    """
    # Shape first: it is the difference a person recognises (another grid, another level count).
    keys = sorted(
        (k for k in want if k != "attrs" and not (inline and k in STORAGE_KEYS)),
        key=lambda k: (k != "shape", k != "dtype", k),
    )
    diffs = [f"{k} {got.get(k)!r} (template: {want[k]!r})" for k in keys if want[k] != got.get(k)]
    convert = []
    want_attrs, got_attrs = want.get("attrs", {}), got.get("attrs", {})
    for attr in CF_ATTRS:
        w, g = want_attrs.get(attr), got_attrs.get(attr)
        if w == g:
            continue
        if inline and attr in CONVERTIBLE_ATTRS and w is not None and g is not None:
            convert.append(attr)
            continue
        diffs.append(f"attribute {attr} {_shown(g)} (template: {_shown(w)})")
    if diffs:
        hint = (
            ""
            if inline
            else (": its chunks are read with the template's encoding, so every file must match it")
        )
        raise TemplateError(
            f"{key}: variable {name} differs from the template: " + "; ".join(diffs) + hint
        )
    return convert


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


def _shown(text: str | None) -> str:
    return "absent" if text is None else repr(text)


def _manifest_group(src: storage.Location, key: str, drop: list[str], group: str) -> Any:
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({src.url: src.store})
    mstore = HDFParser(group=group or None, drop_variables=drop)(src.url_of(key), registry)
    return mstore._group  # the parsed ManifestGroup: arrays + group attributes


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


def derive_template(spec: DatasetSpec, key: str) -> Template:
    """Build the cube schema from one source file (VirtualiZarr metadata + h5py fingerprints)."""
    from vcube.scan import open_h5

    src = catalog.source_location(spec)
    concat = spec.cube.dim_names
    group_path = spec.cube.file_group or ""
    drop = spec.cube.dropped_variables
    with open_h5(src, key) as f:
        node = file_node(f, key, group_path)
        check_groups(f, key, group_path, spec.cube.dropped_groups, set())
        check_unsupported(node, key, set(drop))
    try:
        group = _manifest_group(src, key, drop, group_path)
    except Exception as e:
        raise TemplateError(
            f"{key}: cannot read the template file with VirtualiZarr: {storage.first_line(e)}"
        ) from e
    variables: dict[str, VarSchema] = {}
    with open_h5(src, key) as f:
        node = file_node(f, key, group_path)
        dim_cache: dict[Any, str] = {}
        for name, arr in group.arrays.items():
            meta = arr.metadata.to_dict()
            dims = list(meta.get("dimension_names") or [])
            shape = list(meta["shape"])
            chunks = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
            varies = [d for d in dims if d in concat]
            fp = fingerprint(node[name], dim_cache)
            # Variable-length strings live in HDF5's global heap: no byte range holds the
            # values, so they are always stored inline.
            inline = name in spec.cube.inline or name in concat or not shape or is_vlen_string(fp)
            kind = "inline" if inline else "virtual"
            if kind == "virtual" and fp["layout"] in UNREFERENCEABLE:
                raise TemplateError(
                    f"{key}: variable {name} has {UNREFERENCEABLE[fp['layout']]}: it cannot be "
                    "referenced by byte ranges; list it under cube.inline in the spec (its "
                    "values are then copied into the cube), or under cube.drop"
                )
            if kind == "inline":
                fill = inline_fill_value(node[name])
                meta["fill_value"] = fill if fill is not None else meta["fill_value"]
            variables[name] = VarSchema(
                name=name,
                dims=dims,
                file_dims=list(dims),
                file_shape=shape,
                file_chunks=chunks,
                kind=kind,
                varies=varies,
                zarr=meta,
                fingerprint=fp,
            )
    missing_inline = [v for v in spec.cube.inline if v not in variables]
    if missing_inline:
        raise TemplateError(f"{key}: inline variables {missing_inline} are not in the file")
    blocks: dict[str, int] = {}
    absent = [d for d in concat if not any(d in v.dims for v in variables.values())]
    for d in spec.cube.dims:
        if d.values == "path" and d.name not in absent:
            raise TemplateError(
                f"{key}: the files have a {d.name!r} dimension: take its values from the files "
                f"(remove `values: path`), or drop the variables that carry it"
            )
        if d.name in absent and d.values != "path":
            raise TemplateError(
                f"{key}: no variable has the concat dim {d.name!r}: set `values: path` on it "
                "to add it from the path"
            )
    for v in variables.values():
        # A dim the files lack is added in front of every variable that spans another concat dim.
        if absent and v.varies and v.name not in concat:
            v.dims = absent + v.dims
            v.varies = absent + v.varies
    for dim in concat:
        if dim in absent:
            blocks[dim] = 1
            continue
        sizes = {
            v.file_shape[v.file_dims.index(dim)] for v in variables.values() if dim in v.file_dims
        }
        if len(sizes) > 1:
            raise TemplateError(f"{key}: variables disagree on the length of {dim!r}: {sizes}")
        blocks[dim] = sizes.pop()
    for d in spec.cube.dims:
        if d.values == "file" and d.name not in variables and d.name not in absent:
            raise TemplateError(
                f"{key}: the file has no coordinate variable {d.name!r}: set `values: path` "
                f"on that dim to take its values from the path"
            )
    attrs = dict(group.metadata.attributes)
    return Template(
        source_key=key,
        attrs=attrs,
        variables=variables,
        blocks=blocks,
        spec_digest=spec.digest(),
        file_group=group_path,
        dropped_groups=spec.cube.dropped_groups,
        format=TEMPLATE_FORMAT,
    )


def save_template(spec: DatasetSpec, template: Template) -> None:
    storage.write_bytes(catalog.work_location(spec), TEMPLATE_KEY, template.to_json())


def load_template(spec: DatasetSpec) -> Template:
    work = catalog.work_location(spec)
    try:
        template = Template.from_json(storage.read_bytes(work, TEMPLATE_KEY))
    except FileNotFoundError:
        raise TemplateError(
            f"no template in {spec.target.work_url}: run `vcube init` first"
        ) from None
    if template.format < TEMPLATE_FORMAT:
        raise TemplateError(
            f"the template in {spec.target.work_url} was derived by an older vcube: run "
            "`vcube init` again"
        )
    if storage.exists(work, catalog.LAYOUT_KEY):
        template.layout = catalog.load_layout(spec)
    return template
