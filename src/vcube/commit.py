"""How is a region written into the repository and committed? Init creates or grows the
cube's arrays; a commit writes one group's region (chunk refs and inline values) at a time.

Each commit holds whole groups only and records the group id, file count and a digest of its
inputs in the commit metadata (`repo.history` reads it back); that history is the single source
of truth for what is done, so a crashed or repeated run simply skips what is committed and
redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import icechunk
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync

from vcube import storage
from vcube.hdf import file_node, open_h5, read_values
from vcube.layout import (
    CommitError,
    RefPlacer,
    array_chunks,
    array_shape,
    chunk_grid,
    cube_chunks,
    static_refs,
)
from vcube.places import Places
from vcube.plan import Plan, PlanError
from vcube.repo import META_KIND, History, history, inputs_digest, save_reader_config
from vcube.scan import ShardResult, read_result, result_digest
from vcube.spec import DatasetSpec
from vcube.template import Template, VarSchema
from vcube.workarea import result_key

COMMIT_TRIES = 50


# --- repository ---------------------------------------------------------------------------------


def _array_metadata(v: VarSchema, shape: list[int], chunks: list[int]) -> ArrayV3Metadata:
    d = dict(v.zarr)
    d["shape"] = shape
    d["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": chunks}}
    d["dimension_names"] = v.dims
    return ArrayV3Metadata.from_dict(d)


def _path_coord_metadata(name: str, keys: list[str], chunk: int) -> tuple[ArrayV3Metadata, Any]:
    numeric = all(k.isdigit() for k in keys)
    values = np.array(
        [int(k) for k in keys] if numeric else keys, dtype=np.int64 if numeric else str
    )
    md = ArrayV3Metadata.from_dict(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [len(keys)],
            "data_type": "int64" if numeric else "string",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0 if numeric else "",
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]
            if numeric
            else [{"name": "vlen-utf8"}],
            "attributes": {},
            "dimension_names": [name],
        }
    )
    return md, values


def _zarr_doc(md: ArrayV3Metadata) -> dict[str, Any]:
    """An array's zarr.json as written, parsed (compared as JSON: key order is not a change)."""
    doc: dict[str, Any] = json.loads(
        md.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    )
    return doc


def _set_json(store: Any, key: str, md: ArrayV3Metadata | bytes) -> bool:
    """Write a zarr.json document if it differs from the stored one; True if written."""
    proto = default_buffer_prototype()
    data = md if isinstance(md, bytes) else md.to_buffer_dict(proto)["zarr.json"].to_bytes()
    old = sync(store.get(key, prototype=proto))
    if old is not None and json.loads(old.to_bytes()) == json.loads(data):
        return False  # compared as JSON: key order is not a change
    sync(store.set(key, proto.buffer.from_bytes(data)))
    return True


def checksum_of(src: storage.Location, etag: str | None, last_modified: str) -> datetime | str:
    """What Icechunk checks before reading a chunk: the ETag on S3, the mtime on local disk (or
    on a store that gives no ETag).

    Icechunk keeps whole seconds; rounding up keeps a file that did not change readable.
    """
    if etag is not None and not src.is_local:
        return etag
    t = datetime.fromisoformat(last_modified)
    return (t.replace(microsecond=0) + timedelta(seconds=1)) if t.microsecond else t


# --- init ---------------------------------------------------------------------------------------


