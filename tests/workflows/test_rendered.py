"""The committed YAML under k8s/base/ is what the Hera code renders, and it is valid and sound."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.schemas import validate_argo_loose, validate_object
from tests.workflows.argo_emulator import Emulator
from workflows import render
from workflows.build import template_dict
from workflows.group import group_template_dict
from workflows.parts import ARGO_VERSION, GROUP_TEMPLATE_NAME, IMAGE, SCRATCH, TEMPLATE_NAME

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


def _child(workflow_name: str = "vcube-build-x7k2p") -> dict[str, Any]:
    """The child Workflow of group 012, as the controller would apply it for the parent
    Workflow `workflow_name`."""
    launch = next(t for t in template_dict()["spec"]["templates"] if "resource" in t)
    text = launch["resource"]["manifest"]
    for var, value in {
        "{{workflow.parameters.spec}}": "/app/datasets/oae-atlas.yaml",
        "{{workflow.name}}": workflow_name,
        "{{inputs.parameters.group}}": "012",
        "{{inputs.parameters.shards}}": '["012-01","012-04","012-07","012-10"]',
        "{{inputs.parameters.image}}": IMAGE,
        "{{inputs.parameters.scan-capacity}}": "spot",
    }.items():
        text = text.replace(var, value)
    return dict(yaml.safe_load(text))


def _all_templates() -> list[tuple[str, dict[str, Any]]]:
    parent, group = template_dict(), group_template_dict()
    return [
        *((f"vcube-build/{t['name']}", t) for t in parent["spec"]["templates"]),
        *((f"vcube-build-group/{t['name']}", t) for t in group["spec"]["templates"]),
        *((f"child/{t['name']}", t) for t in _child()["spec"]["templates"]),
    ]


# workflow/controller/operator.go (v4.0.5, executeTemplate): a substituted display name that
# does not match marks the node Error.
DISPLAY_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-.]{0,61}[a-zA-Z0-9]$")
SAMPLE_VALUES = {
    "inputs.parameters.group": "012",
    "inputs.parameters.shard": "012-04",
    "=inputs.parameters.group": "012",
    "=inputs.parameters.shard": "012-04",
    "workflow.parameters.group": "012",
}

PACKED_SHARDS = ",".join(f"{g:03d}-{m}" for g in range(12, 28) for m in ("01", "04", "07", "10"))
PACKED_VALUES = {
    k: {"012": "p0003", "012-04": PACKED_SHARDS}.get(v, v) for k, v in SAMPLE_VALUES.items()
}


def _display(display: str, values: dict[str, str]) -> str:
    """A display name as the controller substitutes it (the emulator's expression evaluation,
    which follows Argo v4.0.5's for the expressions the templates use)."""
    scope = {k.lstrip("="): v for k, v in values.items()}
    return Emulator({"spec": {"templates": []}}, Path(), library={}).substitute(display, scope)


def test_every_display_name_matches_argos_regex_after_substitution() -> None:
    names = {}
    for where, t in _all_templates():
        display = t.get("annotations", {}).get("workflows.argoproj.io/display-name")
        if display is None:
            assert "container" not in t and "resource" not in t, f"{where} has no display name"
            continue
        value = _display(display, SAMPLE_VALUES)
        assert DISPLAY_NAME_RE.match(value), f"{where}: {value!r}"
        names[where] = value
        # A packed work item (vcube.packing): its label, and a pod of 64 shards.
        packed = _display(display, PACKED_VALUES)
        assert DISPLAY_NAME_RE.match(packed), f"{where}: {packed!r}"
        names[f"{where} packed"] = packed
    assert names["vcube-build/init"] == "init-cube"
    assert names["vcube-build/group"] == "group-012"
    assert names["child/scan"] == names["vcube-build-group/scan"] == "scan-012-04"
    assert names["vcube-build/group packed"] == "group-p0003"
    assert names["child/scan packed"] == "scan-012-01-to-027-10"
    assert names["vcube-build-group/commit"] == "commit-012"
    assert names["vcube-build/commit-all"] == "commit-all"
    assert "child/commit" not in names  # the child only scans


def test_the_regex_check_can_fail() -> None:
    assert not DISPLAY_NAME_RE.match("init cube")
    assert not DISPLAY_NAME_RE.match("commit group 012")


def _retries(expression: str, status: str, code: str) -> bool:
    """Evaluate a retry expression of the form Argo's expr accepts, for one last attempt."""
    py = expression.replace("||", " or ").replace("&&", " and ")
    py = py.replace("lastRetry.status", "status").replace("lastRetry.exitCode", "code")
    return bool(eval(py, {"__builtins__": {}}, {"status": status, "code": code}))


def test_worker_steps_retry_only_transient_failures() -> None:
    for where, t in _all_templates():
        if "container" not in t:
            continue
        rs = t["retryStrategy"]
        assert rs["retryPolicy"] == "Always", where
        expr = rs["expression"]
        for code in ("1", "2"):  # the data or the spec: the same failure again
            assert not _retries(expr, "Failed", code), (where, code)
        for code in ("3", "137", "143", "-1"):  # storage unreachable, killed, no exit code
            assert _retries(expr, "Failed", code), (where, code)
        assert _retries(expr, "Error", "-1"), where  # pod or node lost (spot reclaim)


def test_no_max_duration_cuts_a_retry_short() -> None:
    """Argo counts maxDuration from the first attempt and makes it every later attempt's
    deadline; limit x activeDeadlineSeconds bounds the time instead."""
    for where, t in _all_templates():
        backoff = t.get("retryStrategy", {}).get("backoff", {})
        assert "maxDuration" not in backoff, where
        if backoff:
            assert backoff["cap"] and backoff["duration"], where


def test_a_step_under_a_mutex_fails_at_once_on_a_deterministic_error() -> None:
    """Argo waits out the next backoff before it evaluates the retry expression, holding the
    step's mutex meanwhile (seen on the real controller): such steps back off 1 s first."""
    locked = [(w, t) for w, t in _all_templates() if "synchronization" in t]
    assert {w.rsplit("/", 1)[-1] for w, _ in locked} == {"init", "commit", "commit-all"}
    for where, t in locked:
        assert t["retryStrategy"]["backoff"]["duration"] == "1s", where
        assert int(t["retryStrategy"]["limit"]) >= 5, where


def test_scan_and_commit_policies() -> None:
    group = {t["name"]: t for t in group_template_dict()["spec"]["templates"]}
    scan, commit = group["scan"], group["commit"]
    assert scan["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert scan["tolerations"][0]["value"] == "spot"
    assert commit["nodeSelector"] == {"karpenter.sh/capacity-type": "on-demand"}
    assert commit["synchronization"]["mutexes"][0]["name"].endswith("{{workflow.parameters.spec}}")
    assert int(commit["retryStrategy"]["limit"]) >= 3
    names = {m["name"] for t in (scan, commit) for m in t["metrics"]["prometheus"]}
    assert names == {"vcube_files_scanned", "vcube_refs_committed"}
    parent = {t["name"]: t for t in template_dict()["spec"]["templates"]}
    # init and the build's committer write to the repo too: the same mutex as commit.
    assert parent["init"]["synchronization"] == commit["synchronization"]
    assert parent["commit-all"]["synchronization"] == commit["synchronization"]
    assert parent["commit-all"]["nodeSelector"] == commit["nodeSelector"]
    assert parent["commit-all"]["retryStrategy"] == commit["retryStrategy"]


def test_one_build_per_cube_and_failed_groups_do_not_stop_the_others() -> None:
    spec = template_dict()["spec"]
    (mutex,) = spec["synchronization"]["mutexes"]
    assert mutex["name"] == "vcube-build-{{workflow.parameters.spec}}"
    commit_mutex = next(t for t in spec["templates"] if t["name"] == "init")["synchronization"]
    assert commit_mutex["mutexes"][0]["name"] != mutex["name"], "a build would deadlock on itself"
    build = next(t for t in spec["templates"] if t["name"] == spec["entrypoint"])
    assert build["dag"]["failFast"] is False
    # The CronWorkflow and the Sensor's Workflow run this template, so they take the same lock.
    cron = yaml.safe_load((render.REPO_ROOT / "k8s/base/vcube-refresh.yaml").read_text())
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == TEMPLATE_NAME
    assert "synchronization" not in cron["spec"]["workflowSpec"]
    sensor = yaml.safe_load((render.REPO_ROOT / "k8s/events/sensor-rebuild.yaml").read_text())
    (trigger,) = sensor["spec"]["triggers"]
    body = trigger["template"]["argoWorkflow"]["source"]["resource"]
    assert body["spec"]["workflowTemplateRef"]["name"] == TEMPLATE_NAME
    assert "synchronization" not in body["spec"]


def test_group_step_applies_one_deterministic_child_and_the_exit_handler_stops_them() -> None:
    spec = template_dict()["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    launch = templates["group"]
    assert launch["resource"]["action"] == "apply"
    assert launch["resource"]["setOwnerReference"] is True
    assert launch["serviceAccountName"] == "vcube-launcher"
    assert launch["retryStrategy"]["retryPolicy"] == "OnError"
    child = _child()
    assert "generateName" not in child["metadata"]
    assert child["metadata"]["name"] == "vcube-build-x7k2p-g012"
    assert child["metadata"]["labels"]["vcube.io/parent-workflow"] == "vcube-build-x7k2p"
    # Workflow names become label values (<= 63): the longest parents are CronWorkflow runs
    # (vcube-refresh-<10-digit timestamp>); atlas group ids have 3 digits.
    cron_child = _child("vcube-refresh-1733109420")["metadata"]
    assert cron_child["name"] == "vcube-refresh-1733109420-g012"
    assert cron_child["labels"]["vcube.io/parent-workflow"] == "vcube-refresh-1733109420"
    for value in (cron_child["name"], *cron_child["labels"].values()):
        assert len(value) <= 63, value
    # The exit handler: only when the build did not succeed, as the launcher identity.
    (exit_group,) = templates[spec["onExit"]]["steps"]  # steps: see the next test
    (task,) = [t for t in exit_group if t["name"] == "stop-children"]
    assert task["when"] == "{{workflow.status}} != Succeeded"
    stop = templates[task["template"]]
    assert stop["container"]["args"][:2] == ["stop-children", "{{workflow.name}}"]
    assert stop["serviceAccountName"] == "vcube-launcher"


def test_child_is_pinned_inline_and_runs_the_group_template_steps() -> None:
    """The child carries its whole spec (no template resolved at creation), the same steps
    as the standalone vcube-build-group, on the image kustomize sets on the group step."""
    child = _child()
    validate_object(child)
    validate_argo_loose(child)
    assert "workflowTemplateRef" not in child["spec"]
    standalone = group_template_dict()["spec"]
    inline = {t["name"]: t for t in child["spec"]["templates"]}
    # The same steps as the standalone template but its commit (the parent's commit-all's).
    assert set(inline) == {t["name"] for t in standalone["templates"]} - {"commit"}
    for t in standalone["templates"]:
        if t["name"] == "commit":
            continue
        mine = inline[t["name"]]
        for key in ("retryStrategy", "nodeSelector", "synchronization", "activeDeadlineSeconds"):
            a, b = mine.get(key), t.get(key)
            if key == "synchronization" and b:
                b = {"mutexes": [{"name": "vcube-commit-/app/datasets/oae-atlas.yaml"}]}
            assert a == b, (t["name"], key)
        if "container" in t:
            assert mine["container"]["image"] == IMAGE
            assert mine["container"]["args"][0] == t["container"]["args"][0]
    params = {p["name"]: p["value"] for p in child["spec"]["arguments"]["parameters"]}
    assert params == {
        "spec": "/app/datasets/oae-atlas.yaml",
        "group": "012",
        "shards": '["012-01","012-04","012-07","012-10"]',
    }
    (scan_task,) = inline["group"]["dag"]["tasks"]
    assert scan_task["withParam"] == params["shards"]
    # The child's own references survive the parent's substitution, for the child to resolve.
    assert inline["scan"]["container"]["args"][3] == "{{=inputs.parameters.shard}}"
    assert scan_task["arguments"]["parameters"] == [{"name": "shard", "value": "{{item}}"}]


def test_parameters_are_described() -> None:
    for obj in _objects():
        for p in obj["spec"]["arguments"]["parameters"]:
            assert p.get("description"), p["name"]
        for t in obj["spec"]["templates"]:
            for p in t.get("inputs", {}).get("parameters", []):
                assert p.get("description"), (t["name"], p["name"])


def test_importing_the_package_has_no_side_effects(tmp_path: Path) -> None:
    import importlib
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import workflows, workflows.parts, workflows.group, workflows.build, workflows.render",
        ],
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


# An expression tag naming a plain variable ({{=inputs.parameters.shard}}) counts as the variable;
# a longer expression counts as the variables it names.
_VAR = re.compile(r"\{\{\s*=?\s*([^{}]+?)\s*\}\}")
_TAG = re.compile(r"\{\{\s*(=?)\s*([^{}]+?)\s*\}\}")
_PATH = re.compile(r"\b(?:inputs|outputs|workflow|tasks|steps)(?:\.[\w-]+)+|\bitem\b(?:\.[\w-]+)*")


def _vars(text: str) -> list[str]:
    out = []
    for eq, body in _TAG.findall(text):
        out += [body] if not eq or _PATH.fullmatch(body) else _PATH.findall(body)
    return out


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
    assert _unresolved(yaml.safe_load(_committed(name))["spec"]) == []


def test_every_variable_of_the_child_resolves_in_its_scope() -> None:
    assert _unresolved(_child()["spec"]) == []


def _unresolved(spec: dict[str, Any]) -> list[tuple[str, str]]:
    templates = {t["name"]: t for t in spec["templates"]}
    workflow_vars = {f"workflow.parameters.{p['name']}" for p in spec["arguments"]["parameters"]}
    workflow_vars |= {"workflow.name", "workflow.uid", "workflow.status"}

    def params(t: dict[str, Any], kind: str) -> set[str]:
        return {p["name"] for p in t.get(kind, {}).get("parameters", [])}

    problems = []
    for t in spec["templates"]:
        inputs = {f"inputs.parameters.{p}" for p in params(t, "inputs")}
        outputs = {f"outputs.parameters.{p}" for p in params(t, "outputs")}
        # The child's manifest is checked on its own (test_child_is_pinned_inline...).
        body = {k: v for k, v in t.items() if k not in ("dag", "metrics", "resource")}
        for text in _strings(body):
            problems += [(t["name"], v) for v in _vars(text) if v not in workflow_vars | inputs]
        for text in _strings(t.get("metrics", {})):
            allowed = workflow_vars | inputs | outputs | {"status"}
            problems += [(t["name"], v) for v in _vars(text) if v not in allowed]
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
            required = {
                p["name"]
                for p in callee.get("inputs", {}).get("parameters", [])
                if "value" not in p
            }
            assert required <= passed <= params(callee, "inputs"), (task["name"], passed)
            for text in _strings(task):
                problems += [(task["name"], v) for v in _vars(text) if v not in allowed]
    return problems


def test_one_committer_runs_beside_the_scans_and_nothing_to_do_is_plan_and_validate() -> None:
    spec = template_dict()["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    tasks = {t["name"]: t for t in templates[spec["entrypoint"]]["dag"]["tasks"]}
    assert set(tasks) == {"plan", "init", "group", "commit-all", "scans-done", "validate"}
    # Nothing to do: init and the committer are skipped, the fan-out's list is empty.
    todo = "{{tasks.plan.outputs.parameters.todo}} > 0"
    assert tasks["init"]["when"] == tasks["commit-all"]["when"] == todo
    assert "when" not in tasks["plan"] and "when" not in tasks["validate"]
    assert templates["plan"]["outputs"]["parameters"][-1]["valueFrom"]["path"].endswith("/todo")
    # The committer starts with the scans (after init), and validate waits for it alone.
    assert tasks["group"]["depends"] == tasks["commit-all"]["depends"] == "init"
    assert tasks["validate"]["depends"] == "commit-all"
    # scans-done runs once every child finished, failed or not, and names the same run.
    assert tasks["scans-done"]["depends"] == "group.Succeeded || group.Failed || group.Errored"
    args = templates["commit-all"]["container"]["args"]
    run_id = args[args.index("--run-id") + 1]
    assert run_id == "{{workflow.uid}}"
    done_args = templates["scans-done"]["container"]["args"]
    assert done_args[done_args.index("--run-id") + 1] == run_id
    assert args[args.index("--groups") + 1] == "{{workflow.parameters.groups}}"
    # The build's picture: drawn by the exit handler whatever the outcome, never failing it.
    # Steps, not a DAG: Argo fails a stopped workflow's DAGs at once, the exit handler's too,
    # without waiting for its pods (v4.0.5 assessDAGPhase; tests/cluster stops a build).
    (exit_group,) = templates[spec["onExit"]]["steps"]
    exit_tasks = {t["name"]: t for t in exit_group}
    assert "when" not in exit_tasks["status"]
    assert exit_tasks["status"]["continueOn"] == {"error": True, "failed": True}
    (art,) = templates["status"]["outputs"]["artifacts"]
    assert art["path"] == "/tmp/outputs/status.png" and art["optional"] is True
    assert templates["status"]["container"]["args"][2:4] == ["--plot", art["path"]]


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_the_child_manifests_expression_tags_read_the_same_as_text_and_as_json() -> None:
    """The parent substitutes the child's manifest as raw YAML text and keeps it in its JSON
    spec. A tag the YAML folded or quoted (doubled quotes, a line break) or that holds <, > or &
    (escaped by Go's JSON) fails there: every group step errored on the real controller
    (tests/cluster) with both. Each tag's raw text must be its value, free of those."""
    manifest = next(
        t["resource"]["manifest"] for t in template_dict()["spec"]["templates"] if "resource" in t
    )
    raw = re.findall(r"\{\{=.*?\}\}", manifest)
    parsed = [t for s in _strings(yaml.safe_load(manifest)) for t in re.findall(r"\{\{=.*?\}\}", s)]
    assert raw, "the child's own inputs are expression tags"
    assert sorted(raw) == sorted(parsed)
    assert not [t for t in raw if set(t) & set("<>&")], raw
