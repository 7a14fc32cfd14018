"""Run a rendered Argo WorkflowTemplate's DAG locally, the way the controller would.

Only what vcube-build uses: DAG templates with ``depends`` (task names joined by ``&&`` or
``||``, with ``.Succeeded`` / ``.Failed`` / ``.Errored``; tasks run one at a time, in order; a
task skipped by ``when`` or an empty ``withParam`` satisfies a plain dependency and no
``.Succeeded``-style one, whose task is then omitted),
``withParam`` over a JSON list (items may be objects: ``{{item.key}}``, lists rendered as JSON),
input and workflow parameters, output parameters from ``valueFrom.path`` (with ``default``),
container templates run as local processes, ``resource`` templates that apply a Workflow
(workflow-of-workflows): the manifest is substituted the way the parent controller does it
(tags it cannot resolve and Argo leaves alone stay, e.g. ``{{item}}`` and expression tags
``{{=...}}``), parsed, validated against the CRD schema and run as a child workflow to
completion (the success condition); applying the same name twice reuses the child. Expression
tags are evaluated when they are a plain variable path (``{{=inputs.parameters.shard}}``), or
the scan display name's first-to-last of a split list (``let s = split(...); ...``).
``steps`` templates (groups in order, steps one at a time), ``onExit`` runs after the
entrypoint with ``workflow.status``, and a task's ``when`` of the form
``A op B`` (``==``, ``!=``, ``>``, ``<``, ``>=``, ``<=``; numbers compared as numbers) is honoured.
Each container gets its own scratch directory in place of its ``/tmp`` emptyDir, and
``ARGO_PROGRESS_FILE`` like the Argo executor sets it.
Retries, mutexes, node selectors and resources are scheduling concerns and are not emulated;
metric values and display names are substituted and recorded, so a test can check they resolve.

Substitution is strict: an unresolved ``{{...}}`` is an error, as it is for Argo.
"""

from __future__ import annotations

import json
import operator
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# The one other expression the templates use (the scan's display name): first and last of a
# split list, as Argo v4.0.5 evaluates it (expr-lang's split, let, s[-1]).
_FIRST_TO_LAST = re.compile(
    r"let s=split\((?P<var>[\w.-]+),'(?P<sep>[^']*)'\);"
    r"len\(s\)==1\?s\[0\]:s\[0\]\+'(?P<mid>[^']*)'\+s\[-1\]"
)
# Tags Argo's validator insists on resolving (GlobalVarValidWorkflowVariablePrefix, v4.0.5);
# anything else unresolved in a resource manifest is left for the child.
_STRICT_PREFIXES = ("item.", "steps.", "inputs.", "pod.", "workflow.", "tasks.")
SCRATCH = "/tmp"


_STATES = {"Succeeded", "Failed", "Errored"}
# The comparisons a `when` may use (numbers, or strings for == and !=).
_COMPARISONS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


class EmulationError(AssertionError):
    """The YAML would not run: an unresolved variable, a failed step, a missing output."""


@dataclass
class NodeRecord:
    """One executed container node, for assertions after the run."""

    task_path: str
    template: str
    argv: list[str]
    display_name: str | None
    outputs: dict[str, str]
    defaulted_outputs: list[str]
    metrics: dict[str, str]
    progress: str | None


