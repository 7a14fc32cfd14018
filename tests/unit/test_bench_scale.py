"""The README's "Scale" numbers: the model against the real templates, planner and README.

`bench/scale.py` models the node statuses Argo stores for a build. Each check here ties the
model to something it does not compute itself: node counts to the DAG shape of the rendered
WorkflowTemplates (counted with Argo's node rules below), plan's `groups` output to what the
planner and the CLI produce for an atlas-shaped listing, and the README's figures to the model.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import scale
from tests.conftest import write_spec
from vcube import steps
from vcube.plan import build_plan
from vcube.storage import ObjectInfo

REPO = Path(__file__).resolve().parents[2]
SHARDS = scale.ATLAS_SHARDS_PER_GROUP


def _rendered(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "k8s/base" / f"{name}.yaml").read_text()))


def _child(parent: dict[str, Any]) -> dict[str, Any]:
    """The child Workflow the parent's fan-out applies (its manifest, inline in the template)."""
    (launch,) = [t for t in parent["spec"]["templates"] if "resource" in t]
    return dict(yaml.safe_load(launch["resource"]["manifest"]))


def _template_nodes(templates: dict[str, Any], name: str, fan_out: int) -> int:
    """Nodes Argo makes for one template run without retries: a retryStrategy adds a Retry
    node above the attempt; a DAG is one node plus its tasks; a withParam task is a TaskGroup
    node plus one run per item (every fan-out of this workflow has `fan_out` items); Steps are
    one node plus a StepGroup node per group plus its steps (a skipped step is a node too)."""
    t = templates[name]
    n = 1 if "retryStrategy" in t else 0
    if "steps" in t:  # the Steps node, one StepGroup node per group, each step's nodes
        return (
            n
            + 1
            + sum(
                1 + sum(_template_nodes(templates, step["template"], fan_out) for step in group)
                for group in t["steps"]
            )
        )
    if "dag" not in t:
        return n + 1
    n += 1
    for task in t["dag"]["tasks"]:
        one = _template_nodes(templates, task["template"], fan_out)
        n += 1 + fan_out * one if "withParam" in task or "withItems" in task else one
    return n


def _workflow_nodes(obj: dict[str, Any], fan_out: int) -> int:
    spec = obj["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    n = _template_nodes(templates, spec["entrypoint"], fan_out)
    if spec.get("onExit"):
        n += _template_nodes(templates, spec["onExit"], fan_out)
    return n


def _fan_out_template(obj: dict[str, Any]) -> str:
    (task,) = [
        t
        for tmpl in obj["spec"]["templates"]
        for t in tmpl.get("dag", {}).get("tasks", [])
        if "withParam" in t
    ]
    return str(task["template"])


@pytest.fixture(scope="module")
def atlas() -> scale.ScaleReport:
    return scale.measure(scale.ATLAS_GROUPS)


def test_node_counts_follow_the_rendered_dags(atlas: scale.ScaleReport) -> None:
    parent = _rendered("vcube-build")
    child = _child(parent)
    groups = scale.ATLAS_GROUPS
    assert atlas.child.nodes == _workflow_nodes(child, SHARDS)
    assert atlas.parent.nodes == _workflow_nodes(parent, groups)
    # The rejected single Workflow: each group's resource node replaced by the child's DAG.
    templates = {t["name"]: t for t in parent["spec"]["templates"]}
    per_group = _template_nodes(templates, _fan_out_template(parent), groups)
    assert atlas.single.nodes == atlas.parent.nodes + groups * (atlas.child.nodes - per_group)
    # Other sizes, so a count right for 690 by accident is caught.
    assert len(scale.workflow_nodes("parent", 3, 2)) == _workflow_nodes(parent, 3)


def test_an_exit_handler_is_modelled_like_argo_counts_it() -> None:
    parent = copy.deepcopy(_rendered("vcube-build"))
    spec = parent["spec"]
    retried = next(t for t in spec["templates"] if "container" in t and "retryStrategy" in t)
    plain = {k: v for k, v in retried.items() if k != "retryStrategy"} | {"name": "plain"}
    handler = {
        "name": "on-exit",
        "dag": {
            "tasks": [
                {"name": "a", "template": retried["name"]},
                {"name": "b", "template": "plain"},
            ]
        },
    }
    without = copy.deepcopy(spec)
    without.pop("onExit", None)  # the rendered template has its own handler (stop-children)
    spec["templates"] += [plain, handler]
    spec["onExit"] = "on-exit"
    with_handler = len(scale.workflow_nodes("parent", 5, 2, spec))
    assert with_handler == _workflow_nodes(parent, 5)
    # The handler's DAG node, a Retry node and its Pod, one plain Pod.
    assert with_handler == len(scale.workflow_nodes("parent", 5, 2, without)) + 1 + 2 + 1


def test_groups_output_is_what_plan_writes_for_the_atlas(
    atlas: scale.ScaleReport, tmp_path: Path
) -> None:
    """The model's `groups.json` equals the planner's for an atlas-shaped listing (one month per
    series: a full build's groups output does not depend on the series length, as no file can
    be reused). The cube is local and not built yet, so every group needs work and is listed."""
    raw = yaml.safe_load((REPO / "datasets/oae-atlas.yaml").read_text())
    raw["target"] = {"repo": str(tmp_path / "cube"), "branch": "main"}
    _, spec = write_spec(tmp_path / "atlas.yaml", raw)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    listing = [
        ObjectInfo(f"{p:03d}/{m}/alk-forcing.{p:03d}-1999-{m}.pop.h.0347-{m}.nc", 1, t, f'"{p}{m}"')
        for p in range(scale.ATLAS_GROUPS)
        for m in ("01", "04", "07", "10")
    ]
    plan, shard_files = build_plan(spec, listing)
    _, listed = steps.work_items(spec, plan, shard_files)
    assert listed == scale.atlas_groups()
    assert atlas.groups_json_bytes == len(json.dumps(listed).encode())  # as the CLI writes it


def test_readme_states_the_measured_numbers(atlas: scale.ScaleReport) -> None:
    readme = (REPO / "README.md").read_text()
    flowing = " ".join(readme.split())
    for row in scale.readme_rows(atlas):
        assert (row in readme.splitlines()) or (" ".join(row.split()) in flowing), (
            f"README.md does not say {row!r}: update its Scale section "
            "(`python -m bench.scale --readme` prints the rows)"
        )


def _claimed_breaking_point(readme: str, design: str) -> int:
    text = " ".join(readme.split())
    pattern = {
        "single": r"One Workflow would break at ~([\d ]+) groups",
        "parent": r"the parent would break only at ~([\d ]+) groups",
    }[design]
    m = re.search(pattern, text)
    assert m, f"README.md no longer states where the {design} design breaks"
    return int(m.group(1).replace(" ", ""))


@pytest.mark.slow
def test_readme_breaking_points_hold_within_five_percent() -> None:
    readme = (REPO / "README.md").read_text()
    limit = scale.ARGO_MAX_WORKFLOW_SIZE
    single = _claimed_breaking_point(readme, "single")
    assert scale.measure(int(single * 0.95)).single.stored_bytes <= limit
    assert scale.measure(int(single * 1.05)).single.stored_bytes > limit
    parent = _claimed_breaking_point(readme, "parent")
    assert scale.measure(int(parent * 0.95), single=False).parent.stored_bytes <= limit
    assert scale.measure(int(parent * 1.05), single=False).parent.stored_bytes > limit
