"""What is the cube's schema? Derived once from a template file through VirtualiZarr.

VirtualiZarr's HDF parser turns the template into Zarr V3 array metadata (dtype, codecs, fill
value, CF attributes, dimension names); we keep that metadata verbatim and only change shapes
and chunking to the cube's. Every other file is then only checked against the template's
*fingerprint* (what h5py reports about each variable's storage), which is cheap to compute.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

from vcube import storage, workarea
from vcube.hdf import (
    CF_ATTRS,
    TemplateError,
    check_groups,
    check_unsupported,
    file_node,
    fingerprint,
    h5_on,
    inline_fill_value,
    is_vlen_string,
    open_source,
    store_failure,
)
from vcube.plan import Layout
from vcube.spec import DatasetSpec

# 2: fingerprints hold dims, layout, the filter pipeline and the CF attributes. A template of an
# older vcube would not check those: `vcube init` derives it again.
TEMPLATE_FORMAT = 2


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
    # Steps per file along the concat dims, learnt by init from scans (Layout). Kept
    # in its own object in the work area and out of the digest: scans do not depend on it.
    layout: Layout | None = None

    def to_json(self) -> bytes:
        raw = asdict(replace(self, layout=None))  # the layout (thousands of files) left out
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
    def steps(self) -> Layout:
        """The layout; every step after init needs it."""
        if self.layout is None:
            raise TemplateError("the cube's layout is not known yet: run `vcube init` first")
        return self.layout

    def virtual_varying(self) -> list[VarSchema]:
        return [v for v in self.variables.values() if v.kind == "virtual" and v.varies]

    def inline_varying(self) -> list[VarSchema]:
        return [v for v in self.variables.values() if v.kind == "inline" and v.varies]


# Differences an inline variable may have: its values are converted to the template's encoding
# (decoded with the file's units and calendar, encoded with the template's) by the scan.
CONVERTIBLE_ATTRS = ("units", "calendar")
# How the bytes are stored. Inline values are read decoded by HDF5, so for them these may differ.
STORAGE_KEYS = ("layout", "chunks", "filters", "fillvalue")
# Per layout: why it cannot be referenced by byte ranges, and what to do instead.
UNREFERENCEABLE = {
    "compact": "compact layout (the values sit inside the object header)",
    "virtual": "HDF5 virtual-dataset layout (the values live in other datasets or files)",
    "external": "external storage (the values live in another raw file)",
}


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


def _shown(text: str | None) -> str:
    return "absent" if text is None else repr(text)


def _manifest_group(
    src: storage.Location, key: str, drop: list[str], group: str, reader: Any
) -> Any:
    """VirtualiZarr's parse of the template file, through `reader` (already open, shared with
    vcube's own h5py walk, so the file's bytes are fetched once)."""
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({src.url: src.store})
    parser = HDFParser(
        group=group or None, drop_variables=drop, reader_factory=lambda _store, _path: reader
    )
    try:
        mstore = parser(src.url_of(key), registry)
    except Exception as e:
        failure = store_failure(reader, key)
        if failure is not None:
            raise failure from None
        raise TemplateError(
            f"{key}: cannot read the template file with VirtualiZarr: {storage.first_line(e)}"
        ) from e
    return mstore._group  # the parsed ManifestGroup: arrays + group attributes


def derive_template(src: storage.Location, spec: DatasetSpec, key: str) -> Template:
    """Build the cube schema from one source file (VirtualiZarr metadata + h5py fingerprints)."""
    concat = spec.cube.dim_names
    group_path = spec.cube.file_group or ""
    drop = spec.cube.dropped_variables
    variables: dict[str, VarSchema] = {}
    # One reader for the checks, VirtualiZarr's parse (inside them: it opens the file again on
    # the same reader) and the fingerprints: the template file is read once.
    with open_source(src, key) as reader, h5_on(reader, key) as f:
        node = file_node(f, key, group_path)
        check_groups(f, key, group_path, spec.cube.dropped_groups, set())
        check_unsupported(node, key, set(drop))
        group = _manifest_group(src, key, drop, group_path, reader)
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


def save_template(work: storage.Location, template: Template) -> None:
    storage.write_bytes(work, workarea.TEMPLATE_KEY, template.to_json())


def load_template(work: storage.Location) -> Template:
    try:
        template = Template.from_json(storage.read_bytes(work, workarea.TEMPLATE_KEY))
    except FileNotFoundError:
        raise TemplateError(f"no template in {work.url}: run `vcube init` first") from None
    if template.format < TEMPLATE_FORMAT:
        raise TemplateError(
            f"the template in {work.url} was derived by an older vcube: run `vcube init` again"
        )
    if storage.exists(work, workarea.LAYOUT_KEY):
        template.layout = workarea.load_layout(work)
    return template
