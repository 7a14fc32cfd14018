"""The rebuild Sensor's filters, run on GitHub push payloads.

Argo Events evaluates a `string` data filter as: take the gjson result at `path` as a string
(for an array or object that is its raw JSON text) and match each `value` as a Go regular
expression; with dataLogicalOperator `and`, every filter must match one of its values
(pkg/sensors/dependencies/filter.go, v1.9). This emulates exactly that for plain dotted paths,
on payloads shaped like GitHub's push event, both compact and indented JSON (the raw text is
what the regex sees). The patterns use only syntax Go's RE2 and Python's re read alike.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.k8s.manifests import kustomize, one


def _sensor_filters() -> tuple[str, list[dict[str, Any]]]:
    sensor = one(kustomize("k8s/events"), "Sensor", "vcube-rebuild")
    (dep,) = sensor["spec"]["dependencies"]
    assert dep["eventSourceName"] == "vcube-github"
    es = one(kustomize("k8s/events"), "EventSource", "vcube-github")
    assert dep["eventName"] in es["spec"]["github"]
    assert es["spec"]["github"][dep["eventName"]]["events"] == ["push"]
    return dep["filters"].get("dataLogicalOperator", "and"), dep["filters"]["data"]


def _raw_at(raw_event: str, path: str) -> str | None:
    """gjson for a plain dotted path: the value's raw text (strings unquoted), None if absent."""
    node: Any = json.loads(raw_event)
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if isinstance(node, str):
        return node
    # Re-serialize the sub-document the way it appears in the raw payload.
    indent = 2 if "\n" in raw_event else None
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(node, indent=indent, separators=separators)


def sensor_fires(payload: dict[str, Any], *, indent: int | None) -> bool:
    operator, filters = _sensor_filters()
    raw = json.dumps({"header": {"X-Github-Event": ["push"]}, "body": payload}, indent=indent)
    results = []
    for f in filters:
        assert f["type"] == "string" and not f.get("comparator") and not f.get("template")
        text = _raw_at(raw, f["path"])
        results.append(text is not None and any(re.search(v, text) for v in f["value"]))
    return all(results) if operator == "and" else any(results)


def _push(
    ref: str = "refs/heads/main",
    *,
    added: tuple[str, ...] = (),
    modified: tuple[str, ...] = (),
    removed: tuple[str, ...] = (),
) -> dict[str, Any]:
    commit = {
        "id": "9f2c" * 10,
        "message": "update datasets/ docs",  # paths in messages must not count
        "author": {"name": "a", "email": "a@example.org"},
        "added": list(added),
        "removed": list(removed),
        "modified": list(modified),
    }
    other = {**commit, "id": "1b3d" * 10, "added": [], "removed": [], "modified": ["README.md"]}
    return {
        "ref": ref,
        "before": "0" * 40,
        "after": "9f2c" * 10,
        "repository": {"full_name": "example-org/vcube"},
        "commits": [other, commit],
        "head_commit": commit,
    }


CASES = [
    ("spec changed", _push(modified=("datasets/oae-atlas.yaml",)), True),
    ("spec added", _push(added=("datasets/new-archive.yaml",)), True),
    ("spec removed", _push(removed=("datasets/old.yaml",)), True),
    ("image tag bumped", _push(modified=("k8s/overlays/prod-us-west-2/kustomization.yaml",)), True),
    ("code only", _push(modified=("src/vcube/scan.py", "tests/unit/test_scan.py")), False),
    ("dev overlay only", _push(modified=("k8s/overlays/dev/kustomization.yaml",)), False),
    ("not at top level", _push(modified=("docs/datasets/notes.md",)), False),
    ("other branch", _push("refs/heads/feature", modified=("datasets/oae-atlas.yaml",)), False),
    ("a tag push", _push("refs/tags/v1.0", modified=("datasets/oae-atlas.yaml",)), False),
    ("mixed", _push(modified=("src/vcube/cli.py", "datasets/oae-atlas.yaml")), True),
]


@pytest.mark.parametrize("indent", [None, 2], ids=["compact", "indented"])
@pytest.mark.parametrize(("case", "payload", "fires"), CASES, ids=[c[0] for c in CASES])
def test_sensor_fires_only_for_spec_or_image_changes_on_main(
    case: str, payload: dict[str, Any], fires: bool, indent: int | None
) -> None:
    assert sensor_fires(payload, indent=indent) is fires, case


def test_trigger_labels_the_workflow_with_the_pushed_commit() -> None:
    sensor = one(kustomize("k8s/events"), "Sensor", "vcube-rebuild")
    (trigger,) = sensor["spec"]["triggers"]
    (param,) = trigger["template"]["argoWorkflow"]["parameters"]
    assert param["src"] == {"dependencyName": "push-to-main", "dataKey": "body.after"}
    assert param["dest"] == r"metadata.labels.vcube\.io/git-revision"
    assert trigger["template"]["argoWorkflow"]["operation"] == "submit"
