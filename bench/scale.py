"""Numbers behind the single-workflow vs workflow-of-workflows decision (README "Scale").

Three things grow with the archive: the submitted Workflow object (constant: it references the
template), the ``groups`` output parameter of ``plan`` (ids only, linear in groups), and the
Workflow's ``status.nodes`` (linear in tasks). Argo keeps a Workflow in one etcd object; the
controller gzips ``status.nodes`` into ``status.compressedNodes`` once the object passes its
``maxWorkflowSize`` (1 MiB), and fails the workflow if even that is too big unless node-status
offloading to a database is configured. This module builds realistic node statuses (field set
of Argo's NodeStatus, values shaped like a real run's, summaries copied from a sample run) and
measures them. ``python -m bench.scale`` prints the numbers, ``--readme`` the README's table rows.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

from workflows.build import template_dict
from workflows.group import group_template_dict

ARGO_MAX_WORKFLOW_SIZE = 1024 * 1024  # controller default (MAX_WORKFLOW_SIZE), bytes
ATLAS_GROUPS = 690
ATLAS_SHARDS_PER_GROUP = 4
ATLAS_FILES_PER_SHARD = 180
WORKFLOW_NAME = "vcube-build-7xk2p"

# Summaries as the CLI writes them (from a sample run), sized up to atlas numbers.
_SCAN_SUMMARY = {
    "bytes": 941_052,
    "changed": True,
    "files": ATLAS_FILES_PER_SHARD,
    "refs": 6120,
    "seconds": 41.337,
    "shard": "000-01",
    "step": "scan",
}
_COMMITTER_SUMMARY = {  # commit-all: one committer for every group
    "committed": ATLAS_GROUPS,
    "groups": ATLAS_GROUPS,
    "refs": 24480 * ATLAS_GROUPS,
    "seconds": 1412.337,
    "step": "commit-all",
}


def atlas_groups(
    n_groups: int = ATLAS_GROUPS, months: tuple[str, ...] = ("01", "04", "07", "10")
) -> list[dict[str, Any]]:
    """The ``groups.json`` plan writes for the atlas: ids only."""
    return [
        {"group": f"{g:03d}", "shards": [f"{g:03d}-{m}" for m in months]} for g in range(n_groups)
    ]


def groups_json_bytes(n_groups: int = ATLAS_GROUPS) -> int:
    """Size of plan's ``groups`` output parameter (compact JSON, as the CLI writes it)."""
    return len(json.dumps(atlas_groups(n_groups)).encode())


def _node_id(name: str) -> str:
    return f"{WORKFLOW_NAME}-{int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)}"


def _jitter(name: str, salt: str, low: int, high: int) -> int:
    """A deterministic per-node number: real statuses differ node to node (compression)."""
    digest = hashlib.sha1(f"{salt}:{name}".encode()).hexdigest()
    return low + int(digest[:8], 16) % (high - low + 1)


def _timestamp(seconds: int) -> str:
    day, rest = divmod(seconds, 86400)
    return f"2026-11-{25 + day:02d}T{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}Z"


def _params(values: dict[str, str], descriptions: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"name": k, "value": v, "description": descriptions.get(k, "")} for k, v in values.items()
    ]


