"""Every overlay builds with kubectl kustomize, and every object validates strictly.

Core kinds: kubernetes-validate --strict (offline schemas of Kubernetes K8S_VERSION).
Argo Workflows / Argo CD / Argo Events / Karpenter / eksctl: tests/schemas.py (the official
CRDs and JSON schemas in ../shared/schemas, unknown fields are errors).
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.k8s.manifests import (
    K8S_VERSION,
    KUSTOMIZE_DIRS,
    OVERLAY_NAMESPACE,
    OVERLAYS,
    all_rendered,
    by_kind,
    is_core,
    kustomize,
    object_id,
    one,
    overlay,
)
from tests.schemas import validate_argo_loose, validate_object

PROD = "k8s/overlays/prod-us-west-2"
ARGO_WORKFLOW_KINDS = {"Workflow", "WorkflowTemplate", "CronWorkflow", "ClusterWorkflowTemplate"}


def _validate(obj: dict[str, Any]) -> None:
    if is_core(obj):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    else:
        validate_object(obj)
        if obj["apiVersion"] == "argoproj.io/v1alpha1" and obj["kind"] in ARGO_WORKFLOW_KINDS:
            validate_argo_loose(obj)


# What every overlay renders (base/): the build's namespace, identity, RBAC and templates.
OVERLAY_KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "WorkflowTemplate",
    "CronWorkflow",
}


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_builds_into_one_namespace(name: str) -> None:
    objs = overlay(name)
    assert {o["kind"] for o in objs} >= OVERLAY_KINDS
    ns = OVERLAY_NAMESPACE[name]
    assert [o["metadata"]["name"] for o in by_kind(objs, "Namespace")] == [ns]
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == ns, object_id(obj)
    binding = one(objs, "RoleBinding", "vcube-executor")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vcube", "namespace": ns}]


@pytest.mark.parametrize("relpath", KUSTOMIZE_DIRS)
def test_other_kustomize_dirs_build(relpath: str) -> None:
    assert kustomize(relpath)


def test_every_object_validates_strictly() -> None:
    """One test over all ~50 objects so a failure lists every invalid one at once."""
    seen: dict[str, int] = {}
    errors = []
    for source, obj in all_rendered():
        seen[obj["kind"]] = seen.get(obj["kind"], 0) + 1
        try:
            _validate(obj)
        except Exception as e:
            errors.append(f"{source}: {object_id(obj)}: {e}")
    assert not errors, "\n\n".join(errors)
    # The families are all there (a folder silently dropped from the walk would pass otherwise).
    expected = OVERLAY_KINDS | {
        "Application",
        "AppProject",
        "EventBus",
        "EventSource",
        "Sensor",
        "NodePool",
        "EC2NodeClass",
        "ClusterConfig",
    }
    assert expected <= set(seen), expected - set(seen)


def test_workflow_submitted_by_the_sensor_validates() -> None:
    """The Sensor embeds the Workflow it submits: validate it as a Workflow in its own right."""
    sensor = one(kustomize("k8s/events"), "Sensor", "vcube-rebuild")
    for trigger in sensor["spec"]["triggers"]:
        workflow = trigger["template"]["argoWorkflow"]["source"]["resource"]
        validate_object(workflow)
        validate_argo_loose(workflow)


def _with(obj: dict[str, Any], path: list[str | int], key: str, value: Any) -> dict[str, Any]:
    bad = copy.deepcopy(obj)
    node: Any = bad
    for step in path:
        node = node[step]
    node[key] = value
    return bad


@pytest.mark.parametrize(
    ("source", "kind", "name", "path"),
    [
        (PROD, "ServiceAccount", "vcube", ["metadata"]),
        (PROD, "WorkflowTemplate", "vcube-build", ["spec", "templates", 2]),
        ("k8s/events", "Sensor", "vcube-rebuild", ["spec", "template"]),
        ("k8s/cluster/karpenter", "NodePool", "vcube-spot", ["spec", "template", "spec"]),
    ],
)
def test_validation_is_strict(source: str, kind: str, name: str, path: list[str | int]) -> None:
    """A misspelt field (silently pruned by the API server) must fail, in each family."""
    obj = one(kustomize(source), kind, name)
    _validate(obj)
    with pytest.raises(Exception, match=r"(?i)additional|unevaluated|not allowed|nodeSelectr"):
        _validate(_with(obj, path, "nodeSelectr", {"a": "b"}))


@pytest.mark.parametrize("name", OVERLAYS)
def test_child_workflows_created_by_resource_templates_validate(name: str) -> None:
    """vcube-build applies one Workflow per group: that manifest is a string in the template,
    so nothing else validates it. It must be a valid Workflow carrying its whole spec (pinned
    to the parent's version), on the overlay's image and scan placement."""
    from tests.k8s.manifests import _child_workflow

    objs = overlay(name)
    templates = {t["metadata"]["name"]: t for t in by_kind(objs, "WorkflowTemplate")}
    children = [
        child
        for wt in templates.values()
        for tpl in wt["spec"]["templates"]
        if (child := _child_workflow(tpl)) is not None
    ]
    assert len(children) == 1, "vcube-build applies child workflows through a resource template"
    for child in children:
        assert child["kind"] == "Workflow"
        validate_object(child)
        validate_argo_loose(child)
        assert "workflowTemplateRef" not in child["spec"]
        inline = {t["name"]: t for t in child["spec"]["templates"]}
        standalone = {t["name"]: t for t in templates["vcube-build-group"]["spec"]["templates"]}
        # The child scans; the parent's commit-all commits. By hand, a group commits itself.
        assert set(standalone) - set(inline) == {"commit"}
        assert set(inline) == {"group", "scan"}
        for step in ("scan",):
            assert inline[step]["container"]["image"] == standalone[step]["container"]["image"]
            assert inline[step]["nodeSelector"] == standalone[step]["nodeSelector"], (name, step)
