"""Policy and wiring checks on the rendered objects (what review would check by eye).

- every pod: non-root, read-only root filesystem, no privilege escalation, resource requests;
- images: tagged (never :latest), and the WorkflowTemplate runs exactly the overlay's image;
- identities: the ServiceAccount a template runs as exists, is bound to the executor Role and
  carries the IAM role that eksctl creates for that namespace;
- scheduling: every pod fits one of the Karpenter NodePools (selector + taints);
- references: CronWorkflow/Sensor -> WorkflowTemplate and its parameters -> a spec baked into
  the image; Argo CD sources -> folders that exist; Helm charts pinned;
- no Secret objects and no secret-looking values anywhere.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from tests.k8s.manifests import (
    OVERLAY_NAMESPACE,
    OVERLAYS,
    REPO,
    PodTemplate,
    all_rendered,
    by_kind,
    kustomize,
    object_id,
    one,
    overlay,
    plain_objects,
    pod_templates,
    strings,
)
from vcube.spec import load_spec

ARGOCD_APPS = "k8s/argocd"


def _all_pods() -> list[tuple[str, PodTemplate]]:
    return [(src, pod) for src, obj in all_rendered() for pod in pod_templates(obj)]


def test_the_walk_finds_the_pods() -> None:
    """Guard for the tests below: they iterate over these, so an empty walk would pass them."""
    where = {pod.where for _, pod in _all_pods()}
    for step in ("plan", "init", "validate"):
        assert f"WorkflowTemplate/vcube/vcube-build template {step}" in where
    for step in ("scan", "commit"):
        assert f"WorkflowTemplate/vcube/vcube-build-group template {step}" in where
    assert "Sensor/vcube/vcube-rebuild" in where
    assert "EventSource/vcube/vcube-github" in where


@pytest.mark.parametrize("src_pod", _all_pods(), ids=lambda sp: f"{sp[0]}:{sp[1].where}")
def test_pod_is_locked_down_and_sized(src_pod: tuple[str, PodTemplate]) -> None:
    _, pod = src_pod
    for container in pod.containers:
        sc = {**pod.pod_security, **container.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, f"{pod.where}: runAsNonRoot must be true"
        assert sc.get("runAsUser", 1) != 0, f"{pod.where}: runs as uid 0"
        assert container.get("securityContext", {}).get("readOnlyRootFilesystem") is True, (
            f"{pod.where}: readOnlyRootFilesystem must be true"
        )
        assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False, (
            f"{pod.where}: allowPrivilegeEscalation must be false"
        )
        assert "ALL" in container.get("securityContext", {}).get("capabilities", {}).get(
            "drop", []
        ), f"{pod.where}: capabilities must drop ALL"
        requests = container.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(requests), f"{pod.where}: needs cpu+memory requests"
        assert "memory" in container.get("resources", {}).get("limits", {}), (
            f"{pod.where}: needs a memory limit (a leak must not take the node down)"
        )


def _image_tag_ok(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def test_every_image_is_pinned() -> None:
    images = []
    for source, obj in all_rendered():
        for path, value in strings(obj):
            if path.endswith(".image") or path.endswith("Image"):
                images.append((source, object_id(obj), path, value))
    assert len(images) >= 10, images  # the 5 workflow steps x 2 overlays at least
    bad = [i for i in images if not _image_tag_ok(i[3])]
    assert not bad, f"untagged or :latest images: {bad}"


def _overlay_image(name: str) -> str:
    kustomization = yaml.safe_load((REPO / f"k8s/overlays/{name}/kustomization.yaml").read_text())
    (entry,) = [i for i in kustomization["images"] if i["name"] == "vcube-worker"]
    return f"{entry['newName']}:{entry['newTag']}"


TEMPLATES = ("vcube-build", "vcube-build-group")


def _template_pods(name: str) -> list[PodTemplate]:
    objs = overlay(name)
    return [pod for t in TEMPLATES for pod in pod_templates(one(objs, "WorkflowTemplate", t))]


@pytest.mark.parametrize("name", OVERLAYS)
def test_templates_run_the_overlay_image(name: str) -> None:
    images = {c["image"] for pod in _template_pods(name) for c in pod.containers}
    assert images == {_overlay_image(name)}


@pytest.mark.parametrize("name", OVERLAYS)
def test_service_account_exists_is_bound_and_has_the_eksctl_role(name: str) -> None:
    objs = overlay(name)
    ns = OVERLAY_NAMESPACE[name]
    assert {one(objs, "WorkflowTemplate", t)["spec"]["serviceAccountName"] for t in TEMPLATES} == {
        "vcube"
    }
    # Worker pods (the data steps, also inside each group's child) run as vcube; only the
    # steps that apply and stop child Workflows run as vcube-launcher.
    by_identity: dict[str | None, set[str]] = {}
    for pod in _template_pods(name):
        by_identity.setdefault(pod.service_account, set()).add(pod.where.rsplit(" ", 1)[-1])
    assert by_identity == {
        "vcube": {
            *("plan", "init", "scan", "commit-all", "scans-done", "validate", "status"),
            "commit",  # vcube-build-group, a group by hand
        },
        "vcube-launcher": {"stop-children"},
    }, by_identity
    build = {
        t["name"]: t for t in one(objs, "WorkflowTemplate", "vcube-build")["spec"]["templates"]
    }
    assert build["group"]["serviceAccountName"] == "vcube-launcher"
    sa = one(objs, "ServiceAccount", "vcube")
    # The worker identity may only report task results (the Argo executor): it cannot create,
    # change or stop Workflows.
    role = one(objs, "Role", "vcube-executor")
    assert role["rules"] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        },
    ]
    binding = one(objs, "RoleBinding", "vcube-executor")
    assert binding["roleRef"]["name"] == "vcube-executor"
    assert {"kind": "ServiceAccount", "name": "vcube", "namespace": ns} in binding["subjects"]
    # The launcher: task results plus applying (get, create, patch), watching and stopping
    # (list, patch) Workflows; no AWS role.
    launcher = one(objs, "ServiceAccount", "vcube-launcher")
    assert "annotations" not in launcher["metadata"]
    role = one(objs, "Role", "vcube-launcher")
    assert role["rules"] == [
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflowtaskresults"],
            "verbs": ["create", "patch"],
        },
        {
            "apiGroups": ["argoproj.io"],
            "resources": ["workflows"],
            "verbs": ["get", "list", "watch", "create", "patch"],
        },
    ]
    binding = one(objs, "RoleBinding", "vcube-launcher")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vcube-launcher", "namespace": ns}
    ]
    # IRSA: the annotated role is the one eksctl creates for this namespace/ServiceAccount,
    # and the policy attached to it is a file in k8s/iam/.
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    (cluster,) = [o for _, o in plain_objects("k8s/cluster/eksctl")]
    (entry,) = [
        s
        for s in cluster["iam"]["serviceAccounts"]
        if s["metadata"] == {"name": "vcube", "namespace": ns}
    ]
    assert arn.endswith(f":role/{entry['roleName']}"), (arn, entry["roleName"])
    (policy_arn,) = entry["attachPolicyARNs"]
    policy_name = policy_arn.rsplit("/", 1)[-1]
    assert (REPO / "k8s/iam" / f"{policy_name}.json").is_file(), policy_name


def _node_pools() -> list[dict[str, Any]]:
    return by_kind(kustomize("k8s/cluster/karpenter"), "NodePool")


def _pool_labels(pool: dict[str, Any]) -> dict[str, set[str]]:
    """Label values a node of this pool can have (template labels + `In` requirements)."""
    tpl = pool["spec"]["template"]
    labels = {k: {v} for k, v in tpl.get("metadata", {}).get("labels", {}).items()}
    for req in tpl["spec"]["requirements"]:
        if req["operator"] == "In":
            labels[req["key"]] = set(req["values"])
    return labels


def _tolerates(tolerations: tuple[dict[str, Any], ...], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        effect_ok = t.get("effect") in (None, "", taint["effect"])
        if t.get("operator") == "Exists" and t.get("key") in (None, taint["key"]) and effect_ok:
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value") and effect_ok:
            return True
    return False


def _fits(pod: PodTemplate, pool: dict[str, Any]) -> bool:
    labels = _pool_labels(pool)
    if any(value not in labels.get(key, set()) for key, value in pod.node_selector.items()):
        return False
    taints = pool["spec"]["template"]["spec"].get("taints", [])
    return all(_tolerates(pod.tolerations, t) for t in taints if t["effect"] != "PreferNoSchedule")


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_workflow_pod_fits_a_karpenter_pool(name: str) -> None:
    pools = _node_pools()
    placement = {}
    for pod in _template_pods(name):
        assert pod.node_selector, f"{pod.where}: no nodeSelector (it could land on system nodes)"
        fitting = [p["metadata"]["name"] for p in pools if _fits(pod, p)]
        assert fitting, f"{pod.where} fits no NodePool: {pod.node_selector} {pod.tolerations}"
        placement[pod.where.rsplit(" ", 1)[-1]] = fitting
    if name == "prod-us-west-2":
        assert placement["scan"] == ["vcube-spot"]
        assert placement["commit"] == ["vcube-on-demand"]
    else:
        assert all(p == ["vcube-on-demand"] for p in placement.values()), placement


def test_spot_pool_is_tainted_so_only_scans_land_there() -> None:
    (spot,) = [p for p in _node_pools() if p["metadata"]["name"] == "vcube-spot"]
    assert spot["spec"]["template"]["spec"]["taints"], "spot pool must be tainted"
    pods = _template_pods("prod-us-west-2")
    on_spot = sorted(p.where.rsplit(" ", 1)[-1] for p in pods if _fits(p, spot))
    # vcube-build-group's scan and the same step inside vcube-build's child.
    assert on_spot == ["scan", "scan"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_parallelism_is_set_per_overlay(name: str) -> None:
    template = one(overlay(name), "WorkflowTemplate", "vcube-build")
    assert template["spec"]["parallelism"] == {"prod-us-west-2": 50, "dev": 5}[name]


def _spec_path_of(arguments: dict[str, Any]) -> str:
    (value,) = [p["value"] for p in arguments["parameters"] if p["name"] == "spec"]
    return value


def _check_submission(arguments: dict[str, Any], template: dict[str, Any]) -> None:
    """Arguments name template parameters, and the spec path is a spec baked into the image."""
    declared = {p["name"] for p in template["spec"]["arguments"]["parameters"]}
    given = {p["name"] for p in arguments["parameters"]}
    assert given <= declared, given - declared
    spec_path = PurePosixPath(_spec_path_of(arguments))
    assert spec_path.parent == PurePosixPath("/app/datasets"), spec_path
    local = REPO / "datasets" / spec_path.name
    assert local.is_file(), f"{spec_path} is not baked into the image (no {local})"
    spec = load_spec(local)
    assert spec_path.stem == spec.name


def test_cron_and_sensor_submit_the_template_with_a_real_spec() -> None:
    template = one(overlay("prod-us-west-2"), "WorkflowTemplate", "vcube-build")
    cron = one(overlay("prod-us-west-2"), "CronWorkflow", "vcube-refresh")
    wf_spec = cron["spec"]["workflowSpec"]
    assert wf_spec["workflowTemplateRef"] == {"name": "vcube-build"}
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    _check_submission(wf_spec["arguments"], template)
    assert _spec_path_of(template["spec"]["arguments"]) == _spec_path_of(wf_spec["arguments"])
    sensor = one(kustomize("k8s/events"), "Sensor", "vcube-rebuild")
    (trigger,) = sensor["spec"]["triggers"]
    workflow = trigger["template"]["argoWorkflow"]["source"]["resource"]
    assert workflow["spec"]["workflowTemplateRef"] == {"name": "vcube-build"}
    _check_submission(workflow["spec"]["arguments"], template)
    # The Sensor runs as its own ServiceAccount, which may create workflows and nothing more.
    events = kustomize("k8s/events")
    sa = sensor["spec"]["template"]["serviceAccountName"]
    one(events, "ServiceAccount", sa)
    role = one(events, "Role", sa)
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs <= {"create", "get", "list", "watch"}, verbs
    assert one(overlay("dev"), "CronWorkflow", "vcube-refresh")["spec"].get("suspend") is True


def test_artifact_logs_go_under_the_overlays_writable_work_prefix() -> None:
    for name, policy in (("prod-us-west-2", "vcube-worker"), ("dev", "vcube-worker-dev")):
        cm = one(overlay(name), "ConfigMap", "artifact-repositories")
        key = cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"]
        repo = yaml.safe_load(cm["data"][key])
        assert repo["s3"]["useSDKCreds"] is True
        doc = (REPO / "k8s/iam" / f"{policy}.json").read_text()
        prefix = repo["s3"]["keyFormat"].split("{{", 1)[0]
        writable = re.findall(r'"arn:aws:s3:::([^"]+)/\*"', doc)
        assert any(f"{repo['s3']['bucket']}/{prefix}".startswith(w + "/") for w in writable), (
            name,
            prefix,
            writable,
        )


def _argocd_apps() -> list[dict[str, Any]]:
    return [o for _, o in plain_objects(ARGOCD_APPS) if o["kind"] == "Application"]


def test_argocd_sources_exist_and_charts_are_pinned() -> None:
    apps = {a["metadata"]["name"]: a for a in _argocd_apps()}
    assert {"vcube-root", "vcube-prod", "argo-workflows", "argo-events", "karpenter"} <= set(apps)
    # This repository, wherever it is hosted (README step 1 replaces the placeholder URL).
    our_repo = apps["vcube-root"]["spec"]["source"]["repoURL"]
    for name, app in apps.items():
        source = app["spec"]["source"]
        assert app["spec"]["project"] == "vcube", name
        if source["repoURL"] == our_repo:
            assert (REPO / source["path"]).is_dir(), f"{name}: {source['path']} does not exist"
        else:
            assert re.fullmatch(r"\d+\.\d+\.\d+", source["targetRevision"]), (
                f"{name}: chart version must be pinned, got {source['targetRevision']!r}"
            )
    prod = apps["vcube-prod"]
    assert prod["spec"]["source"]["path"] == "k8s/overlays/prod-us-west-2"
    assert prod["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    values = apps["argo-workflows"]["spec"]["source"]["helm"]["valuesObject"]
    assert values["images"]["tag"].startswith("v4."), "Argo Workflows v4.x"
    assert "persistence" not in values["controller"], "archive is off by decision (see file)"
    defaults = values["controller"]["workflowDefaults"]["spec"]
    assert defaults["podGC"]["strategy"] == "OnPodSuccess"
    assert defaults["ttlStrategy"]


def test_no_secret_objects_or_values() -> None:
    suspicious_key = re.compile(r"(?i)(password|secret|token|access_?key|private_?key)")
    problems = []
    for source, obj in all_rendered():
        if obj["kind"] == "Secret":
            problems.append(f"{source}: {object_id(obj)} is a Secret (create it out of band)")
        for pod in pod_templates(obj):
            for c in pod.containers:
                for env in c.get("env", []):
                    if suspicious_key.search(env["name"]) and "value" in env:
                        problems.append(f"{pod.where}: env {env['name']} has a literal value")
        for path, value in strings(obj):
            if re.search(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])", value):
                problems.append(f"{source}: {object_id(obj)} {path}: AWS access key id")
            if "PRIVATE KEY-----" in value:
                problems.append(f"{source}: {object_id(obj)} {path}: private key")
    assert not problems, "\n".join(problems)
    # Secrets are referenced by name only (the webhook secret is created out of band).
    es = one(kustomize("k8s/events"), "EventSource", "vcube-github")
    secret_ref = es["spec"]["github"]["vcube"]["webhookSecret"]
    assert secret_ref == {"name": "github-webhook", "key": "secret"}


def test_argocd_sync_waves_install_crds_before_their_objects() -> None:
    """Karpenter CRDs < controller < Argo charts < node pools < vcube < events wiring."""
    apps = {
        a["metadata"]["name"]: a for a in _argocd_apps() if a["metadata"]["name"] != "vcube-root"
    }
    wave = {
        name: int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))
        for name, app in apps.items()
    }
    assert wave["karpenter-crd"] < wave["karpenter"] < wave["karpenter-nodepools"]
    for platform in ("argo-workflows", "argo-events", "karpenter-nodepools"):
        assert wave[platform] < wave["vcube-prod"] == wave["vcube-dev"] < wave["vcube-events"]
    # Apps whose objects are custom resources of another app must not fail their dry run
    # while that app's CRDs are still being installed.
    for name in ("karpenter-nodepools", "vcube-prod", "vcube-dev", "vcube-events"):
        assert "SkipDryRunOnMissingResource=true" in apps[name]["spec"]["syncPolicy"]["syncOptions"]