@dataclass
class _Nodes:
    nodes: dict[str, dict[str, Any]]
    descriptions: dict[str, dict[str, str]]

    def add(
        self,
        name: str,
        display: str,
        kind: str,
        template: str | None,
        boundary: str | None,
        parent: str | None,
        inputs: dict[str, str] | None = None,
        outputs: dict[str, str] | None = None,
        progress: str = "1/1",
    ) -> str:
        node_id = _node_id(name)
        node: dict[str, Any] = {
            "id": node_id,
            "name": name,
            "displayName": display,
            "type": kind,
            "templateName": template,
            "templateScope": "local/",
            "phase": "Succeeded",
            "boundaryID": boundary,
            "startedAt": _timestamp(start := _jitter(name, "start", 0, 30000)),
            "finishedAt": _timestamp(start + _jitter(name, "took", 5, 900)),
            "progress": progress,
            "resourcesDuration": {
                "cpu": _jitter(name, "cpu", 1, 400),
                "memory": _jitter(name, "mem", 1, 900),
            },
        }
        if kind == "Pod":
            host = _jitter(name, "host", 0, 255)
            node["hostNodeName"] = f"ip-10-42-{host}-{host * 7 % 256}.us-west-2.compute.internal"
            node["outputs"] = {"exitCode": "0"}
        if inputs:
            node["inputs"] = {
                "parameters": _params(inputs, self.descriptions.get(template or "", {}))
            }
        if outputs:
            node.setdefault("outputs", {})["parameters"] = [
                {**p, "valueFrom": {"path": f"/tmp/outputs/{p['name']}"}}
                for p in _params(outputs, self.descriptions.get(template or "", {}))
            ]
        if template is None:
            node.pop("templateName")
        if boundary is None:
            node.pop("boundaryID")
        self.nodes[node_id] = node
        if parent is not None:
            self.nodes[_node_id(parent)].setdefault("children", []).append(node_id)
        return name

    def retried_pod(
        self, name: str, display: str, template: str, boundary: str, parent: str, **io: Any
    ) -> str:
        """A template with a retryStrategy: a Retry node with one Pod child (no retries)."""
        self.add(name, display, "Retry", template, boundary, parent, **io)
        pod = self.add(f"{name}(0)", f"{display}(0)", "Pod", template, boundary, name, **io)
        self.nodes[_node_id(pod)].setdefault("nodeFlag", {"retried": True})
        return name


@cache
def _descriptions() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for obj in (template_dict(), group_template_dict()):
        for t in obj["spec"]["templates"]:
            params = t.get("inputs", {}).get("parameters", []) + t.get("outputs", {}).get(
                "parameters", []
            )
            out[t["name"]] = {p["name"]: p.get("description", "") for p in params}
    return out


@cache
def _template_bytes(which: str) -> int:
    obj = template_dict() if which == "parent" else group_template_dict()
    return len(json.dumps(obj, separators=(",", ":")).encode())


def _months(shards_per_group: int) -> tuple[str, ...]:
    return tuple(f"{1 + 3 * i:02d}" for i in range(shards_per_group))


def _head(nodes: _Nodes, root: str, n_groups: int, shards_per_group: int) -> None:
    """plan and init, as both the single and the parent workflow run them."""
    groups_value = json.dumps(atlas_groups(n_groups, _months(shards_per_group)))
    plan_summary = json.dumps(
        {"digest": "6c36848fbb593dce", "files": n_groups * shards_per_group * 180, "step": "plan"}
    )
    nodes.retried_pod(
        f"{root}.plan", "plan", "plan", _node_id(root), root,
        outputs={"summary": plan_summary, "groups": groups_value},
    )  # fmt: skip
    nodes.retried_pod(
        f"{root}.init", "init cube", "init", _node_id(root), root,
        outputs={"summary": json.dumps({"arrays": 98, "changed": True, "step": "init"})},
    )  # fmt: skip


