"""The cube's schema, derived once from a template file through VirtualiZarr.

VirtualiZarr's HDF parser turns the template into Zarr V3 array metadata (dtype, codecs, fill
value, CF attributes, dimension names); we keep that metadata verbatim and only change shapes
and chunking to the cube's. Every other file is then only checked against the template's
*fingerprint* (what h5py reports about each variable's storage), which is cheap to compute.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import h5py
import numpy as np

from vcube import catalog, storage
from vcube.spec import DatasetSpec

TEMPLATE_KEY = "template.json"


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

    @property
    def file_grid(self) -> tuple[int, ...]:
        """How many chunks one file holds along each of its dims."""
        return tuple(-(-s // c) for s, c in zip(self.file_shape, self.file_chunks, strict=True))


@dataclass
class Template:
    source_key: str
    attrs: dict[str, Any]
    variables: dict[str, VarSchema]
    blocks: dict[str, int]  # length of one file along each concat dim
    spec_digest: str = ""  # the spec it was derived for: another spec needs another template

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Template:
        raw = json.loads(data)
        raw["variables"] = {k: VarSchema(**v) for k, v in raw["variables"].items()}
        return cls(**raw)

    @cached_property
    def digest(self) -> str:
        """Hash of the whole schema (computed once: commits ask for it per shard)."""
        return hashlib.sha256(self.to_json()).hexdigest()[:16]

    def virtual_varying(self) -> list[VarSchema]:
        return [v for v in self.variables.values() if v.kind == "virtual" and v.varies]

    def inline_varying(self) -> list[VarSchema]:
        return [v for v in self.variables.values() if v.kind == "inline" and v.varies]


def fingerprint(ds: h5py.Dataset) -> dict[str, Any]:
    """What must be equal in every file for the template's codecs and chunking to apply."""
    fill = ds.fillvalue
    return {
        "shape": list(ds.shape),
        "dtype": ds.dtype.str,
        "chunks": list(ds.chunks) if ds.chunks else None,
        "compression": ds.compression,
        "compression_opts": ds.compression_opts
        if not isinstance(ds.compression_opts, tuple)
        else list(ds.compression_opts),
        "shuffle": bool(ds.shuffle),
        "fletcher32": bool(ds.fletcher32),
        "scaleoffset": ds.scaleoffset,
        # as bytes: a NaN fill value must equal itself
        "fillvalue": None if fill is None else np.asarray(fill, ds.dtype).tobytes().hex(),
    }


def compare_fingerprint(key: str, name: str, want: dict[str, Any], got: dict[str, Any]) -> None:
    # Shape first: it is the difference a person recognises (another grid, another level count).
    keys = sorted(want, key=lambda k: (k != "shape", k != "dtype", k))
    diffs = [f"{k} {got.get(k)!r} (template: {want[k]!r})" for k in keys if want[k] != got.get(k)]
    if diffs:
        raise TemplateError(
            f"{key}: variable {name} differs from the template: " + "; ".join(diffs)
        )


def _manifest_group(src: storage.Location, key: str, drop: list[str]) -> Any:
    from obspec_utils.registry import ObjectStoreRegistry
    from virtualizarr.parsers import HDFParser

    registry = ObjectStoreRegistry({src.url: src.store})
    mstore = HDFParser(drop_variables=drop)(src.url_of(key), registry)
    return mstore._group  # the parsed ManifestGroup: arrays + group attributes


def derive_template(spec: DatasetSpec, key: str) -> Template:
    """Build the cube schema from one source file (VirtualiZarr metadata + h5py fingerprints)."""
    from vcube.scan import open_h5

    src = catalog.source_location(spec)
    concat = spec.cube.dim_names
    try:
        group = _manifest_group(src, key, list(spec.cube.drop))
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TemplateError(
            f"{key}: cannot read the template file with VirtualiZarr: {first}"
        ) from e
    variables: dict[str, VarSchema] = {}
    with open_h5(src, key) as f:
        for name, arr in group.arrays.items():
            meta = arr.metadata.to_dict()
            dims = list(meta.get("dimension_names") or [])
            shape = list(meta["shape"])
            chunks = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
            varies = [d for d in dims if d in concat]
            kind = (
                "inline" if (name in spec.cube.inline or name in concat or not shape) else "virtual"
            )
            for d, s, c in zip(dims, shape, chunks, strict=True):
                if kind == "virtual" and d in concat and s % c:
                    raise TemplateError(
                        f"{key}: variable {name} has chunks of {c} along {d} but the file holds "
                        f"{s}: a chunk must not straddle two files"
                    )
            variables[name] = VarSchema(
                name=name,
                dims=dims,
                file_dims=list(dims),
                file_shape=shape,
                file_chunks=chunks,
                kind=kind,
                varies=varies,
                zarr=meta,
                fingerprint=fingerprint(f[name]),
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
    for d in concat:
        if d in absent:
            blocks[d] = 1
            continue
        sizes = {v.file_shape[v.file_dims.index(d)] for v in variables.values() if d in v.file_dims}
        if len(sizes) > 1:
            raise TemplateError(f"{key}: variables disagree on the length of {d!r}: {sizes}")
        blocks[d] = sizes.pop()
    for d in spec.cube.dims:
        if d.values == "file" and d.name not in variables and d.name not in absent:
            raise TemplateError(
                f"{key}: the file has no coordinate variable {d.name!r}: set `values: path` "
                f"on that dim to take its values from the path"
            )
    attrs = dict(group.metadata.attributes)
    return Template(
        source_key=key, attrs=attrs, variables=variables, blocks=blocks, spec_digest=spec.digest()
    )


def save_template(spec: DatasetSpec, template: Template) -> None:
    storage.write_bytes(catalog.work_location(spec), TEMPLATE_KEY, template.to_json())


def load_template(spec: DatasetSpec) -> Template:
    work = catalog.work_location(spec)
    try:
        return Template.from_json(storage.read_bytes(work, TEMPLATE_KEY))
    except FileNotFoundError:
        raise TemplateError(
            f"no template in {spec.target.work_url}: run `vcube init` first"
        ) from None
