"""The local control plane itself: what the cluster tests rely on works as on a real cluster.

The first tests need no cluster (generated configuration and overlay); the rest run against it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import controlplane
from tests.cluster.argo_helpers import wait_for
from tests.cluster.conftest import Cluster
from tests.k8s.manifests import REPO, kustomize

ARGO_CRDS = {
    "clusterworkflowtemplates",
    "cronworkflows",
    "workfloweventbindings",
    "workflows",
    "workflowtemplates",
    "workflowtaskresults",
    "workflowtasksets",
    "workflowartifactgctasks",
}


def test_controller_config_is_the_argocd_values() -> None:
    """The controller gets k8s/argocd's values; only the S3 endpoint and ports become local."""
    values = controlplane.chart_values()
    ports = {"metricsConfig": 40001, "telemetryConfig": 40002}
    cfg = yaml.safe_load(controlplane.controller_config(values, "http://127.0.0.1:4567", ports))
    ctrl, art = values["controller"], values["artifactRepository"]
    assert cfg["workflowDefaults"] == ctrl["workflowDefaults"]
    assert cfg["resourceRateLimit"] == ctrl["resourceRateLimit"]
    assert cfg["executor"]["securityContext"] == values["executor"]["securityContext"]
    assert cfg["executor"]["resources"] == values["executor"]["resources"]
    assert cfg["executor"]["env"] == values["executor"]["env"]
    assert cfg["artifactRepository"]["archiveLogs"] is True
    s3 = cfg["artifactRepository"]["s3"]
    assert s3 == {**art["s3"], "endpoint": "127.0.0.1:4567", "insecure": True}
    assert cfg["metricsConfig"]["port"] == 40001
    assert cfg["telemetryConfig"]["port"] == 40002
    assert cfg["metricsConfig"]["enabled"] is cfg["telemetryConfig"]["enabled"] is True


def test_controller_env_is_the_charts_extra_env() -> None:
    """controller.extraEnv (the chart's list of EnvVar) becomes the controller's environment."""
    values = controlplane.chart_values()
    env = controlplane.controller_env(values)
    assert env == {e["name"]: e["value"] for e in values["controller"]["extraEnv"]}
    assert "DEFAULT_REQUEUE_TIME" in env
    fake = {"controller": {"extraEnv": [{"name": "A", "value": "1"}, {"name": "B", "value": 2}]}}
    assert controlplane.controller_env(fake) == {"A": "1", "B": "2"}
    assert controlplane.controller_env({"controller": {}}) == {}
    ref = {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}
    with pytest.raises(controlplane.ClusterError, match=r"only \{name, value\} entries"):
        controlplane.controller_env({"controller": {"extraEnv": [ref]}})