def _tail(nodes: _Nodes, root: str, spec: dict[str, Any] | None = None) -> None:
    """validate, then the exit handler (``spec.onExit``) if the parent template has one."""
    nodes.retried_pod(
        f"{root}.validate", "validate", "validate", _node_id(root), root,
        outputs={"summary": json.dumps({"ok": True, "problems": [], "step": "validate"})},
    )  # fmt: skip
    spec = template_dict()["spec"] if spec is None else spec
    if not spec.get("onExit"):
        return
    templates = {t["name"]: t for t in spec["templates"]}
    handler = f"{root}.onExit"
    body = templates[spec["onExit"]]
    if "steps" in body:  # a Steps node, a StepGroup node per group, then each step's nodes
        nodes.add(handler, handler, "Steps", spec["onExit"], None, None)
        for i, group in enumerate(body["steps"]):
            parent = nodes.add(
                f"{handler}[{i}]", f"[{i}]", "StepGroup", None, _node_id(handler), handler
            )
            for step in group:
                _exit_pod(nodes, templates, f"{parent}.{step['name']}", step, handler, parent)
        return
    nodes.add(handler, handler, "DAG", spec["onExit"], None, None)
    for task in body.get("dag", {}).get("tasks", []):
        _exit_pod(nodes, templates, f"{handler}.{task['name']}", task, handler, handler)


def _exit_pod(
    nodes: _Nodes,
    templates: dict[str, Any],
    name: str,
    task: dict[str, Any],
    handler: str,
    parent: str,
) -> None:
    """One exit-handler task or step: a Retry node and its Pod, or a plain Pod."""
    summary = json.dumps({"step": task["name"]})
    if "retryStrategy" in templates[task["template"]]:
        nodes.retried_pod(
            name, task["name"], task["template"], _node_id(handler), parent,
            outputs={"summary": summary},
        )  # fmt: skip
    else:
        nodes.add(
            name, task["name"], "Pod", task["template"], _node_id(handler), parent,
            outputs={"summary": summary},
        )  # fmt: skip


def _fan_in(nodes: _Nodes, root: str) -> None:
    """The one committer (``commit-all``) and ``scans-done``, beside the groups."""
    nodes.retried_pod(
        f"{root}.commit-all", "commit-all", "commit-all", _node_id(root), root,
        outputs={
            "summary": json.dumps(_COMMITTER_SUMMARY, sort_keys=True),
            "refs": str(_COMMITTER_SUMMARY["refs"]),
        },
        progress=f"{ATLAS_GROUPS}/{ATLAS_GROUPS}",
    )  # fmt: skip
    nodes.retried_pod(
        f"{root}.scans-done", "scans-done", "scans-done", _node_id(root), root,
        outputs={"summary": json.dumps({"marker": "fanin/x/scans-done", "step": "scans-done"})},
    )  # fmt: skip


def _group_body(nodes: _Nodes, gname: str, boundary: str, g: dict[str, Any]) -> None:
    """The scan fan-out of one group, under the node ``gname`` (its commit is commit-all's)."""
    sfan = nodes.add(f"{gname}.scan", "scan", "TaskGroup", None, boundary, gname)
    for j, shard in enumerate(g["shards"]):
        summary = json.dumps(
            {
                **_SCAN_SUMMARY,
                "shard": shard,
                "bytes": _jitter(shard, "bytes", 900_000, 990_000),
                "seconds": _jitter(shard, "s", 20_000, 90_000) / 1000,
            },
            sort_keys=True,
        )
        nodes.retried_pod(
            f"{sfan}({j}:{shard})", f"scan {shard}", "scan", boundary, sfan,
            inputs={"shard": shard},
            outputs={"summary": summary, "files": str(ATLAS_FILES_PER_SHARD)},
            progress=f"{ATLAS_FILES_PER_SHARD}/{ATLAS_FILES_PER_SHARD}",
        )  # fmt: skip


def _label(i: int, g: dict[str, Any]) -> str:
    return f"{i}:group:{g['group']},shards:{json.dumps(g['shards'], separators=(',', ':'))}"


def _group_inputs(g: dict[str, Any]) -> dict[str, str]:
    return {"group": g["group"], "shards": json.dumps(g["shards"])}


def _group_dag(nodes: _Nodes, name: str, boundary: str, fan: str, g: dict[str, Any]) -> None:
    """The rejected single Workflow: each group's DAG runs inside it."""
    gname = nodes.add(
        name, f"group {g['group']}", "DAG", "group", boundary, fan, inputs=_group_inputs(g)
    )
    _group_body(nodes, gname, _node_id(gname), g)


