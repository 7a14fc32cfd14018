"""Where does each file go? From a listing of the source to files placed in the cube, shards and
commit groups (pure: a listing in, a Plan out; `workarea` reads and writes it).

Planning never opens a file, so 500,000 files are planned from the listing alone. A file's
position along each concat dim is the rank of its path key (the dim's `order_by` fields) among
the keys of its *reference class*: all files that agree with it on the dims between the
outermost one and this one. The outermost dim (members such as polygons) ranks globally; an
inner dim such as elapsed time ranks among the files with the same injection month, so series
that start at different dates still line up, and a missing file leaves a hole at the exact place.

The plan is kept in the work area as `plan.json` (summary, ids, digests) plus one
`shards/<id>.json` file list per shard, so a task reads only what it needs.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from vcube import storage
from vcube.spec import FIELD_RE, DatasetSpec

PLAN_VERSION = 3  # 3: a file's ETag and last-modified time in fields of their own


class PlanError(RuntimeError):
    """The listing does not make a complete, unambiguous cube; the message lists what is wrong."""


@dataclass(frozen=True)
class PlannedFile:
    """One source file and where it goes: its position (in files) along every concat dim."""

    key: str
    size: int
    etag: str | None  # as the store lists it; None when the store gives none
    last_modified: str  # ISO 8601
    pos: tuple[int, ...]
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        """What tells two versions of the file apart (digests, scan reuse): the ETag if the
        store gives one, else the last-modified time."""
        return self.etag if self.etag is not None else self.last_modified


@dataclass
class Plan:
    spec_digest: str
    dims: list[dict[str, Any]]  # name, length (in files), keys (path key per position or None)
    groups: dict[str, list[str]]  # group id -> shard ids, in cube order
    shards: dict[str, dict[str, Any]]  # shard id -> {group, files, digest}
    missing: list[str]
    unexpected: list[str]
    n_files: int
    # Shards whose files cover every place along the dims other than commit_by: what init
    # scans to learn how many steps each file holds (their results are reused by `scan`).
    layout_shards: list[str] = field(default_factory=list)
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
    """What a shard's scan depends on: keys, sizes, revisions and places of its files."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.key}\0{p.size}\0{p.revision}\0{tuple(p.pos)}\n".encode())
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
    etag: str | None
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
        matched.append(_Listed(obj.key, obj.size, obj.etag or None, lm, m.groupdict()))
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
            PlannedFile(f.key, f.size, f.etag, f.last_modified, pos, dict(f.fields))
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
        layout_shards=_layout_shards(shards, shard_files, commit_dim),
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


