"""The committed YAML under k8s/base/ is what the Hera code renders, and it is valid and sound."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.schemas import validate_argo_loose, validate_object
from workflows import render
from workflows.template import (
    ARGO_VERSION,
    GROUP_TEMPLATE_NAME,
    IMAGE,
    SCRATCH,
    TEMPLATE_NAME,
    group_template_dict,
    template_dict,
)

NAMES = [TEMPLATE_NAME, GROUP_TEMPLATE_NAME]


def _committed(name: str) -> str:
    return (render.OUTPUT_DIR / f"{name}.yaml").read_text()


def _objects() -> list[dict[str, Any]]:
    return [yaml.safe_load(_committed(n)) for n in NAMES]


def test_committed_yaml_equals_what_the_code_renders() -> None:
    rendered = render.rendered()
    assert sorted(rendered) == sorted(f"{n}.yaml" for n in NAMES)
    stale = [name for name, text in rendered.items() if _committed(name[:-5]) != text]
    assert not stale, f"{', '.join(stale)} out of date with workflows/: run `make render`"


def test_render_check_mode_detects_drift(tmp_path: Path) -> None:
    assert render.main(["--output-dir", str(tmp_path)]) == 0
    assert render.main(["--check", "--output-dir", str(tmp_path)]) == 0
    path = tmp_path / f"{TEMPLATE_NAME}.yaml"
    path.write_text(path.read_text().replace("retryPolicy: Always", "retryPolicy: OnError"))
    assert render.main(["--check", "--output-dir", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", NAMES)
def test_rendered_objects_are_strictly_schema_valid(name: str) -> None:
    obj = yaml.safe_load(_committed(name))
    validate_object(obj)
    validate_argo_loose(obj)


def test_files_are_named_after_the_object_and_pinned_to_the_argo_schema() -> None:
    for name in NAMES:
        text = _committed(name)
        first = text.splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=")
        assert f"/{ARGO_VERSION}/" in first
        assert yaml.safe_load(text)["metadata"]["name"] == name


def _pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in obj["spec"]["templates"] if "container" in t]


def test_every_pod_is_locked_down_sized_and_labelled() -> None:
    for obj in _objects():
        spec = obj["spec"]
        assert spec["serviceAccountName"] == "vcube"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["podGC"] == {"strategy": "OnPodSuccess"}
        assert spec["ttlStrategy"]["secondsAfterSuccess"] > 0
        assert spec["activeDeadlineSeconds"] > 0
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "vcube"
        for t in _pod_templates(obj):
            c = t["container"]
            assert c["image"] == IMAGE, "untagged in the base: the overlay sets the tag"
            assert c["command"] == ["vcube"]
            assert c["args"][0] == t["name"], "each step runs the CLI verb of its name"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]
            assert [m["mountPath"] for m in c["volumeMounts"]] == [SCRATCH]
            assert t["metadata"]["labels"]["app.kubernetes.io/component"] == t["name"]
            assert "workflows.argoproj.io/display-name" in t["annotations"]
            assert t["retryStrategy"]["backoff"]["duration"]
            assert all(
                p["valueFrom"]["path"].startswith(SCRATCH + "/") for p in t["outputs"]["parameters"]
            )


def test_scan_and_commit_policies() -> None:
    group = {t["name"]: t for t in group_template_dict()["spec"]["templates"]}
    scan, commit = group["scan"], group["commit"]
    assert scan["retryStrategy"]["retryPolicy"] == "Always"  # node loss on spot included
    # ...but not a file at fault (exit 1) or a bad spec (exit 2): those would fail again.
    assert 'lastRetry.status == "Error"' in scan["retryStrategy"]["expression"]
    assert '["1", "2"]' in scan["retryStrategy"]["expression"]
    assert scan["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert scan["tolerations"][0]["value"] == "spot"
    assert commit["nodeSelector"] == {"karpenter.sh/capacity-type": "on-demand"}
    assert commit["synchronization"]["mutexes"][0]["name"].endswith("{{workflow.parameters.spec}}")
    assert int(commit["retryStrategy"]["limit"]) >= 3
    names = {m["name"] for t in (scan, commit) for m in t["metrics"]["prometheus"]}
    assert names == {"vcube_files_scanned", "vcube_refs_committed"}
    parent = {t["name"]: t for t in template_dict()["spec"]["templates"]}
    # init writes to the repo too: the same mutex as commit.
    assert parent["init"]["synchronization"] == commit["synchronization"]


def test_parameters_are_described() -> None:
    for obj in _objects():
        for p in obj["spec"]["arguments"]["parameters"]:
            assert p.get("description"), p["name"]
        for t in obj["spec"]["templates"]:
            for p in t.get("inputs", {}).get("parameters", []):
                assert p.get("description"), (t["name"], p["name"])


def test_child_manifest_is_a_valid_workflow_of_the_group_template() -> None:
    launch = next(t for t in template_dict()["spec"]["templates"] if "resource" in t)
    text = launch["resource"]["manifest"]
    for var, value in {
        "{{workflow.parameters.spec}}": "/app/datasets/oae-atlas.yaml",
        "{{workflow.name}}": "vcube-build-x7k2p",
        "{{inputs.parameters.group}}": "012",
        "{{inputs.parameters.shards}}": '["012-01","012-04","012-07","012-10"]',
    }.items():
        text = text.replace(var, value)
    child = yaml.safe_load(text)
    validate_object(child)
    assert child["spec"]["workflowTemplateRef"] == {"name": GROUP_TEMPLATE_NAME}
    params = {p["name"]: p["value"] for p in child["spec"]["arguments"]["parameters"]}
    assert params["group"] == "012"
    assert params["shards"] == '["012-01","012-04","012-07","012-10"]'
    declared = {p["name"] for p in group_template_dict()["spec"]["arguments"]["parameters"]}
    assert set(params) == declared
    assert launch["resource"]["setOwnerReference"] is True


def test_importing_the_package_has_no_side_effects(tmp_path: Path) -> None:
    import importlib
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import workflows, workflows.template, workflows.render"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(render.REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []
    importlib.import_module("workflows.submit")


_VAR = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    return []


@pytest.mark.parametrize("name", NAMES)
def test_every_template_variable_resolves_in_its_scope(name: str) -> None:
    """Static check of every `{{...}}`, including paths the wiring test does not execute."""
    obj = yaml.safe_load(_committed(name))
    spec = obj["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    workflow_vars = {f"workflow.parameters.{p['name']}" for p in spec["arguments"]["parameters"]}
    workflow_vars |= {"workflow.name", "workflow.uid"}

    def params(t: dict[str, Any], kind: str) -> set[str]:
        return {p["name"] for p in t.get(kind, {}).get("parameters", [])}

    problems = []
    for t in spec["templates"]:
        inputs = {f"inputs.parameters.{p}" for p in params(t, "inputs")}
        outputs = {f"outputs.parameters.{p}" for p in params(t, "outputs")}
        body = {k: v for k, v in t.items() if k not in ("dag", "metrics")}
        for text in _strings(body):
            problems += [
                (t["name"], v) for v in _VAR.findall(text) if v not in workflow_vars | inputs
            ]
        for text in _strings(t.get("metrics", {})):
            allowed = workflow_vars | inputs | outputs | {"status"}
            problems += [(t["name"], v) for v in _VAR.findall(text) if v not in allowed]
        tasks = {task["name"]: task for task in t.get("dag", {}).get("tasks", [])}
        for task in tasks.values():
            assert task["template"] in templates, task["template"]
            allowed = workflow_vars | inputs
            if "withParam" in task:
                allowed |= {"item"} | {f"item.{k}" for k in ("group", "shards")}
            for other, other_task in tasks.items():
                for p in params(templates[other_task["template"]], "outputs"):
                    allowed.add(f"tasks.{other}.outputs.parameters.{p}")
            callee = templates[task["template"]]
            passed = {p["name"] for p in task.get("arguments", {}).get("parameters", [])}
            assert passed == params(callee, "inputs"), (task["name"], passed)
            for text in _strings(task):
                problems += [(task["name"], v) for v in _VAR.findall(text) if v not in allowed]
    assert problems == []