def _child_resource(nodes: _Nodes, name: str, boundary: str, fan: str, g: dict[str, Any]) -> None:
    """``vcube-build``: a resource node (Retry + Pod) per group that creates its child."""
    nodes.retried_pod(
        name, f"group {g['group']}", "group", boundary, fan,
        inputs=_group_inputs(g),
        outputs={"workflow": f"vcube-build-group-{_jitter(g['group'], 'wf', 10000, 99999)}"},
    )  # fmt: skip


_GROUP_NODES = {"single": _group_dag, "parent": _child_resource}


def workflow_nodes(
    design: str,
    n_groups: int = ATLAS_GROUPS,
    shards_per_group: int = ATLAS_SHARDS_PER_GROUP,
    spec: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """``status.nodes`` of the parent (``design="parent"``) or of the rejected single Workflow
    (``"single"``): plan, init, the groups, the committer, validate, and the exit handler of
    ``spec``."""
    nodes = _Nodes({}, _descriptions())
    root = nodes.add(WORKFLOW_NAME, WORKFLOW_NAME, "DAG", "build", None, None)
    _head(nodes, root, n_groups, shards_per_group)
    fan = nodes.add(f"{root}.group", "group", "TaskGroup", None, _node_id(root), root)
    for i, g in enumerate(atlas_groups(n_groups, _months(shards_per_group))):
        _GROUP_NODES[design](nodes, f"{fan}({_label(i, g)})", _node_id(root), fan, g)
    _fan_in(nodes, root)
    _tail(nodes, root, spec)
    return nodes.nodes


def child_workflow_nodes(shards_per_group: int = ATLAS_SHARDS_PER_GROUP) -> dict[str, Any]:
    """``status.nodes`` of one child of the build: its group's scans."""
    nodes = _Nodes({}, _descriptions())
    name = "vcube-build-group-k2x9q"
    root = nodes.add(name, name, "DAG", "group", None, None)
    g = atlas_groups(1, _months(shards_per_group))[0]
    _group_body(nodes, root, _node_id(root), g)
    return nodes.nodes


@dataclass(frozen=True)
class ObjectSize:
    """A Workflow object at the end of a run, as etcd would store it."""

    nodes: int
    spec_bytes: int
    # status.storedWorkflowTemplateSpec (the referenced template) + one task-result flag per pod.
    other_status_bytes: int
    status_nodes_bytes: int
    compressed_nodes_bytes: int

    @property
    def bytes_per_node(self) -> float:
        return self.status_nodes_bytes / self.nodes

    @property
    def uncompressed_bytes(self) -> int:
        return self.spec_bytes + self.other_status_bytes + self.status_nodes_bytes

    @property
    def stored_bytes(self) -> int:
        """What the controller stores: nodes gzip+base64-compressed once over the limit."""
        if not self.compressed:
            return self.uncompressed_bytes
        return self.spec_bytes + self.other_status_bytes + self.compressed_nodes_bytes

    @property
    def compressed(self) -> bool:
        return self.uncompressed_bytes > ARGO_MAX_WORKFLOW_SIZE

    @property
    def fraction_of_limit(self) -> float:
        return self.stored_bytes / ARGO_MAX_WORKFLOW_SIZE


def object_size(nodes: dict[str, Any], spec_bytes: int, template_bytes: int) -> ObjectSize:
    raw = json.dumps(nodes, separators=(",", ":")).encode()
    pods = [n["id"] for n in nodes.values() if n["type"] == "Pod"]
    task_results = len(json.dumps(dict.fromkeys(pods, True), separators=(",", ":")).encode())
    return ObjectSize(
        nodes=len(nodes),
        spec_bytes=spec_bytes,
        other_status_bytes=template_bytes + task_results,
        status_nodes_bytes=len(raw),
        compressed_nodes_bytes=len(base64.b64encode(gzip.compress(raw))),
    )


@dataclass(frozen=True)
class ScaleReport:
    groups: int
    submitted_workflow_bytes: int
    groups_json_bytes: int
    single: ObjectSize  # the rejected design, for comparison
    parent: ObjectSize
    child: ObjectSize


def measure(n_groups: int = ATLAS_GROUPS, *, single: bool = True) -> ScaleReport:
    """Measure both designs for ``n_groups`` atlas-shaped groups."""
    from vcube.argo import workflow_manifest

    wf = workflow_manifest("/app/datasets/oae-atlas.yaml", namespace="vcube")
    wf_bytes = len(json.dumps(wf, separators=(",", ":")).encode())
    parent_t, child_t = _template_bytes("parent"), _template_bytes("child")
    empty = ObjectSize(1, 0, 0, 0, 0)
    return ScaleReport(
        groups=n_groups,
        submitted_workflow_bytes=wf_bytes,
        groups_json_bytes=groups_json_bytes(n_groups),
        single=(
            object_size(workflow_nodes("single", n_groups), wf_bytes, parent_t + child_t)
            if single
            else empty
        ),
        parent=object_size(workflow_nodes("parent", n_groups), wf_bytes, parent_t),
        child=object_size(child_workflow_nodes(), wf_bytes, child_t),
    )


def max_groups(design: str, limit: int = ARGO_MAX_WORKFLOW_SIZE) -> int:
    """The largest group count whose stored Workflow stays under ``limit`` (bisection)."""
    low, high = 1, 1 << 14
    while low < high:
        mid = (low + high + 1) // 2
        r = measure(mid, single=design == "single")
        size = r.single if design == "single" else r.parent
        if size.stored_bytes <= limit:
            low = mid
        else:
            high = mid - 1
    return low


def _row(label: str, o: ObjectSize) -> str:
    return (
        f"  {label:8s} nodes={o.nodes:6d} status.nodes={o.status_nodes_bytes / 1e6:6.2f} MB "
        f"({o.bytes_per_node:.0f} B/node) stored={o.stored_bytes / 1e3:7.0f} kB "
        f"({100 * o.fraction_of_limit:.0f}% of 1 MiB)"
    )


def _si(n: float) -> str:
    """Bytes as the README writes them: 8.4 MB, 859 kB, 403 B."""
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n:.0f} B"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %" if fraction >= 0.1 else f"{100 * fraction:.1f} %"