def _layout_shards(
    shards: dict[str, dict[str, Any]], shard_files: dict[str, list[PlannedFile]], commit_dim: int
) -> list[str]:
    """The first shards, in cube order, that hold a file at every place of the other dims."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for sid in shards:
        places = {p.pos[:commit_dim] + p.pos[commit_dim + 1 :] for p in shard_files[sid]}
        if places - seen:
            out.append(sid)
            seen |= places
    return out


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


# --- steps: where each file lies along the concat dims ------------------------------------------


@dataclass
class Layout:
    """How many steps each file holds along each concat dim, and so where it starts.

    Files may differ in length along a concat dim (decades with a short last one, leap years):
    a file's first step is the sum of the lengths of the files before it in its series. The
    lengths are a function of the file's place along the dims other than `commit_by`, the same
    in every commit group (a cube is a rectangle); they are learnt from the files of
    `Plan.layout_shards` and every other file is checked against them (`check_file`). Along
    `commit_by` every file holds the same number of steps.

    `steps[i]` maps a series (the places along the dims between the outermost one and dim i,
    commit_by left out) to the lengths of its files in rank order; `keys[i]` names the file
    each length was learnt from, for error messages.
    """

    dims: list[str]
    commit_dim: int
    commit_steps: int
    commit_files: int  # planned length of the commit dim, in files
    steps: list[dict[str, list[int]]]
    keys: list[dict[str, list[str]]]
    plan: str = ""  # digest of the plan it was learnt for
    _starts: dict[tuple[int, str], list[int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def to_json(self) -> bytes:
        raw = asdict(self)
        raw.pop("_starts")
        return json.dumps(raw, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Layout:
        return cls(**json.loads(data))

    @property
    def digest(self) -> str:
        return hashlib.sha256(
            json.dumps(asdict(self)["steps"], sort_keys=True).encode()
        ).hexdigest()[:16]

    def series(self, i: int, pos: tuple[int, ...] | list[int]) -> str:
        return ",".join(str(pos[j]) for j in range(1, i) if j != self.commit_dim)

    def place(self, i: int, pos: tuple[int, ...] | list[int]) -> tuple[int, int]:
        """(first step, number of steps) of the file at `pos` along concat dim i."""
        if i == self.commit_dim:
            return pos[i] * self.commit_steps, self.commit_steps
        series = self.series(i, pos)
        starts = self._starts.get((i, series))
        if starts is None:
            lengths = self.steps[i][series]
            starts = self._starts[(i, series)] = [sum(lengths[:r]) for r in range(len(lengths))]
        return starts[pos[i]], self.steps[i][series][pos[i]]

    def places(self, pos: tuple[int, ...] | list[int]) -> dict[str, tuple[int, int]]:
        return {d: self.place(i, pos) for i, d in enumerate(self.dims)}

    def total(self, dim: str) -> int:
        i = self.dims.index(dim)
        if i == self.commit_dim:
            return self.commit_files * self.commit_steps
        return max((sum(v) for v in self.steps[i].values()), default=0)

    def lengths(self, dim: str) -> set[int]:
        """Every length a file has along `dim`."""
        i = self.dims.index(dim)
        if i == self.commit_dim:
            return {self.commit_steps}
        return {n for v in self.steps[i].values() for n in v}

    def entries(self, dim: str) -> Iterator[tuple[str, int, int, bool]]:
        """(file learnt from, first step, steps, last of its series?) per file along `dim`."""
        i = self.dims.index(dim)
        if i == self.commit_dim:
            return
        for series, lengths in sorted(self.steps[i].items()):
            start = 0
            for r, n in enumerate(lengths):
                yield self.keys[i][series][r], start, n, r == len(lengths) - 1
                start += n

    def check_file(self, key: str, pos: list[int] | tuple[int, ...], steps: list[int]) -> None:
        """A file must hold as many steps as the cube has room for at its place."""
        for i, d in enumerate(self.dims):
            want = self.place(i, pos)[1]
            if steps[i] != want:
                if i == self.commit_dim:
                    why = f"every file holds {want} along commit_by"
                else:
                    ref = self.keys[i][self.series(i, pos)][pos[i]]
                    why = f"{ref}, at the same place in another group, holds {want}"
                raise PlanError(
                    f"{key}: holds {steps[i]} steps along {d!r} but {why}: the groups' series "
                    "must have the same steps"
                )


def build_layout(
    plan: Plan, dims: list[str], commit_dim: int, files: Iterable[tuple[str, Any, Any]]
) -> Layout:
    """The layout from (key, pos, steps) of files covering every place; refuses disagreements."""
    steps: list[dict[str, dict[int, int]]] = [defaultdict(dict) for _ in dims]
    keys: list[dict[str, dict[int, str]]] = [defaultdict(dict) for _ in dims]
    commit_steps: int | None = None
    commit_key = ""
    commit_files = plan.dims[commit_dim]["length"]
    probe = Layout(list(dims), commit_dim, 0, commit_files, [], [])
    for key, pos, st in files:
        for i, d in enumerate(dims):
            if i == commit_dim:
                if commit_steps is None:
                    commit_steps, commit_key = st[i], key
                elif st[i] != commit_steps:
                    raise PlanError(
                        f"{key}: holds {st[i]} steps along the commit_by dim {d!r}, {commit_key} "
                        f"holds {commit_steps}: files must have one length along commit_by "
                        "(commit by another dim, or split the files)"
                    )
                continue
            series = probe.series(i, pos)
            old = steps[i][series].get(pos[i])
            if old is None:
                steps[i][series][pos[i]] = st[i]
                keys[i][series][pos[i]] = key
            elif old != st[i]:
                raise PlanError(
                    f"{key}: holds {st[i]} steps along {d!r}, {keys[i][series][pos[i]]} at the "
                    f"same place of another series holds {old}: the series must line up"
                )
    out_steps: list[dict[str, list[int]]] = []
    out_keys: list[dict[str, list[str]]] = []
    for i, d in enumerate(dims):
        out_steps.append({})
        out_keys.append({})
        for series, by_rank in steps[i].items():
            gap = [r for r in range(max(by_rank) + 1) if r not in by_rank]
            if gap:
                raise PlanError(
                    f"no file at place {gap[0]} of {d!r} (series {series or 'all'}) was scanned "
                    "for the layout: run `vcube plan` again"
                )
            out_steps[i][series] = [by_rank[r] for r in range(len(by_rank))]
            out_keys[i][series] = [keys[i][series][r] for r in range(len(by_rank))]
    return Layout(
        list(dims), commit_dim, commit_steps or 1, commit_files, out_steps, out_keys, plan.digest
    )