def init_cube(places: Places, plan: Plan, template: Template, template_file: Any) -> dict[str, Any]:
    """Create or grow every array to the planned shape and write what the plan already knows.

    Idempotent: when nothing differs, nothing is committed. Growing keeps what is committed
    (virtual arrays keep their chunk grid; small inline arrays are rewritten in their new
    chunking); an array whose layout changed, or that left the template, is dropped.
    """
    t0 = time.perf_counter()
    spec = places.spec
    repo = places.repo(create=True)
    session = repo.writable_session(spec.target.branch)
    store = session.store
    root_doc = json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": template.attrs}, sort_keys=True
    ).encode()
    _set_json(store, "zarr.json", root_doc)
    src = places.source
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    wanted = set(template.variables) | path_dims
    for name in zarr.open_group(store, mode="r").array_keys():
        if name not in wanted:
            sync(store.delete_dir(name))  # left the template (dropped, renamed)
    for v in template.variables.values():
        shape = array_shape(v, plan, template)
        md = _array_metadata(v, shape, array_chunks(v, spec, shape, template))
        _ensure_array(store, v.name, md, keep_values=v.kind == "inline")
    dim_by_name = {d["name"]: d for d in plan.dims}
    for name in path_dims:
        keys = dim_by_name[name]["keys"]
        chunk = template.blocks[name] if name == spec.cube.commit_by else max(len(keys), 1)
        md, values = _path_coord_metadata(name, keys, chunk)
        _ensure_array(store, name, md, keep_values=False)
        arr = zarr.open_array(store, path=name, mode="r+")
        if not np.array_equal(np.asarray(arr[:]), values):
            arr[:] = values
    # Variables that do not vary along a concat dim come from the template file, once.
    prev = history(repo, spec.target.branch).init
    # (Also when the template file itself was rewritten: its refs carry its checksum, and its
    # new content may put the static chunks elsewhere.)
    revision = template_file.revision
    if (
        prev is None
        or prev.metadata.get("template") != template.digest
        or prev.metadata.get("template_file") != revision
    ):
        _write_static(spec, template, store, src, template_file)
        # Readers open the repo with the stored config: it must hold the virtual chunk
        # container even if a crash hit between creating the repo and this first commit.
        save_reader_config(spec, places.source, places.target)
    if not session.has_uncommitted_changes:
        return {"step": "init", "changed": False, "seconds": round(time.perf_counter() - t0, 3)}
    snap = session.commit(
        f"init: {len(template.variables)} arrays for plan {plan.digest}",
        metadata={
            META_KIND: "init",
            "plan": plan.digest,
            "template": template.digest,
            "template_file": revision,
        },
    )
    return {
        "step": "init",
        "changed": True,
        "snapshot": snap,
        "arrays": len(template.variables),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _ensure_array(store: Any, name: str, md: ArrayV3Metadata, *, keep_values: bool) -> None:
    """Give an array this metadata. A new shape on the same chunk grid is a metadata change; a
    new chunking drops the chunks, and with `keep_values` the values are written back."""
    proto = default_buffer_prototype()
    new = _zarr_doc(md)
    old_buf = sync(store.get(f"{name}/zarr.json", prototype=proto))
    old = json.loads(old_buf.to_bytes()) if old_buf is not None else None
    if old == new:
        return
    if old is None or {**old, "shape": None} == {**new, "shape": None}:
        _set_json(store, f"{name}/zarr.json", md)
        return
    values = np.asarray(zarr.open_array(store, path=name, mode="r")[...]) if keep_values else None
    sync(store.delete_dir(name))
    _set_json(store, f"{name}/zarr.json", md)
    if values is not None and values.ndim == len(md.shape):
        overlap = tuple(slice(0, min(a, b)) for a, b in zip(values.shape, md.shape, strict=True))
        zarr.open_array(store, path=name, mode="r+")[overlap] = values[overlap]


def _write_static(
    spec: DatasetSpec, template: Template, store: Any, src: storage.Location, pf: Any
) -> None:
    checksum = checksum_of(src, pf.etag, pf.last_modified)
    url = src.url_of(template.source_key)
    with open_h5(src, template.source_key) as f:
        node = file_node(f, template.source_key, template.file_group)
        for v in template.variables.values():
            if v.kind == "inline" and not v.varies:
                zarr.open_array(store, path=v.name, mode="r+")[...] = read_values(node[v.name])
        for v, grid, offs, lens in static_refs(node, template):
            _set_refs(store, v, grid, url, offs, lens, (0,) * len(grid), checksum)


def _set_refs(
    store: Any,
    v: VarSchema,
    grid: tuple[int, ...],
    url: str,
    offsets: np.ndarray,
    lengths: np.ndarray,
    arr_offset: tuple[int, ...],
    checksum: datetime | str,
) -> None:
    flat_len = lengths.reshape(-1)
    locs = [url if n else "" for n in flat_len] if not flat_len.all() else [url] * flat_len.size
    failed = store.set_virtual_refs_arr(
        v.name,
        grid,
        locs,
        np.ascontiguousarray(offsets.reshape(-1), dtype=np.uint64),
        np.ascontiguousarray(flat_len, dtype=np.uint64),
        arr_offset=arr_offset,
        checksum=checksum,
    )
    if failed:
        raise CommitError(f"Icechunk refused refs of {v.name} from {url}: chunks {failed[:5]}")


# --- commit -------------------------------------------------------------------------------------


def load_group_results(
    work: storage.Location,
    plan: Plan,
    template: Template,
    group: str,
    data: list[bytes | None] | None = None,
) -> list[ShardResult]:
    """The group's shard results, checked against the current inputs, in the plan's order.

    `data`: their bytes as `read_group_results` returned them (read ahead), else read here."""
    sids = plan.groups[group]
    out = []
    if data is None:
        data = read_group_results(work, plan, group)
    for sid, raw in zip(sids, data, strict=True):
        if raw is None:
            raise CommitError(
                f"group {group}: shard {sid} has not been scanned: "
                f"run `vcube scan SPEC --shard {sid}`"
            )
        res = read_result(raw)
        if res.meta.get("digest") != result_digest(plan.shards[sid]["digest"], template):
            raise CommitError(
                f"group {group}: the scan of shard {sid} is stale (its files, the template or "
                f"vcube's result format changed since): run `vcube scan SPEC --shard {sid}` again"
            )
        out.append(res)
    return out


def read_group_results(work: storage.Location, plan: Plan, group: str) -> list[bytes | None]:
    """The bytes of the group's shard results (None where there is none), read in parallel: one
    round trip to S3 instead of one per shard."""

    def read(sid: str) -> bytes | None:
        try:
            return storage.read_bytes(work, result_key(sid))
        except FileNotFoundError:
            return None

    sids = plan.groups[group]
    with ThreadPoolExecutor(max_workers=max(1, min(len(sids), 16))) as pool:
        return list(pool.map(read, sids))


def commit_group(
    places: Places,
    plan: Plan,
    template: Template,
    group: str,
    *,
    on_file: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write one group's region (chunk refs and inline values) and commit it once.

    When another writer commits first, the session is rebased only if the two commits touch
    no common chunk or metadata; otherwise the group's write is redone on the new tip, so the
    read-compare-write of shared inline arrays sees the other writer's values (a rebase that
    kept "ours" would put this group's stale copy of a shared chunk over them).
    """
    return _commit_one(places, plan, template, group, on_file=on_file)[0]


def _commit_one(
    places: Places,
    plan: Plan,
    template: Template,
    group: str,
    *,
    on_file: Callable[[int, int], None] | None = None,
    prepared: Future[list[bytes | None]] | None = None,
    known: History | None = None,
) -> tuple[dict[str, Any], History | None]:
    """`commit_group`, and the branch's history after it (None if not known).

    `prepared`: the group's shard results being read ahead (`commit_groups`), used instead
    of reading them here. `known`: the history as the caller last knew it, used instead of
    reading it when the branch's tip is still that history's tip (checked against the session
    opened for the commit, so another writer's commit is never missed).
    """
    t0 = time.perf_counter()
    if group not in plan.groups:
        raise CommitError(f"group {group!r} is not in the plan (groups: {_some(plan.groups)})")
    if template.steps.plan != plan.digest:
        raise CommitError(
            f"group {group}: the cube's layout was learnt for another plan: run `vcube init`"
        )
    digest = inputs_digest(plan, template, group)
    spec = places.spec
    branch = spec.target.branch
    repo = places.repo()
    refs_of: GroupRefs | None = None
    tries = 0
    while tries < COMMIT_TRIES:
        session = None
        if known is not None:
            hist, known = known, None  # good for the first try only
            session = repo.writable_session(branch)
            if session.snapshot_id != hist.tip:
                # The branch moved since: read its history again, now at least as new as the
                # session's base (a newer commit makes ours conflict, handled below).
                hist = history(repo, branch)
        else:
            hist = history(repo, branch)
        if hist.init is None:
            raise CommitError("the cube has no init commit: run `vcube init` first")
        done = hist.groups.get(group)
        if done is not None and done.metadata.get("inputs") == digest:
            n = plan.group_files(group)
            return _commit_summary(group, False, done.id, n, 0, t0), hist
        if session is None:
            session = repo.writable_session(branch)
        if refs_of is None or (refs_of.base is not None and refs_of.base != _id(done)):
            # (An incremental write holds only the files added since its base: it is valid on
            # that commit of the group only, so it is built again when the group moved.)
            data = prepared.result() if prepared is not None else None
            prepared = None
            refs_of = build_group_refs(places, plan, template, group, on_file, data, done=done)
        n_files, refs = _write_group(
            places, plan, template, session.store, refs_of, done is not None
        )
        metadata = {
            META_KIND: "group",
            "group": group,
            "files": n_files,
            "inputs": digest,
            "plan": plan.digest,
            "refs": refs,
            APPENDABLE: refs_of.appendable,
        }
        rebased = False
        while tries < COMMIT_TRIES:
            tries += 1
            try:
                snap = session.commit(
                    f"commit group {group}: {n_files} files", metadata=metadata, allow_empty=True
                )
                after = None if rebased else hist.after(snap, metadata)
                return _commit_summary(group, True, snap, n_files, refs, t0), after
            except icechunk.ConflictError:
                if refs_of.base is not None:
                    break  # incremental on the group's commit it read: redo on the new tip
            try:
                session.rebase(icechunk.ConflictDetector())
            except icechunk.RebaseFailedError:
                break  # a chunk both wrote: redo the write on the new tip
            rebased = True
            # If the other writer committed this very group, ours is a duplicate: drop it.
            now = history(repo, branch).groups.get(group)
            if now is not None and now.metadata.get("inputs") == digest:
                return _commit_summary(group, False, now.id, n_files, 0, t0), None
    raise CommitError(f"group {group}: still conflicting after {COMMIT_TRIES} tries")


def _id(snap: Any) -> str | None:
    return None if snap is None else str(snap.id)


def commit_groups(
    places: Places, plan: Plan, template: Template, groups: list[str]
) -> Iterator[tuple[str, dict[str, Any] | None, Exception | None]]:
    """Commit `groups` in order, one `commit_group` each, yielding (group, summary, None) or
    (group, None, the error) per group; stop iterating to stop.

    While one group commits, the next group's shard results are read from S3 in a second
    thread (their round trip off the commit's path); they are decoded and the refs built in
    the committing thread: done in the second thread too, that CPU work shares the GIL and the
    core with the commit and was no faster (bench/results/README.md, "A second core and the
    pipeline"). The branch's history is read once, then advanced by each own commit
    (`History.after`).
    """
    known: History | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vcube-prepare") as pool:

        def ahead(i: int) -> Future[list[bytes | None]] | None:
            if i >= len(groups):
                return None
            return pool.submit(read_group_results, places.work, plan, groups[i])

        nxt = ahead(0)
        for i, g in enumerate(groups):
            cur, nxt = nxt, ahead(i + 1)
            try:
                res, known = _commit_one(places, plan, template, g, prepared=cur, known=known)
            except Exception as e:  # the caller decides which errors end the run
                known = None
                yield g, None, e
                continue
            yield g, res, None


# Commit metadata: how many files of each shard the commit holds and a digest of everything
# their refs are made from (`_refs_digest`), so that the next commit of the group can write only
# the files added since (a new month) when the rest is provably the same.
APPENDABLE = "appendable"


@dataclass(frozen=True)
class GroupRefs:
    """A group's shard results and the chunk refs made from them.

    `base`: None when the specs hold every file's refs (the group's region is written whole);
    else the id of the group's commit they extend, and they hold only the refs of the files
    added to each shard since (`build_group_refs`)."""

    group: str
    results: list[ShardResult]
    n_files: int
    specs: dict[str, list[icechunk.VirtualChunkSpec]]  # per virtual array
    indices: dict[str, list[list[int]]]  # the specs' chunks, per virtual array
    appendable: dict[str, Any]  # APPENDABLE of the commit these refs make
    base: str | None = None


def build_group_refs(
    places: Places,
    plan: Plan,
    template: Template,
    group: str,
    on_file: Callable[[int, int], None] | None = None,
    data: list[bytes | None] | None = None,
    done: Any = None,
) -> GroupRefs:
    """Read a group's shard results (or decode `data`, read ahead) and place every file's chunk
    refs in the cube.

    `done`: the group's newest commit on the branch, if any. When the first files of every
    shard are exactly the files that commit holds, with refs made from the same inputs (its
    APPENDABLE digest equals theirs), only the files after them get refs: those already
    committed are unchanged (a new month appends one file to each series). Otherwise, or
    without `done`, every file's refs are made."""
    results = load_group_results(places.work, plan, template, group, data)
    src = places.source
    virt = template.virtual_varying()
    n_files = sum(len(r.meta["files"]) for r in results)
    done_files = 0
    # One set_virtual_refs call per array for the whole group, each ref with its file's
    # checksum: a call per file and array costs ~5x more CPU (bench/results, section 3).
    specs: dict[str, list[icechunk.VirtualChunkSpec]] = {v.name: [] for v in virt}
    indices: dict[str, list[list[int]]] = {v.name: [] for v in virt}  # the specs' chunks
    layout = template.steps
    placers = {v.name: RefPlacer(v, layout) for v in virt}
    sources = []  # per shard: one line per file, what its refs are made from besides its scan
    found = []  # per shard: each file's places, URL and checksum
    for res in results:
        files = res.meta["files"]
        wheres, urls, etags, mtimes = [], [], [], []
        for fmeta in files:
            try:
                layout.check_file(fmeta["key"], fmeta["pos"], fmeta["steps"])
            except PlanError as e:
                raise CommitError(f"group {group}: {e}") from None
            wheres.append(layout.places(fmeta["pos"]))
            urls.append(src.url_of(fmeta["key"]))
            checksum = checksum_of(src, fmeta["etag"], fmeta["last_modified"])
            etags.append(checksum if isinstance(checksum, str) else None)
            mtimes.append(checksum if isinstance(checksum, datetime) else None)
        sources.append(
            [
                json.dumps([f["key"], f["size"], u, str(e or m), sorted(w.items())])
                for f, u, e, m, w in zip(files, urls, etags, mtimes, wheres, strict=True)
            ]
        )
        found.append((wheres, urls, etags, mtimes))
    placed = sorted(
        (v.name, placers[v.name].chunks, _rendered(template, v, placers[v.name].chunks))
        for v in virt
    )
    counts = [len(r.meta["files"]) for r in results]
    appendable = {
        "files": counts,
        "digest": _refs_digest(template, placed, results, sources, counts),
    }
    start, base = [0] * len(results), None
    before = (done.metadata or {}).get(APPENDABLE) if done is not None else None
    before = before if isinstance(before, dict) else {}
    held = before.get("files")
    if (
        isinstance(held, list)
        and len(held) == len(results)
        and all(isinstance(n, int) and 0 <= n <= m for n, m in zip(held, counts, strict=True))
        and before.get("digest") == _refs_digest(template, placed, results, sources, held)
    ):
        start, base = list(held), str(done.id)
    for res, first, (wheres, urls, etags, mtimes) in zip(results, start, found, strict=True):
        files = res.meta["files"]
        done_files += len(files)
        for v in virt if first < len(files) else []:  # (none when nothing was added)
            out = specs[v.name]
            placer = placers[v.name]
            fast = placer.one_chunk_refs(
                wheres[first:], res.offsets[v.name][first:], res.lengths[v.name][first:]
            )
            if fast is not None:  # every file one chunk: its refs in one go
                at, index, offs, lens = fast
                indices[v.name] += index
                out += [
                    icechunk.VirtualChunkSpec(
                        idx, urls[first + k], off, n, etags[first + k], mtimes[first + k]
                    )
                    for k, idx, off, n in zip(at, index, offs, lens, strict=True)
                ]
                continue
            for i in range(first, len(files)):
                fmeta = files[i]
                for index1, off1, n1 in placer.refs(
                    fmeta["key"], wheres[i], res.offsets[v.name][i], res.lengths[v.name][i]
                ):
                    indices[v.name].append(index1)
                    out.append(
                        icechunk.VirtualChunkSpec(
                            index=index1,
                            location=urls[i],
                            offset=off1,
                            length=n1,
                            etag_checksum=etags[i],
                            last_updated_at_checksum=mtimes[i],
                        )
                    )
        if on_file:
            on_file(done_files, n_files)
    return GroupRefs(group, results, n_files, specs, indices, appendable, base)


_RENDERED: dict[tuple[str, str, tuple[int, ...]], str] = {}


def _rendered(template: Template, v: VarSchema, chunks: list[int]) -> str:
    """The array's zarr.json as init writes it, but its shape, for its cube chunks `chunks`
    (per file dim): if it differs, init dropped the array's chunks (`_ensure_array`). Once per
    process, template and chunking (~0.3 ms each)."""
    key = (template.digest, v.name, tuple(chunks))
    if key not in _RENDERED:
        by_dim = dict(zip(v.file_dims, chunks, strict=True))  # as `layout.array_chunks`
        doc = _zarr_doc(_array_metadata(v, [0] * len(v.dims), [by_dim.get(d, 1) for d in v.dims]))
        doc.pop("shape", None)
        _RENDERED[key] = json.dumps(doc, sort_keys=True)
    return _RENDERED[key]


def _refs_digest(
    template: Template,
    placed: list[tuple[str, list[int], str]],
    results: list[ShardResult],
    sources: list[list[str]],
    counts: list[int],
) -> str:
    """A digest of everything the refs of the first `counts[i]` files of each shard result are
    made from: the template, each virtual array's cube chunks and metadata, each file's key,
    size, URL, checksum and places in the cube, and its scanned offsets and lengths. Equal
    digests, equal refs."""
    h = hashlib.sha256(json.dumps([template.digest, placed, counts]).encode())
    for res, lines, n in zip(results, sources, counts, strict=True):
        h.update(json.dumps([res.meta["shard"], lines[:n]]).encode())
        for name in sorted(res.offsets):
            for part in (res.offsets[name][:n], res.lengths[name][:n]):
                h.update(f"{name} {part.shape} {part.dtype}".encode())
                h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()[:32]


def _write_group(
    places: Places,
    plan: Plan,
    template: Template,
    store: Any,
    built: GroupRefs,
    rewrite: bool,
) -> tuple[int, int]:
    """Write a group's chunk refs and inline values into a session; returns (files, refs)."""
    spec, specs, results = places.spec, built.specs, built.results
    refs = sum(len(out) for out in specs.values())
    for v in template.virtual_varying():
        failed = store.set_virtual_refs(v.name, specs[v.name])
        if failed:
            bad = {tuple(s.index): s.location for s in specs[v.name]}
            raise CommitError(
                f"Icechunk refused refs of {v.name} from {bad.get(tuple(failed[0]), '?')}: "
                f"chunks {failed[:5]}"
            )
    if rewrite and built.base is None:  # nothing of the old version may survive
        # (An incremental write keeps the committed files' refs, which are unchanged.)
        _delete_stale_refs(spec, plan, template, store, results, built.indices)
    _write_inline(spec, plan, template, store, results, built.group, rewrite=rewrite)
    return built.n_files, refs


def _commit_summary(
    group: str, changed: bool, snapshot: str, files: int, refs: int, t0: float
) -> dict[str, Any]:
    return {
        "step": "commit",
        "group": group,
        "changed": changed,
        "snapshot": snapshot,
        "files": files,
        "refs": refs,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _delete_stale_refs(
    spec: DatasetSpec,
    plan: Plan,
    template: Template,
    store: Any,
    results: list[ShardResult],
    written: dict[str, list[list[int]]],
) -> None:
    """Delete the group's chunk refs that this commit does not set again (files gone since):
    `written` holds the chunk index of every ref set, per variable."""
    commit_dim = spec.cube.commit_by
    pos_commit = results[0].meta["files"][0]["pos"][spec.cube.dim_names.index(commit_dim)]
    for v in template.virtual_varying():
        file_chunk = dict(zip(v.file_dims, cube_chunks(v, template.steps), strict=True))
        ranges = []
        shape = array_shape(v, plan, template)
        grid = chunk_grid(shape, [file_chunk.get(d, 1) for d in v.dims])
        for d, n in zip(v.dims, grid, strict=True):
            if d == commit_dim:
                per = template.steps.commit_steps // file_chunk.get(d, 1)
                ranges.append(range(pos_commit * per, (pos_commit + 1) * per))
            else:
                ranges.append(range(n))
        # The group's region of the chunk grid, marked where a ref is set again (in numpy:
        # a group has tens of thousands of chunks); the others are looked up, in C order.
        first = np.array([r.start for r in ranges], np.int64)
        kept = np.zeros([len(r) for r in ranges], bool)
        at = np.asarray(written[v.name], np.int64).reshape(-1, len(ranges)) - first
        at = at[((at >= 0) & (at < kept.shape)).all(axis=1)]
        kept[tuple(at.T)] = True
        for rel in np.argwhere(~kept):
            key = f"{v.name}/c/" + "/".join(str(int(i)) for i in first + rel)
            if sync(store.exists(key)):
                sync(store.delete(key))


def _write_inline(
    spec: DatasetSpec,
    plan: Plan,
    template: Template,
    store: Any,
    results: list[ShardResult],
    group: str,
    *,
    rewrite: bool = False,
) -> None:
    """Write each inline variable's region for the group in one read-compare-write.

    On a rewrite the group's part of arrays along `commit_by` starts from the fill value, so a
    file that disappeared leaves no old values behind.
    """
    files = _inline_files(results, template)
    if not files:
        return
    todo = _inline_todo(spec, template)
    for v in todo:
        if any(v.name not in r.values for r in results):
            raise CommitError(f"group {group}: the scans lack {v.name}: scan the group again")

    def read(v: VarSchema) -> tuple[Any, np.ndarray]:
        arr = zarr.open_array(store, path=v.name, mode="r+")
        return arr, np.asarray(arr[_inline_region(v, files)[1]])

    # The arrays' current regions are read all at once: each read waits for its manifest and
    # chunk, so one after another they cost two round trips per array.
    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        current = list(pool.map(read, todo))
    for v, (arr, old) in zip(todo, current, strict=True):
        starts, region = _inline_region(v, files)
        new = old.copy()
        if rewrite and spec.cube.commit_by in v.dims:
            new[...] = arr.metadata.fill_value
        written = np.zeros(new.shape, bool)
        if not _place_inline(v, files, starts, new, written):
            _place_inline_per_file(v, files, starts, new, written, group)
        if spec.cube.commit_by not in v.dims:
            fill = arr.metadata.fill_value
            set_before = ~_equal(old, np.full_like(old, fill))
            clash = set_before & written & ~_equal(old, new)
            if clash.any():
                raise CommitError(
                    f"group {group}: {v.name} differs from what earlier groups wrote "
                    f"({new[clash].ravel()[:3]} vs {old[clash].ravel()[:3]}): the files of "
                    "different groups disagree on a shared coordinate"
                )
        if not np.array_equal(old, new, equal_nan=new.dtype.kind in "fc"):
            arr[region] = new


InlineFiles = list[tuple[ShardResult, int, dict[str, tuple[int, int]]]]


def _inline_files(results: list[ShardResult], template: Template) -> InlineFiles:
    """Every file of the results: its result, its row there, and its places in the cube."""
    layout = template.steps
    return [(r, i, layout.places(f["pos"])) for r in results for i, f in enumerate(r.meta["files"])]


def _inline_todo(spec: DatasetSpec, template: Template) -> list[VarSchema]:
    """The inline variables a group commit writes (a path dimension's values are init's)."""
    path_dims = {d.name for d in spec.cube.dims if d.values == "path"}
    return [v for v in template.inline_varying() if v.name not in path_dims]


def _inline_region(v: VarSchema, files: InlineFiles) -> tuple[dict[str, int], tuple[slice, ...]]:
    """The region of `v` that the files cover: its start along each dim it varies in, and the
    slices (whole along the others)."""
    starts = {d: min(p[d][0] for _, _, p in files) for d in v.varies}
    stops = {d: max(p[d][0] + p[d][1] for _, _, p in files) for d in v.varies}
    return starts, tuple(slice(starts[d], stops[d]) if d in starts else slice(None) for d in v.dims)


def _place_inline(
    v: VarSchema,
    files: InlineFiles,
    starts: dict[str, int],
    new: np.ndarray,
    written: np.ndarray,
) -> bool:
    """`_place_inline_per_file` in numpy, all files at once: False (nothing written) if two
    files disagree on a place, which the per-file version then reports by name.

    Every file's values go to their flat places in the region, in file order; where several
    files write one place (a coordinate every file of a group carries), each value must equal
    the one written before it, and the last one stays: as one file after another would."""
    places, values = [], []
    # Files of one result with the same steps go together (usually all of a shard's).
    batches: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for k, (res, _, p) in enumerate(files):
        shape = tuple(
            p[d][1] if d in p else n for d, n in zip(v.file_dims, v.file_shape, strict=True)
        )
        steps = tuple(p[d][1] for d in v.dims if d in starts)
        batches.setdefault((id(res), shape, steps), []).append(k)
    for (_, shape, _), ks in batches.items():
        res, _, p0 = files[ks[0]]
        rows = np.array([files[k][1] for k in ks])
        sel: tuple[Any, ...] = (rows, *(slice(0, n) for n in shape))
        val = res.values[v.name][sel]
        by_dim = dict(zip(v.file_dims, shape, strict=True))
        val = val.reshape([len(ks), *(by_dim.get(d, 1) for d in v.dims)])
        index = []
        for j, d in enumerate(v.dims):
            lead = [1] * (len(v.dims) + 1)
            n = p0[d][1] if d in starts else new.shape[j]  # the file's slice along d
            if val.shape[j + 1] not in (1, n):
                return False  # does not fit its place: the per-file version says how
            lead[j + 1] = n
            if d in starts:
                lead[0] = len(ks)
                first = np.array([files[k][2][d][0] - starts[d] for k in ks])
                index.append((first[:, None] + np.arange(n)).reshape(lead))
            else:
                index.append(np.arange(n).reshape(lead))
        flat = np.ravel_multi_index(np.broadcast_arrays(*index), new.shape)
        places.append(flat.reshape(-1))
        values.append(np.broadcast_to(val, flat.shape).reshape(-1))
    at_all = np.concatenate(places)
    val_all = np.concatenate(values)
    order = np.argsort(at_all, kind="stable")  # per place, in file order
    at_all, val_all = at_all[order], val_all[order]
    cast = val_all.astype(new.dtype)  # what a place holds after each write
    again = at_all[1:] == at_all[:-1]
    if (again & ~_equal(cast[:-1], val_all[1:])).any():
        return False
    last = np.append(~again, True)
    new.flat[at_all[last]] = cast[last]
    written.flat[at_all] = True
    return True


def _place_inline_per_file(
    v: VarSchema,
    files: InlineFiles,
    starts: dict[str, int],
    new: np.ndarray,
    written: np.ndarray,
    group: str,
) -> None:
    """Put each file's values of an inline variable at its place in the region (`new`), one
    file after another; a file that disagrees with an earlier one at the same place fails."""
    for res, i, p in files:
        # The scans pad values to the shard's longest file: take this file's steps.
        shape = [p[d][1] if d in p else n for d, n in zip(v.file_dims, v.file_shape, strict=True)]
        val = res.values[v.name][i][tuple(slice(0, n) for n in shape)]
        by_dim = dict(zip(v.file_dims, shape, strict=True))
        val = val.reshape([by_dim.get(d, 1) for d in v.dims])
        sl = tuple(
            slice(p[d][0] - starts[d], p[d][0] + p[d][1] - starts[d])
            if d in starts
            else slice(None)
            for d in v.dims
        )
        prev, seen = new[sl], written[sl]
        clash = seen & ~_equal(prev, val)
        if clash.any():
            raise CommitError(
                f"group {group}: files disagree on {v.name} at the same place "
                f"({res.meta['files'][i]['key']} has {val[clash].ravel()[:3]}, another file "
                f"{prev[clash].ravel()[:3]})"
            )
        new[sl] = val
        written[sl] = True


def _equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    eq = a == b
    if a.dtype.kind in "fc":
        eq |= np.isnan(a) & np.isnan(b)
    return np.asarray(eq)


def _some(groups: dict[str, Any]) -> str:
    ids = list(groups)
    return ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
