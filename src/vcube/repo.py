"""Which repository, configured how, and what is committed in it?

The Icechunk repository's config (the source as its virtual chunk container, one manifest per
commit group), opening it, and its history: each commit records the group it holds and a digest
of its inputs, the single source of truth for what is done.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import icechunk

from vcube import storage
from vcube.layout import CommitError
from vcube.plan import Plan
from vcube.spec import DatasetSpec
from vcube.template import Template

META_KIND = "vcube"
MANIFEST_CONCURRENCY = 16
# Icechunk's caches in vcube's own processes. Its defaults (15 M chunk refs, 500 k snapshot
# nodes) keep every manifest a long-lived committer writes, and every snapshot: 3.5 GB after the
# atlas's 690 group commits, over the committer pod's 3 Gi limit; with these, ~0.4 GB flat
# (bench/results/README.md, "Committer memory"). A commit needs its own group's manifests
# (24,480 refs at atlas size) and the tip's snapshot, not the others'.
CACHED_CHUNK_REFS = 1_000_000
CACHED_SNAPSHOT_NODES = 1_000


def repo_config(spec: DatasetSpec, source: storage.Location) -> icechunk.RepositoryConfig:
    """Virtual chunk container for the source, and one manifest per commit group and array."""
    cfg = icechunk.RepositoryConfig.default()
    cfg.set_virtual_chunk_container(storage.virtual_chunk_container(source))
    split = icechunk.ManifestSplittingConfig.from_dict(
        {
            icechunk.ManifestSplitCondition.AnyArray(): {
                icechunk.ManifestSplitDimCondition.DimensionName(spec.cube.commit_by): 1
            }
        }
    )
    cfg.manifest = icechunk.ManifestConfig(
        splitting=split,
        # No background preloading of manifests when a session starts: a commit touches one
        # group's manifests only, and preloading others made every other commit seconds slower.
        preload=icechunk.ManifestPreloadConfig(
            preload_if=icechunk.ManifestPreloadCondition.false()
        ),
        # A group commit writes one manifest per array (~40): in parallel, not one round trip
        # after another (bench/results, "Fan-in": 58 sequential round trips per commit at 1).
        max_concurrent_manifest_fetches_during_commit=MANIFEST_CONCURRENCY,
    )
    # A silent connection must fail the task, not hang it (Icechunk sets no read timeout).
    cfg.storage = icechunk.StorageSettings(
        timeouts=icechunk.StorageTimeoutSettings(
            connect_timeout_ms=5_000,
            read_timeout_ms=30_000,
            operation_attempt_timeout_ms=60_000,
            operation_timeout_ms=300_000,
        ),
        retries=icechunk.StorageRetriesSettings(
            max_tries=8, initial_backoff_ms=100, max_backoff_ms=8_000
        ),
    )
    return cfg


def _bounded(cfg: icechunk.RepositoryConfig) -> icechunk.RepositoryConfig:
    """`cfg` with vcube's cache bounds; kept out of the config saved in the repository, so
    readers (xarray users) keep Icechunk's defaults."""
    cfg.caching = icechunk.CachingConfig(
        num_chunk_refs=CACHED_CHUNK_REFS, num_snapshot_nodes=CACHED_SNAPSHOT_NODES
    )
    return cfg


def save_reader_config(
    spec: DatasetSpec, source: storage.Location, target: storage.Location
) -> None:
    """Save the config readers open the repository with: vcube's, without its cache bounds."""
    try:
        icechunk.Repository.open(
            storage.icechunk_storage(target),
            config=repo_config(spec, source),
            authorize_virtual_chunk_access=storage.virtual_chunk_credentials(source),
        ).save_config()
    except icechunk.IcechunkError as e:
        raise storage.StorageError(f"cannot save the config of {target.url}: {e}") from None


