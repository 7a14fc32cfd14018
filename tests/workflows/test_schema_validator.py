"""The offline validator itself: valid objects of every family pass, unknown fields fail by path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.schemas import (
    SchemaViolationError,
    supported_kinds,
    validate_argo_loose,
    validate_object,
)

WORKFLOW: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "metadata": {"generateName": "x-"},
    "spec": {
        "entrypoint": "main",
        "templates": [
            {
                "name": "main",
                "retryStrategy": {"limit": "3", "backoff": {"duration": "10s", "factor": 2}},
                "container": {
                    "image": "busybox",
                    "resources": {"requests": {"cpu": "500m", "memory": 512}},
                },
            }
        ],
    },
}

VALID: list[dict[str, Any]] = [
    WORKFLOW,
    {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "x"},
        "spec": {"templates": [{"name": "main", "container": {"image": "busybox"}}]},
    },
    {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "x"},
        "spec": {
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "vcube"},
            "source": {"repoURL": "https://example.com/r.git", "path": "k8s/overlays/dev"},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    },
    {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "spot"},
        "spec": {
            "template": {
                "spec": {
                    "nodeClassRef": {
                        "group": "karpenter.k8s.aws",
                        "kind": "EC2NodeClass",
                        "name": "default",
                    },
                    "requirements": [
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}
                    ],
                }
            }
        },
    },
    {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "default"},
        "spec": {
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "role": "KarpenterNodeRole",
            "subnetSelectorTerms": [{"tags": {"k": "v"}}],
            "securityGroupSelectorTerms": [{"tags": {"k": "v"}}],
        },
    },
    {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {"name": "s"},
        "spec": {
            "dependencies": [{"name": "d", "eventSourceName": "e", "eventName": "n"}],
            "triggers": [{"template": {"name": "t", "log": {}}}],
        },
    },
    {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {"name": "e"},
        "spec": {
            "webhook": {"n": {"port": "12000", "endpoint": "/x", "method": "POST", "url": ""}}
        },
    },
    {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventBus",
        "metadata": {"name": "default"},
        "spec": {"jetstream": {"version": "latest"}},
    },
    {
        "apiVersion": "eksctl.io/v1alpha5",
        "kind": "ClusterConfig",
        "metadata": {"name": "c", "region": "us-west-2"},
    },
]


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["kind"])
def test_valid_minimal_object_of_each_family_passes(obj: dict[str, Any]) -> None:
    validate_object(obj)


def test_every_family_is_exercised() -> None:
    kinds = {o["kind"] for o in VALID}
    families = {"Workflow", "Application", "NodePool", "EC2NodeClass", "Sensor", "ClusterConfig"}
    assert families <= kinds
    assert {k for _, k in supported_kinds()} >= kinds


def test_unknown_field_deep_in_workflow_fails_naming_its_path() -> None:
    bad = copy.deepcopy(WORKFLOW)
    bad["spec"]["templates"][0]["container"]["resources"]["requestz"] = {}
    bad["spec"]["templates"][0]["retryStrategy"]["backoff"]["jitter"] = 1
    with pytest.raises(SchemaViolationError) as info:
        validate_object(bad)
    text = str(info.value)
    assert "$.spec.templates[0].container.resources" in text
    assert "'requestz' was unexpected" in text
    assert "$.spec.templates[0].retryStrategy.backoff" in text
    assert "'jitter' was unexpected" in text
    assert "2 error(s)" in text


def test_int_or_string_accepts_both_and_rejects_others() -> None:
    obj = copy.deepcopy(WORKFLOW)
    obj["spec"]["templates"][0]["retryStrategy"]["limit"] = 3
    validate_object(obj)
    obj["spec"]["templates"][0]["retryStrategy"]["limit"] = [3]
    with pytest.raises(
        SchemaViolationError, match=r"\$\.spec\.templates\[0\]\.retryStrategy\.limit"
    ):
        validate_object(obj)


def test_preserve_unknown_fields_stays_open() -> None:
    app = copy.deepcopy(VALID[2])
    app["spec"]["source"]["helm"] = {"valuesObject": {"anything": {"goes": 1}}}
    validate_object(app)


def test_required_field_and_wrong_type_reported() -> None:
    bad = copy.deepcopy(VALID[3])
    del bad["spec"]["template"]["spec"]["nodeClassRef"]
    bad["spec"]["template"]["spec"]["requirements"][0]["values"] = "spot"
    with pytest.raises(SchemaViolationError) as info:
        validate_object(bad)
    text = str(info.value)
    assert "'nodeClassRef' is a required property" in text
    assert "$.spec.template.spec.requirements[0].values" in text


def test_unknown_field_in_events_and_eksctl_fails() -> None:
    sensor = copy.deepcopy(VALID[5])
    sensor["spec"]["triggers"][0]["template"]["lgo"] = {}
    with pytest.raises(SchemaViolationError, match=r"\$\.spec\.triggers\[0\]\.template"):
        validate_object(sensor)
    cluster = copy.deepcopy(VALID[-1])
    cluster["metadata"]["regoin"] = "x"
    with pytest.raises(SchemaViolationError, match="regoin"):
        validate_object(cluster)


def test_unknown_kind_is_an_error_not_a_pass() -> None:
    with pytest.raises(SchemaViolationError, match="kubernetes-validate"):
        validate_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})


def test_loose_check_is_open_but_still_typed() -> None:
    obj = copy.deepcopy(WORKFLOW)
    obj["spec"]["templates"][0]["container"]["foo"] = 1
    validate_argo_loose(obj)
    obj["spec"]["templates"] = "main"
    with pytest.raises(SchemaViolationError, match=r"\$\.spec\.templates"):
        validate_argo_loose(obj)