def readme_rows(r: ScaleReport) -> list[str]:
    """The README's Scale table rows and the sentence after it, exactly as written there."""
    rows = []
    for label, o in (
        ("one Workflow for everything", r.single),
        ("parent `vcube-build`", r.parent),
        ("each child `vcube-build-group`", r.child),
    ):
        stored = _si(o.stored_bytes) + (" (compressed)" if o.compressed else "")
        cells = [label, f"{o.nodes:,}".replace(",", " "), _si(o.status_nodes_bytes), stored]
        rows.append("| " + " | ".join([*cells, _percent(o.fraction_of_limit)]) + " |")
    rows.append(
        f"The submitted Workflow is {_si(r.submitted_workflow_bytes)} and plan's `groups` "
        f"output parameter {_si(r.groups_json_bytes)}."
    )
    return rows


def main() -> None:
    if sys.argv[1:] == ["--readme"]:
        print("\n".join(readme_rows(measure())))
        return
    for n in (100, ATLAS_GROUPS, 2000):
        r = measure(n)
        print(
            f"groups={n}: submitted Workflow {r.submitted_workflow_bytes} B, "
            f"plan's groups output {r.groups_json_bytes} B"
        )
        print(_row("single", r.single))
        print(_row("parent", r.parent))
        print(_row("child", r.child))
    print(f"max groups, one workflow: {max_groups('single')}; parent: {max_groups('parent')}")


if __name__ == "__main__":
    main()