def _paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """JSON-pointer-ish paths where `a` and `b` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _paths(a.get(k), b.get(k), f"{prefix}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in _paths(x, y, f"{prefix}/{i}")
        ]
    return [] if a == b else [prefix]


def _kustomize(path: Path) -> dict[tuple[str, str], Any]:
    """`kubectl kustomize` of a directory, by (kind, name)."""
    objs = kustomize(os.path.relpath(path, REPO))
    return {(d["kind"], d["metadata"]["name"]): d for d in objs}


def test_overlay_changes_only_spec_path_and_s3_endpoint(tmp_path: Path) -> None:
    layout = controlplane.Layout(tmp_path / "cluster")
    overlay = controlplane.write_overlay(layout, "http://127.0.0.1:4567", "/app/datasets/x.yaml")
    base = _kustomize(controlplane.REPO_ROOT / "k8s" / "base")
    local = _kustomize(overlay)
    assert set(base) == set(local)
    diffs = {key: _paths(base[key], local[key]) for key in base}
    diffs = {key: d for key, d in diffs.items() if d}
    assert diffs == {
        ("WorkflowTemplate", "vcube-build"): ["/spec/arguments/parameters/0/value"],
        ("CronWorkflow", "vcube-refresh"): ["/spec/workflowSpec/arguments/parameters/0/value"],
        ("ConfigMap", "artifact-repositories"): ["/data/vcube-s3"],
    }
    wft = local[("WorkflowTemplate", "vcube-build")]
    assert wft["spec"]["arguments"]["parameters"][0]["value"] == "/app/datasets/x.yaml"
    repo = yaml.safe_load(local[("ConfigMap", "artifact-repositories")]["data"]["vcube-s3"])
    base_repo = yaml.safe_load(base[("ConfigMap", "artifact-repositories")]["data"]["vcube-s3"])
    assert repo["s3"] == {**base_repo["s3"], "endpoint": "127.0.0.1:4567", "insecure": True}
    assert repo["archiveLogs"] == base_repo["archiveLogs"]


# --- against the running cluster -------------------------------------------------------------


def test_api_server_ready_and_argo_installed(
    cluster: Cluster, kubectl: controlplane.Kubectl
) -> None:
    assert kubectl("get", "--raw", "/readyz").strip() == "ok"
    crds = {
        c["spec"]["names"]["plural"]
        for c in kubectl.json("get", "crd")["items"]
        if c["spec"]["group"] == "argoproj.io"
    }
    assert crds == ARGO_CRDS
    names = {
        t["metadata"]["name"]
        for t in kubectl.json("get", "workflowtemplates", "-n", "vcube")["items"]
    }
    assert {"vcube-build", "vcube-build-group"} <= names
    kubectl("get", "cronworkflow", "vcube-refresh", "-n", "vcube")
    holder = kubectl(
        "get", "lease", "workflow-controller", "-n", "argo", "-o", "jsonpath={.spec.holderIdentity}"
    )
    assert holder == controlplane.LEADER_IDENTITY
    # The controller process runs with the chart's controller.extraEnv.
    pid = controlplane.running(cluster.layout, "workflow-controller")
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    proc_env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
    for name, value in controlplane.controller_env(controlplane.chart_values()).items():
        assert proc_env.get(name) == value, name
    cm = kubectl.json("get", "configmap", controlplane.CONTROLLER_CONFIGMAP, "-n", "argo")
    cfg = yaml.safe_load(cm["data"]["config"])
    assert cfg["workflowDefaults"] == controlplane.chart_values()["controller"]["workflowDefaults"]
    assert cfg["artifactRepository"]["s3"]["endpoint"] == cluster.s3.endpoint.split("://")[1]


def test_service_account_token_authenticates_and_rbac_limits_it(
    cluster: Cluster, kubectl: controlplane.Kubectl, tmp_path: Path
) -> None:
    """A vcube ServiceAccount token is accepted, and RBAC grants it the executor Role only."""
    token = kubectl("create", "token", "vcube", "-n", "vcube").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    sa_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [
            {
                "name": "sa",
                "context": {"cluster": "vcube-local", "user": "sa", "namespace": "vcube"},
            }
        ],
        "current-context": "sa",
    }
    path = tmp_path / "sa.kubeconfig"
    path.write_text(yaml.safe_dump(sa_config))

    def as_sa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(controlplane.kubectl_path()), "--kubeconfig", str(path), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    who = as_sa("auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    assert (
        json.loads(who.stdout)["status"]["userInfo"]["username"]
        == "system:serviceaccount:vcube:vcube"
    )
    assert (
        as_sa("auth", "can-i", "create", "workflowtaskresults.argoproj.io").stdout.strip() == "yes"
    )
    for verb, resource in (
        ("create", "pods"),
        ("get", "secrets"),
        ("delete", "workflows.argoproj.io"),
    ):
        assert as_sa("auth", "can-i", verb, resource).stdout.strip() == "no", (verb, resource)
    denied = as_sa("get", "pods")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_controller_manager_collects_garbage_and_publishes_root_ca(
    cluster: Cluster, kubectl: controlplane.Kubectl
) -> None:
    ca = kubectl.json("get", "configmap", "kube-root-ca.crt", "-n", "vcube")["data"]["ca.crt"]
    assert ca.strip() == (cluster.layout.pki / "ca.crt").read_text().strip()
    owner = yaml.safe_load(
        kubectl("create", "configmap", "gc-owner", "-n", "default", "-o", "yaml")
    )
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "gc-dependent",
            "namespace": "default",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "gc-owner",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(dependent))
    kubectl("delete", "configmap", "gc-owner", "-n", "default")
    wait_for(
        "the garbage collector to delete gc-dependent",
        lambda: (
            not kubectl("get", "configmap", "gc-dependent", "-n", "default", "--ignore-not-found")
        ),
        timeout=90,
        every=0.5,
    )
    kubectl("create", "namespace", "gc-ns")
    kubectl("create", "configmap", "x", "-n", "gc-ns")
    kubectl("delete", "namespace", "gc-ns", "--wait=false")
    wait_for(
        "the namespace controller to finish deleting gc-ns",
        lambda: not kubectl("get", "namespace", "gc-ns", "--ignore-not-found"),
        timeout=90,
        every=0.5,
    )


def test_trivial_workflow_succeeds_on_the_real_controller(
    cluster: Cluster, kubectl: controlplane.Kubectl
) -> None:
    """One container step runs through the real controller and the node agent to Succeeded."""
    wf = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "smoke-", "namespace": "vcube"},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "vcube",
            "templates": [
                {
                    "name": "main",
                    "container": {"image": "vcube-worker", "command": ["true"]},
                }
            ],
        },
    }
    name = kubectl("create", "-f", "-", "-o", "name", stdin=json.dumps(wf)).strip()
    try:
        kubectl(
            "wait",
            name,
            "-n",
            "vcube",
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=180s",
            timeout=200,
        )
    except controlplane.ClusterError as e:
        status = kubectl.json("get", name, "-n", "vcube").get("status", {})
        pytest.fail(f"{name} did not succeed: {e}\nstatus: {json.dumps(status)[:3000]}")
    status = kubectl.json("get", name, "-n", "vcube")["status"]
    pods = [n for n in status["nodes"].values() if n["type"] == "Pod"]
    assert len(pods) == 1
    assert pods[0]["phase"] == "Succeeded"
    assert status.get("progress") == "1/1"


def test_cluster_kubeconfig_is_admin(cluster: Cluster) -> None:
    """The printed KUBECONFIG is a client cert in system:masters, signed by the cluster CA."""
    from cryptography import x509

    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    cert = x509.load_pem_x509_certificate(
        base64.b64decode(cfg["users"][0]["user"]["client-certificate-data"])
    )
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]


def test_up_again_reuses_the_running_cluster(cluster: Cluster) -> None:
    """`make cluster-up` on a healthy cluster with the same options changes nothing."""
    before = json.loads(cluster.layout.info.read_text())
    t0 = time.monotonic()
    env = controlplane.up(s3_endpoint=cluster.s3.endpoint, layout=cluster.layout)
    assert time.monotonic() - t0 < 10
    assert env["KUBECONFIG"] == str(cluster.kubeconfig)
    assert json.loads(cluster.layout.info.read_text()) == before
