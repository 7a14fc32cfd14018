"""Helpers for the real-controller tests (tests/cluster/test_argo_*.py): archives and specs on the
cluster's S3 server, submitting through `make submit`'s code path, waiting on Workflows.

Specs live under build/argo-tests/ (not /tmp: a pod's /tmp is its emptyDir), so the pods, which
run on this machine, read the same files the test wrote.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.s3server import REGION, S3Server
from vcube.argo import COMPLETED_LABEL, PARENT_LABEL

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "build" / "argo-tests"
VCUBE = Path(sys.executable).parent / "vcube"
# Argo's rule for display names (workflow/controller/operator.go, v4.0.5).
DISPLAY_NAME_RE = r"^[a-zA-Z0-9][a-zA-Z0-9-.]{0,61}[a-zA-Z0-9]$"
# Small enough to keep a build at a few pod cycles: 2 groups x 2 shards x 2 files.
SAMPLE = ("--polygons", "2", "--dates", "2", "--months", "2", "--grid", "12x10", "--levels", "5")
_ids = itertools.count()


def storage_opts(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "region": REGION, "force_path_style": True, "allow_http": True}


@dataclass(frozen=True)
class Case:
    """One cube on the cluster's S3 server: its spec file (pod path = host path) and buckets."""

    name: str
    spec: Path
    archive: str
    cubes: str


def sample_archive(dest: Path) -> Path:
    if not dest.exists():
        subprocess.run([str(VCUBE), "sample", str(dest), *SAMPLE], check=True, capture_output=True)
    return dest


def make_case(
    s3: S3Server,
    archive_dir: Path,
    label: str,
    *,
    source_endpoint: str | None = None,
) -> Case:
    """A fresh cube bucket and the archive uploaded to its own bucket, with its spec file."""
    name = f"{label}-{next(_ids)}-{os.getpid()}"
    archive_bucket = s3.create_bucket(f"arc-{name}")
    s3.upload_dir(archive_dir, archive_bucket, "data")
    cubes = s3.create_bucket(f"cube-{name}")
    raw = yaml.safe_load((REPO / "datasets" / "sample.yaml").read_text())
    raw["name"] = f"argo-{label}"
    raw["source"]["root"] = f"s3://{archive_bucket}/data/"
    raw["source"]["storage"] = storage_opts(source_endpoint or s3.endpoint)
    raw["target"]["repo"] = f"s3://{cubes}/cube"
    raw["target"]["work"] = f"s3://{cubes}/work"
    raw["target"]["storage"] = storage_opts(s3.endpoint)
    SPECS.mkdir(parents=True, exist_ok=True)
    spec = SPECS / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    return Case(name, spec, archive_bucket, cubes)


def submit(env: dict[str, str], spec: Path, groups: str = "") -> str:
    """Submit vcube-build the way `make submit` does (workflows.submit -> vcube.argo, Kubernetes
    API path, current kubeconfig), with the spec's in-pod path given directly: the node agent's
    pods see this machine's files, there is no image with /app/datasets/ (`make submit` maps a
    datasets/ spec there and refuses other local paths)."""
    from vcube.argo import submit as argo_submit
    from vcube.argo import workflow_manifest

    # ARGO_NAMESPACE: the local kubeconfig's context namespace is `default`.
    full = {**os.environ, **env, "ARGO_NAMESPACE": "vcube"}
    done = argo_submit(workflow_manifest(str(spec), groups), env=full)
    assert done.via == "kubernetes" and done.namespace == "vcube", done
    return done.name


def get(kubectl: Any, kind: str, name: str) -> dict[str, Any]:
    return dict(kubectl.json("get", kind, name, "-n", "vcube"))


def children(kubectl: Any, parent: str) -> list[dict[str, Any]]:
    out = kubectl.json("get", "workflows", "-n", "vcube", "-l", f"{PARENT_LABEL}={parent}")
    return list(out["items"])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_done(kubectl: Any, name: str, timeout: float = 400) -> dict[str, Any]:
    """The Workflow once it is completed (label workflows.argoproj.io/completed=true)."""

    def done() -> dict[str, Any] | None:
        wf = get(kubectl, "workflow", name)
        labels = wf["metadata"].get("labels") or {}
        return wf if labels.get(COMPLETED_LABEL) == "true" else None

    try:
        return dict(wait_for(f"workflow {name} to finish", done, timeout, every=2))
    except AssertionError:
        wf = get(kubectl, "workflow", name)
        status = wf.get("status", {})
        summary = {
            n["displayName"]: (n["phase"], n.get("message", ""))
            for n in status.get("nodes", {}).values()
        }
        raise AssertionError(
            f"{name} not finished after {timeout} s: {status.get('phase')} "
            f"{status.get('message', '')} nodes={json.dumps(summary)[:3000]}"
        ) from None


def nodes(wf: dict[str, Any]) -> list[dict[str, Any]]:
    return list((wf.get("status") or {}).get("nodes", {}).values())


def attempts(wf: dict[str, Any], template: str) -> dict[str, list[dict[str, Any]]]:
    """Per Retry node of a template (by display name): its attempts (Pod nodes), in order."""
    by_id = {n["id"]: n for n in nodes(wf)}
    out = {}
    for n in nodes(wf):
        if n["type"] == "Retry" and n.get("templateName") == template:
            out[n["displayName"]] = [by_id[c] for c in n.get("children", []) if c in by_id]
    return out


def vcube(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(VCUBE), *args], env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
