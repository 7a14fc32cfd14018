"""The IAM policies in k8s/iam/ grant nothing outside their prefixes.

For each policy the allowed prefixes are derived, not restated: the prod worker policy must
match the target of datasets/oae-atlas.yaml (repo + work prefixes, read/write), the dev one the
same prefixes under oae-atlas-dev/, the source example its own source prefix (read-only).
The checker is itself tested on bad policies, so a lenient checker cannot pass silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.k8s.manifests import REPO
from vcube.spec import load_spec

IAM = REPO / "k8s/iam"
READ_ACTIONS = {"s3:GetObject"}
WRITE_ACTIONS = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
LIST_ACTIONS = {"s3:ListBucket"}


@dataclass(frozen=True)
class Scope:
    """What a policy may touch: prefixes it may read and the (sub)set it may write."""

    bucket: str
    read: tuple[str, ...]
    write: tuple[str, ...]


def _s3_prefix(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    assert parsed.scheme == "s3", url
    return parsed.netloc, parsed.path.strip("/")


def _target_scope(spec_file: str, *, rename: tuple[str, str] | None = None) -> Scope:
    spec = load_spec(REPO / "datasets" / spec_file)
    bucket, repo = _s3_prefix(spec.target.repo)
    bucket2, work = _s3_prefix(spec.target.work_url)
    assert bucket == bucket2, "repo and work area in one bucket (one policy)"
    if rename:
        repo, work = (p.replace(*rename, 1) for p in (repo, work))
    return Scope(bucket, read=(repo, work), write=(repo, work))


SCOPES = {
    "vcube-worker.json": _target_scope("oae-atlas.yaml"),
    "vcube-worker-dev.json": _target_scope("oae-atlas.yaml", rename=("oae-atlas", "oae-atlas-dev")),
    "source-read-only.example.json": Scope(
        "example-source-bucket", read=("archive/experiments",), write=()
    ),
}


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_violations(policy: dict[str, Any], scope: Scope) -> list[str]:
    """Everything a policy grants beyond its scope (empty list = least privilege holds)."""
    out = []
    if policy.get("Version") != "2012-10-17":
        out.append("Version must be 2012-10-17")
    for i, st in enumerate(policy["Statement"]):
        sid = st.get("Sid", f"#{i}")
        if st.get("Effect") != "Allow" or "NotAction" in st or "NotResource" in st:
            out.append(f"{sid}: only plain Allow statements (no NotAction/NotResource)")
            continue
        actions = set(_as_list(st["Action"]))
        resources = _as_list(st["Resource"])
        if any("*" in a for a in actions):
            out.append(f"{sid}: wildcard action {sorted(actions)}")
        unknown = actions - READ_ACTIONS - WRITE_ACTIONS - LIST_ACTIONS
        if unknown:
            out.append(f"{sid}: actions outside S3 object read/write/list: {sorted(unknown)}")
        for res in resources:
            if res == "*" or not res.startswith("arn:aws:s3:::"):
                out.append(f"{sid}: resource {res!r} is not an S3 ARN in scope")
                continue
            bucket, _, key = res.removeprefix("arn:aws:s3:::").partition("/")
            if bucket != scope.bucket or "*" in bucket:
                out.append(f"{sid}: bucket {bucket!r} is not {scope.bucket!r}")
                continue
            if actions & LIST_ACTIONS:
                if key:
                    out.append(f"{sid}: ListBucket applies to the bucket ARN, not {res}")
                cond = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                if not cond:
                    out.append(f"{sid}: ListBucket without an s3:prefix condition lists it all")
                for prefix in _as_list(cond or []):
                    if not _under(prefix.removesuffix("/*"), scope.read):
                        out.append(f"{sid}: lists {prefix!r} outside {scope.read}")
            if actions & (READ_ACTIONS | WRITE_ACTIONS):
                if not key.endswith("/*") or "*" in key.removesuffix("/*"):
                    out.append(f"{sid}: object resource {res!r} must be '<prefix>/*'")
                    continue
                prefix = key.removesuffix("/*")
                if actions & READ_ACTIONS and not _under(prefix, scope.read):
                    out.append(f"{sid}: reads {prefix!r} outside {scope.read}")
                if actions & WRITE_ACTIONS and not _under(prefix, scope.write):
                    out.append(f"{sid}: writes {prefix!r} outside {scope.write}")
    return out


def test_every_policy_file_has_a_scope() -> None:
    assert sorted(p.name for p in IAM.glob("*.json")) == sorted(SCOPES)


@pytest.mark.parametrize("name", sorted(SCOPES))
def test_policy_grants_nothing_outside_its_prefixes(name: str) -> None:
    policy = json.loads((IAM / name).read_text())
    assert policy_violations(policy, SCOPES[name]) == []


@pytest.mark.parametrize("name", ["vcube-worker.json", "vcube-worker-dev.json"])
def test_worker_policy_covers_what_vcube_does(name: str) -> None:
    """Least privilege, but enough: read+write both prefixes, list both, no delete in the repo."""
    policy = json.loads((IAM / name).read_text())
    scope = SCOPES[name]
    repo, work = scope.write
    grants: dict[str, set[str]] = {}
    listed: set[str] = set()
    for st in policy["Statement"]:
        for res in _as_list(st["Resource"]):
            key = res.removeprefix(f"arn:aws:s3:::{scope.bucket}").strip("/").removesuffix("/*")
            grants.setdefault(key, set()).update(_as_list(st["Action"]))
        listed.update(_as_list(st.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])))
    assert {"s3:GetObject", "s3:PutObject"} <= grants[repo]
    assert "s3:DeleteObject" not in grants[repo], "workers never delete from the Icechunk repo"
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= grants[work]
    assert {repo, f"{repo}/*", work, f"{work}/*"} <= listed


def test_source_example_is_read_only() -> None:
    policy = json.loads((IAM / "source-read-only.example.json").read_text())
    actions = {a for st in policy["Statement"] for a in _as_list(st["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket"}


def test_atlas_source_is_anonymous_so_no_policy_reads_it() -> None:
    spec = load_spec(REPO / "datasets/oae-atlas.yaml")
    assert spec.source.storage.anonymous is True
    source_bucket, _ = _s3_prefix(spec.source.root)
    for path in IAM.glob("vcube-worker*.json"):
        assert source_bucket not in path.read_text(), f"{path.name} grants on the source"


_GOOD = {
    "Effect": "Allow",
    "Action": ["s3:GetObject", "s3:PutObject"],
    "Resource": ["arn:aws:s3:::b/t/cube/*"],
}


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({**_GOOD, "Resource": "*"}, "not an S3 ARN"),
        ({**_GOOD, "Action": "s3:*"}, "wildcard action"),
        ({**_GOOD, "Resource": ["arn:aws:s3:::b/*"]}, "must be"),
        ({**_GOOD, "Resource": ["arn:aws:s3:::b/t/cube-other/*"]}, "outside"),
        ({**_GOOD, "Resource": ["arn:aws:s3:::b/src/*"]}, "writes 'src' outside"),
        ({**_GOOD, "Resource": ["arn:aws:s3:::other/t/cube/*"]}, "bucket 'other'"),
        ({**_GOOD, "Action": ["iam:PassRole"]}, "actions outside"),
        ({**_GOOD, "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"]}, "s3:prefix"),
        ({**_GOOD, "Effect": "Deny", "NotAction": ["s3:GetObject"]}, "only plain Allow"),
    ],
)
def test_checker_catches_bad_statements(statement: dict[str, Any], expected: str) -> None:
    scope = Scope("b", read=("t/cube", "src"), write=("t/cube",))
    assert policy_violations({"Version": "2012-10-17", "Statement": [_GOOD]}, scope) == []
    found = policy_violations({"Version": "2012-10-17", "Statement": [statement]}, scope)
    assert any(expected in v for v in found), found