@dataclass
class Emulator:
    """Executes one workflow: ``Emulator(obj, workdir).run({"spec": ...})``."""

    workflow: dict[str, Any]
    workdir: Path
    # WorkflowTemplates a resource template may reference, by name.
    library: dict[str, dict[str, Any]] = field(default_factory=dict)
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    nodes: list[NodeRecord] = field(default_factory=list)
    children: list[dict[str, Any]] = field(default_factory=list)
    name: str = "wf"

    def __post_init__(self) -> None:
        self.templates = {t["name"]: t for t in self.workflow["spec"]["templates"]}

    # -- substitution -------------------------------------------------------------------
    @staticmethod
    def _render(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    def substitute(self, text: str, scope: dict[str, Any], *, lenient: bool = False) -> str:
        """Replace every tag; ``lenient``: leave what the parent's controller would leave."""

        def one(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("="):
                name = expr[1:].strip()
                if name in scope:
                    return self._render(scope[name])
                first_to_last = _FIRST_TO_LAST.fullmatch(name)
                if first_to_last and first_to_last["var"] in scope:
                    parts = str(scope[first_to_last["var"]]).split(first_to_last["sep"])
                    if len(parts) > 1:
                        return parts[0] + first_to_last["mid"] + parts[-1]
                    return parts[0]
                if lenient:
                    return match.group(0)
                raise EmulationError(f"unresolved expression {{{{{expr}}}}} in {text!r}")
            if lenient and not expr.startswith(_STRICT_PREFIXES) and expr not in scope:
                return match.group(0)
            if expr in scope:
                return self._render(scope[expr])
            head, _, key = expr.partition(".")
            item = scope.get("item") if head == "item" else None
            if isinstance(item, dict) and key in item:
                return self._render(item[key])
            raise EmulationError(f"unresolved {{{{{expr}}}}} in {text!r}")

        return _VAR.sub(one, text)

    def _deep_substitute(self, obj: Any, scope: dict[str, Any]) -> Any:
        if isinstance(obj, str):
            return self.substitute(obj, scope)
        if isinstance(obj, list):
            return [self._deep_substitute(v, scope) for v in obj]
        if isinstance(obj, dict):
            return {k: self._deep_substitute(v, scope) for k, v in obj.items()}
        return obj

    # -- execution ----------------------------------------------------------------------
    def run(self, arguments: dict[str, str] | None = None) -> dict[str, str]:
        """Run the entrypoint with the workflow's parameters (defaults, then ``arguments``)."""
        params = {
            p["name"]: p.get("value", "")
            for p in self.workflow["spec"].get("arguments", {}).get("parameters", [])
        }
        unknown = set(arguments or {}) - set(params)
        if unknown:
            raise EmulationError(f"arguments {sorted(unknown)} are not workflow parameters")
        params.update(arguments or {})
        self.global_scope = {f"workflow.parameters.{k}": v for k, v in params.items()}
        self.global_scope["workflow.name"] = self.name
        self.global_scope["workflow.uid"] = f"uid-{self.name}"
        # A failed run raises without its exit handler: the handler's work (stopping children
        # through the Kubernetes API) needs a cluster; tests/cluster checks it for real.
        out = self._run_template(self.workflow["spec"]["entrypoint"], {}, self.name)
        self._on_exit("Succeeded")
        return out

    def _on_exit(self, status: str) -> None:
        handler = self.workflow["spec"].get("onExit")
        if handler:
            self.global_scope["workflow.status"] = status
            self._run_template(handler, {}, f"{self.name}.onExit")

    def _run_template(self, name: str, inputs: dict[str, str], path: str) -> dict[str, str]:
        if name not in self.templates:
            raise EmulationError(f"{path}: template {name!r} does not exist")
        tmpl = self.templates[name]
        declared = {p["name"]: p for p in tmpl.get("inputs", {}).get("parameters", [])}
        missing = [k for k, p in declared.items() if k not in inputs and "value" not in p]
        extra = set(inputs) - set(declared)
        if missing or extra:
            raise EmulationError(
                f"{path}: template {name!r} inputs missing {missing}, undeclared {sorted(extra)}"
            )
        values = {k: inputs.get(k, p.get("value", "")) for k, p in declared.items()}
        scope = {**self.global_scope, **{f"inputs.parameters.{k}": v for k, v in values.items()}}
        if "dag" in tmpl:
            return self._run_dag(tmpl, scope, path)
        if "steps" in tmpl:
            return self._run_steps(tmpl, scope, path)
        if "container" in tmpl:
            return self._run_container(tmpl, scope, path)
        if "resource" in tmpl:
            return self._run_resource(tmpl, scope, path)
        raise EmulationError(
            f"{path}: template {name!r} is not a dag, steps, container or resource"
        )

    def _run_resource(
        self, tmpl: dict[str, Any], scope: dict[str, Any], path: str
    ) -> dict[str, str]:
        from tests.schemas import validate_object

        resource = tmpl["resource"]
        if resource.get("action") != "apply":
            raise EmulationError(f"{path}: only action apply is emulated")
        manifest = yaml.safe_load(self.substitute(resource["manifest"], scope, lenient=True))
        validate_object(manifest)
        if manifest.get("kind") != "Workflow" or "workflowTemplateRef" in manifest["spec"]:
            raise EmulationError(f"{path}: expected a Workflow with its spec inline")
        name = manifest["metadata"]["name"]
        if any(c["metadata"]["name"] == name for c in self.children):
            raise EmulationError(f"{path}: {name} applied twice in one build")
        args = {
            p["name"]: p.get("value", "")
            for p in manifest["spec"].get("arguments", {}).get("parameters", [])
        }
        child = Emulator(
            {"spec": manifest["spec"]},
            self.workdir / name,
            library=self.library,
            bin_dir=self.bin_dir,
            nodes=self.nodes,
            name=name,
        )
        # The success condition (status.phase == Succeeded) holds iff the child ran through.
        child.run(args)
        self.children.append(manifest)
        outputs = {}
        for p in tmpl.get("outputs", {}).get("parameters", []):
            if p["valueFrom"].get("jsonPath") != "{.metadata.name}":
                raise EmulationError(
                    f"{path}: output {p['name']}: only {{.metadata.name}} emulated"
                )
            outputs[p["name"]] = name
        return outputs

    @staticmethod
    def _order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_name = {t["name"]: t for t in tasks}
        deps: dict[str, set[str]] = {}
        for t in tasks:
            names = re.findall(r"[A-Za-z0-9_-]+(?=\.|\b)", t.get("depends", ""))
            result = {n for n in names if n in by_name}
            unknown = {n for n in names if n not in by_name and n not in _STATES}
            if unknown or t.get("dependencies"):
                raise EmulationError(f"task {t['name']}: unsupported depends {t.get('depends')!r}")
            deps[t["name"]] = result
        order: list[dict[str, Any]] = []
        done: set[str] = set()
        while len(order) < len(tasks):
            ready = [n for n in by_name if n not in done and deps[n] <= done]
            if not ready:
                raise EmulationError(f"dependency cycle among {sorted(set(by_name) - done)}")
            for n in ready:
                order.append(by_name[n])
                done.add(n)
        return order

    @staticmethod
    def _depends_hold(depends: str, skipped: set[str]) -> bool:
        """A run task Succeeded (failures raise); a skipped one counts for plain names only."""

        def state(m: re.Match[str]) -> str:
            name, want = m.group(1), m.group(2)
            if want is None:
                return "True"
            return str(want == "Succeeded" and name not in skipped)

        expr = re.sub(r"([A-Za-z0-9_-]+)(?:\.(Succeeded|Failed|Errored))?", state, depends)
        return bool(eval(expr.replace("||", " or ").replace("&&", " and "), {"__builtins__": {}}))

    def _run_dag(self, tmpl: dict[str, Any], scope: dict[str, Any], path: str) -> dict[str, str]:
        task_scope = dict(scope)
        skipped: set[str] = set()
        for task in self._order(tmpl["dag"]["tasks"]):
            tpath = f"{path}/{task['name']}"
            depends = task.get("depends")
            if depends and not self._depends_hold(depends, skipped):
                skipped.add(task["name"])  # omitted
                continue
            if "withParam" in task:
                raw = self.substitute(task["withParam"], task_scope)
                try:
                    items = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise EmulationError(f"{tpath}: withParam is not JSON: {raw[:200]!r}") from e
                if not isinstance(items, list):
                    raise EmulationError(f"{tpath}: withParam is not a JSON list: {raw[:200]!r}")
            else:
                items = [None]
            if ("when" in task and not self._when(task["when"], task_scope)) or not items:
                skipped.add(task["name"])
                continue
            results = []
            for i, item in enumerate(items):
                item_scope = dict(task_scope)
                if item is not None:
                    item_scope["item"] = item
                args = {
                    p["name"]: self.substitute(p.get("value", ""), item_scope)
                    for p in task.get("arguments", {}).get("parameters", [])
                }
                suffix = f"({i}:{self._render(item)})" if item is not None else ""
                results.append(self._run_template(task["template"], args, tpath + suffix))
            if "withParam" not in task:
                for k, v in results[0].items():
                    task_scope[f"tasks.{task['name']}.outputs.parameters.{k}"] = v
        return {}

    def _run_steps(self, tmpl: dict[str, Any], scope: dict[str, Any], path: str) -> dict[str, str]:
        """Step groups in order, the steps of a group one after another (no outputs passed)."""
        for i, group in enumerate(tmpl["steps"]):
            for step in group:
                if set(step) - {"name", "template", "arguments", "when", "continueOn"}:
                    raise EmulationError(f"{path}[{i}].{step['name']}: unsupported step fields")
                if "when" in step and not self._when(step["when"], scope):
                    continue
                args = {
                    p["name"]: self.substitute(p.get("value", ""), scope)
                    for p in step.get("arguments", {}).get("parameters", [])
                }
                self._run_template(step["template"], args, f"{path}[{i}].{step['name']}")
        return {}

    def _when(self, condition: str, scope: dict[str, Any]) -> bool:
        text = self.substitute(condition, scope)
        m = re.fullmatch(r"\s*(.*?)\s*(==|!=|>=|<=|>|<)\s*(.*?)\s*", text)
        if not m:
            raise EmulationError(f"unsupported when {condition!r}")
        left, op, right = m.groups()
        a: Any = left
        b: Any = right
        try:
            a, b = float(left), float(right)
        except ValueError:
            if op not in ("==", "!="):
                raise EmulationError(f"when {condition!r}: {op} needs numbers") from None
        return bool(_COMPARISONS[op](a, b))

    def _run_container(
        self, tmpl: dict[str, Any], scope: dict[str, Any], path: str
    ) -> dict[str, str]:
        container = tmpl["container"]
        scratch = self.workdir / f"node-{len(self.nodes):04d}"
        scratch.mkdir(parents=True)

        def local(raw: str) -> str:
            # The container's /tmp is its own emptyDir: a path the template itself writes
            # under /tmp maps to this node's scratch (substituted values are left alone).
            value = self.substitute(raw, scope)
            # (A child's values were substituted by its parent and may be test paths under /tmp:
            # only the scratch root and the outputs dir are the template's own.)
            if raw == SCRATCH or raw.startswith(SCRATCH + "/outputs"):
                return str(scratch) + value[len(SCRATCH) :]
            return value

        raw_argv = [*container.get("command", []), *container.get("args", [])]
        argv = [self.substitute(a, scope) for a in raw_argv]
        if not argv or "/" in argv[0]:
            raise EmulationError(f"{path}: command must be a program name, got {argv[:1]}")
        program = self.bin_dir / argv[0]
        env = {**os.environ}
        for var in container.get("env", []):
            env[var["name"]] = local(var["value"])
        progress_file = scratch / "progress"
        env["ARGO_PROGRESS_FILE"] = str(progress_file)
        proc = subprocess.run(
            [str(program), *(local(a) for a in raw_argv[1:])],
            env=env,
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise EmulationError(
                f"{path}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        outputs: dict[str, str] = {}
        defaulted: list[str] = []
        for p in tmpl.get("outputs", {}).get("parameters", []):
            value_from = p["valueFrom"]
            file = Path(local(value_from["path"]))
            if file.is_file():
                outputs[p["name"]] = file.read_text()
            elif "default" in value_from:
                outputs[p["name"]] = value_from["default"]
                defaulted.append(p["name"])
            else:
                raise EmulationError(f"{path}: output {p['name']} has no file {value_from['path']}")
        out_scope = {
            **scope,
            **{f"outputs.parameters.{k}": v for k, v in outputs.items()},
            "status": "Succeeded",
        }
        metrics = {
            m["name"]: self.substitute(
                m.get("counter", m.get("gauge", {})).get("value", ""), out_scope
            )
            for m in tmpl.get("metrics", {}).get("prometheus", [])
        }
        display = tmpl.get("annotations", {}).get("workflows.argoproj.io/display-name")
        self.nodes.append(
            NodeRecord(
                task_path=path,
                template=tmpl["name"],
                argv=argv,
                display_name=self.substitute(display, scope) if display else None,
                outputs=outputs,
                defaulted_outputs=defaulted,
                metrics=metrics,
                progress=progress_file.read_text() if progress_file.is_file() else None,
            )
        )
        return outputs