def open_repo(
    spec: DatasetSpec,
    source: storage.Location,
    target: storage.Location,
    *,
    create: bool = False,
) -> icechunk.Repository:
    """The cube's repository at `target`, created first with `create`. Open it once per process
    and pass it down (`places.Places.repo`): a local build commits hundreds of groups, and a
    Repository opened per commit made each commit slower than the last."""
    st = storage.icechunk_storage(target)
    creds = storage.virtual_chunk_credentials(source)
    try:
        if icechunk.Repository.exists(st):
            return icechunk.Repository.open(
                st,
                config=_bounded(repo_config(spec, source)),
                authorize_virtual_chunk_access=creds,
            )
        if not create:
            raise CommitError(f"no Icechunk repo at {target.url}: run `vcube init` first")
        repo = icechunk.Repository.create(
            st, config=repo_config(spec, source), authorize_virtual_chunk_access=creds
        )
        repo.save_config()
        # Opened again rather than `reopen`ed: a reopened Repository kept the unbounded caches
        # (the committer's memory grew as with Icechunk's defaults, bench.committer_memory).
        return icechunk.Repository.open(
            st, config=_bounded(repo_config(spec, source)), authorize_virtual_chunk_access=creds
        )
    except icechunk.IcechunkError as e:
        raise storage.StorageError(f"cannot open the Icechunk repo {target.url}: {e}") from None


@dataclass
class History:
    init: Any = None  # SnapshotInfo of the newest init commit
    groups: dict[str, Any] = field(default_factory=dict)  # group -> newest SnapshotInfo
    tip: str | None = None

    def after(self, snapshot: str, metadata: dict[str, Any]) -> History:
        """This history with one more group commit on top: what a committer knows of the
        branch after its own commit, without reading the history back (one round trip per
        commit). Valid only while the branch's tip is `snapshot` (`commit.commit_group` checks
        that against the session it opens)."""
        groups = dict(self.groups)
        groups[str(metadata["group"])] = OwnCommit(snapshot, metadata)
        return History(init=self.init, groups=groups, tip=snapshot)


@dataclass(frozen=True)
class OwnCommit:
    """A commit this process made: the parts of Icechunk's SnapshotInfo that `History` users
    read (`History.after`)."""

    id: str
    metadata: dict[str, Any]


def history(repo: icechunk.Repository, branch: str) -> History:
    h = History()
    try:
        ancestry = list(repo.ancestry(branch=branch))
    except icechunk.IcechunkError as e:
        if "branch" in str(e).lower() and "not found" in str(e).lower():
            return h  # a branch not created yet has no history
        raise storage.StorageError(f"cannot read the history of branch {branch!r}: {e}") from None
    if ancestry:
        h.tip = ancestry[0].id
    for snap in ancestry:
        md = snap.metadata or {}
        if md.get(META_KIND) == "group":
            h.groups.setdefault(str(md["group"]), snap)
        elif md.get(META_KIND) == "init" and h.init is None:
            h.init = snap
    return h


def inputs_digest(plan: Plan, template: Template, group: str) -> str:
    """What a group's commit depends on: its files' listing, the template (so the schema) and
    the steps of every file (so where its files go)."""
    layout = template.layout.digest if template.layout is not None else "unknown"
    key = f"{plan.group_digest(group)}:{template.digest}:{layout}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def opening_snippet(spec: DatasetSpec, src: storage.Location, repo: storage.Location) -> str:
    """Three lines of Python that open the cube with xarray, needing nothing but this snippet."""
    if repo.is_local:
        st = f"icechunk.local_filesystem_storage({str(repo.local_path)!r})"
    else:
        o = repo.options
        args = [f"bucket={repo.bucket!r}", f"prefix={repo.prefix!r}"]
        args += [f"region={o.region!r}"] if o.region else []
        args += [f"endpoint_url={o.endpoint!r}"] if o.endpoint else []
        args += ["allow_http=True"] if o.allow_http else []
        args += ["force_path_style=True"] if o.force_path_style else []
        args += ["anonymous=True"] if o.anonymous else ["from_env=True"]
        st = f"icechunk.s3_storage({', '.join(args)})"
    if src.is_local:
        cred = "icechunk.Credentials.LocalFileSystemAccess()"
    elif src.options.anonymous:
        cred = "icechunk.s3_anonymous_credentials()"
    else:
        cred = "icechunk.s3_from_env_credentials()"
    return (
        "import icechunk, xarray as xr\n"
        f"repo = icechunk.Repository.open({st}, authorize_virtual_chunk_access="
        f"icechunk.containers_credentials({{{src.url!r}: {cred}}}))\n"
        f"ds = xr.open_zarr(repo.readonly_session({spec.target.branch!r}).store, "
        "consolidated=False)"
    )
