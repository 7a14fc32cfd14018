"""Planning: from a listing of the source to files placed in the cube, shards and commit groups.

Planning never opens a file, so 500,000 files are planned from the listing alone. A file's
position along each concat dim is the rank of its path key (the dim's `order_by` fields) among
the keys of its *reference class*: all files that agree with it on the dims between the
outermost one and this one. The outermost dim (members such as polygons) ranks globally; an
inner dim such as elapsed time ranks among the files with the same injection month, so series
that start at different dates still line up, and a missing file leaves a hole at the exact place.

The plan is written to the work area as `plan.json` (summary, ids, digests) plus one
`shards/<id>.json` file list per shard, so a task reads only what it needs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from vcube import storage
from vcube.spec import FIELD_RE, DatasetSpec

PLAN_KEY = "plan.json"
PLAN_VERSION = 1


class PlanError(RuntimeError):
    """The listing does not make a complete, unambiguous cube; the message lists what is wrong."""


def shard_key(shard_id: str) -> str:
    return f"shards/{shard_id}.json"


@dataclass(frozen=True)
class PlannedFile:
    """One source file and where it goes: its position (in files) along every concat dim."""

    key: str
    size: int
    version: str  # ETag if the store has one, else the last-modified time (ISO 8601)
    last_modified: str
    pos: tuple[int, ...]
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    spec_digest: str
    dims: list[dict[str, Any]]  # name, length (in files), keys (path key per position or None)
    groups: dict[str, list[str]]  # group id -> shard ids, in cube order
    shards: dict[str, dict[str, Any]]  # shard id -> {group, files, digest}
    missing: list[str]
    unexpected: list[str]
    n_files: int
    version: int = PLAN_VERSION
    digest: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Plan:
        raw = json.loads(data)
        if raw.get("version") != PLAN_VERSION:
            raise PlanError(
                "the plan in the work area was written by another vcube version: re-plan"
            )
        return cls(**raw)

    def group_digest(self, group: str) -> str:
        h = hashlib.sha256(self.spec_digest.encode())
        for s in self.groups[group]:
            h.update(f"{s}:{self.shards[s]['digest']};".encode())
        return h.hexdigest()[:16]

    def group_files(self, group: str) -> int:
        return sum(self.shards[s]["files"] for s in self.groups[group])

    def group_of_shard(self, shard: str) -> str:
        return str(self.shards[shard]["group"])


def files_digest(files: list[PlannedFile]) -> str:
    """What a shard's scan depends on: keys, sizes, versions and places of its files."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.key}\0{p.size}\0{p.version}\0{tuple(p.pos)}\n".encode())
    return h.hexdigest()[:16]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a `{field}` path pattern; a field used twice must have the same value both times."""
    out, seen, pos = [], set(), 0
    for m in FIELD_RE.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        name = m.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out) + r"\Z")


def _sort_key(key: tuple[str, ...]) -> tuple[tuple[int, int, str], ...]:
    """Numbers sort numerically, everything else as text ('9' < '10', '0347' as 347).

    The text breaks ties ('1' before '01'), so the order never depends on set iteration.
    """
    return tuple((0, int(v), v) if v.isdigit() else (1, 0, v) for v in key)


def _key_str(key: tuple[str, ...]) -> str:
    return "-".join(key)


@dataclass
class _Listed:
    key: str
    size: int
    version: str
    last_modified: str
    fields: dict[str, str]


def parse_listing(
    spec: DatasetSpec, objects: Iterable[storage.ObjectInfo]
) -> tuple[list[_Listed], list[str]]:
    regex = pattern_regex(spec.source.pattern)
    matched, unexpected = [], []
    for obj in objects:
        m = regex.match(obj.key)
        if m is None:
            unexpected.append(obj.key)
            continue
        lm = obj.last_modified.isoformat()
        matched.append(_Listed(obj.key, obj.size, obj.etag or lm, lm, m.groupdict()))
    return matched, unexpected


def build_plan(
    spec: DatasetSpec,
    objects: Iterable[storage.ObjectInfo],
    *,
    allow_missing: bool = False,
) -> tuple[Plan, dict[str, list[PlannedFile]]]:
    """Place every listed file; returns the plan and the file list of each shard."""
    listed, unexpected = parse_listing(spec, objects)
    if not listed:
        raise PlanError(
            f"no file under {spec.source.root} matches the pattern {spec.source.pattern!r}"
            + (f" ({len(unexpected)} other objects, e.g. {unexpected[0]!r})" if unexpected else "")
        )
    dims = spec.cube.dims
    nd = len(dims)
    keys = [[tuple(f.fields[x] for x in d.order_by) for d in dims] for f in listed]

    # Reference classes and ranks, dim by dim.
    refs: list[dict[tuple[Any, ...], list[tuple[str, ...]]]] = []
    for i in range(nd):
        classes: dict[tuple[Any, ...], set[tuple[str, ...]]] = defaultdict(set)
        for k in keys:
            classes[tuple(k[1:i])].add(k[i])
        refs.append({c: sorted(v, key=_sort_key) for c, v in classes.items()})
    rank = [{c: {k: j for j, k in enumerate(v)} for c, v in r.items()} for r in refs]
    lengths = [max(len(v) for v in r.values()) for r in refs]

    dim_info = []
    for i, d in enumerate(dims):
        seqs = list(refs[i].values())
        same = all(s == seqs[0] for s in seqs)
        if d.values == "path" and not same:
            raise PlanError(
                f"dim {d.name!r} has values: path but its path keys differ between files "
                "(e.g. series starting at different dates): take its values from the files instead"
            )
        dim_info.append(
            {
                "name": d.name,
                "length": lengths[i],
                "keys": [_key_str(k) for k in seqs[0]] if same else None,
            }
        )

    # Place files; detect two files claiming the same place.
    shard_dims = [spec.cube.dim_names.index(n) for n in spec.cube.shard_by]
    commit_dim = spec.cube.dim_names.index(spec.cube.commit_by)
    placed: dict[tuple[int, ...], _Listed] = {}
    shard_files: dict[str, list[PlannedFile]] = defaultdict(list)
    shard_group: dict[str, str] = {}
    shard_order: dict[str, tuple[int, ...]] = {}
    for f, k in zip(listed, keys, strict=True):
        pos = tuple(rank[i][tuple(k[1:i])][k[i]] for i in range(nd))
        if pos in placed:
            raise PlanError(
                f"{placed[pos].key} and {f.key} map to the same place in the cube: "
                "the pattern or the dims' order_by do not tell them apart"
            )
        placed[pos] = f
        sid = "-".join(_key_str(k[i]) for i in shard_dims)
        shard_group[sid] = _key_str(k[commit_dim])
        shard_order[sid] = tuple(pos[i] for i in shard_dims)
        shard_files[sid].append(
            PlannedFile(f.key, f.size, f.version, f.last_modified, pos, dict(f.fields))
        )

    missing = _missing(refs, keys, dims_names=spec.cube.dim_names)
    if missing and not allow_missing:
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise PlanError(
            f"{len(missing)} planned files are missing from {spec.source.root}:\n  {shown}{more}\n"
            "Add them, or pass --allow-missing to leave their chunks empty (read as fill value)."
        )

    shards: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(shard_files, key=lambda s: shard_order[s]):
        files = sorted(shard_files[sid], key=lambda p: p.pos)
        shard_files[sid] = files
        shards[sid] = {
            "group": shard_group[sid],
            "files": len(files),
            "digest": files_digest(files),
        }
        groups[shard_group[sid]].append(sid)

    plan = Plan(
        spec_digest=spec.digest(),
        dims=dim_info,
        groups=dict(groups),
        shards=shards,
        missing=missing,
        unexpected=sorted(unexpected),
        n_files=len(listed),
    )
    plan.digest = hashlib.sha256(
        json.dumps([plan.spec_digest, plan.dims, plan.shards], sort_keys=True).encode()
    ).hexdigest()[:16]
    return plan, dict(shard_files)


def _missing(
    refs: list[dict[tuple[Any, ...], list[tuple[str, ...]]]],
    keys: list[list[tuple[str, ...]]],
    *,
    dims_names: list[str],
) -> list[str]:
    """Every expected key combination with no file, described by its dim keys."""
    present = {tuple(k) for k in keys}

    def expand(
        i: int, prefix: tuple[tuple[str, ...], ...]
    ) -> Iterator[tuple[tuple[str, ...], ...]]:
        if i == len(refs):
            yield prefix
            return
        for k in refs[i].get(tuple(prefix[1:i]), []):
            yield from expand(i + 1, (*prefix, k))

    return [
        " ".join(f"{n}={_key_str(k)}" for n, k in zip(dims_names, combo, strict=True))
        for combo in expand(0, ())
        if combo not in present
    ]


# --- the work area ------------------------------------------------------------------------------


def work_location(spec: DatasetSpec) -> storage.Location:
    return storage.resolve(spec.target.work_url, spec.target.storage)


def source_location(spec: DatasetSpec) -> storage.Location:
    return storage.resolve(spec.source.root, spec.source.storage)


def make_plan(spec: DatasetSpec, *, allow_missing: bool = False) -> Plan:
    """List the source, build the plan and write it (and the shard file lists) to the work area."""
    src = source_location(spec)
    plan, shard_files = build_plan(spec, storage.list_objects(src), allow_missing=allow_missing)
    work = work_location(spec)

    def put(item: tuple[str, list[PlannedFile]]) -> None:
        payload = json.dumps([asdict(p) for p in item[1]], sort_keys=True).encode()
        storage.write_bytes(work, shard_key(item[0]), payload)

    # Thousands of small objects on S3: in parallel. plan.json goes last, so a crash before it
    # leaves the previous plan in force (and a shard list that disagrees with it is refused).
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, shard_files.items()))
    storage.write_bytes(work, PLAN_KEY, plan.to_json())
    return plan


def load_plan(spec: DatasetSpec) -> Plan:
    try:
        plan = Plan.from_json(storage.read_bytes(work_location(spec), PLAN_KEY))
    except FileNotFoundError:
        raise PlanError(f"no plan in {spec.target.work_url}: run `vcube plan` first") from None
    if plan.spec_digest != spec.digest():
        raise PlanError("the spec changed since the plan was made: run `vcube plan` again")
    return plan


def load_shard_files(spec: DatasetSpec, shard: str, plan: Plan | None = None) -> list[PlannedFile]:
    """A shard's file list; with the plan, checked against the digest the plan recorded."""
    try:
        raw = json.loads(storage.read_bytes(work_location(spec), shard_key(shard)))
    except FileNotFoundError:
        raise PlanError(f"shard {shard!r} is not in the plan: run `vcube plan` first") from None
    files = [PlannedFile(**{**r, "pos": tuple(r["pos"])}) for r in raw]
    if plan is not None and files_digest(files) != plan.shards[shard]["digest"]:
        raise PlanError(
            f"the file list of shard {shard} does not match the plan (a re-plan was interrupted "
            "or is running): run `vcube plan` again"
        )
    return files
