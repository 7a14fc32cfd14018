"""Argo's per-step overhead on the real local controller, at several requeue times (issue 10).

    make cluster-up        # the local control plane (README "Run vcube on a real local Argo")
    .venv/bin/python -m bench.argo_overhead [--requeue 10s,5s,2s,1s] [--reps 3] [--chain 4]
        [--fanout 6] [--out bench/results/argo-overhead.json]
    .venv/bin/python -m bench.argo_overhead --report   # print the README section from the JSON

Needs a running local cluster (`make cluster-up` in this checkout): the script does not start
one. For each repetition it restarts the cluster's workflow-controller once per requeue value
(`DEFAULT_REQUEUE_TIME` on top of the chart's `controller.extraEnv`; order rotated between
repetitions, so load from other processes hits every setting alike), runs a warm-up Workflow,
then two measured Workflows of trivial pods (`sh -c true`):

- `chain`: a DAG of N tasks, each depending on the one before (per-step latency);
- `fanout`: a DAG of K independent tasks (one controller pass creates them all).

It watches pods and Workflows through the API and stamps each transition with this machine's
clock when the watch delivers it (the objects' own timestamps have 1 s resolution). At the end
the controller is restarted with exactly the chart's env again. Per pod step: ready -> pod
created (the controller creating it; ready = submit, or the previous pod Succeeded), created ->
Running (the node agent starting argoexec init + containers: on EKS, pod start-up instead), Running
-> pod Succeeded, pod Succeeded -> node Succeeded (the controller noticing: the requeue), and per
Workflow: submit -> Succeeded, last node Succeeded -> Workflow Succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from bench.common import RESULTS, code_version, dump, log, machine
from tests.cluster import controlplane

NAMESPACE = "vcube"
GROUP, VERSION = "argoproj.io", "v1alpha1"
WF_LABEL = "workflows.argoproj.io/workflow"
NODE_ID = "workflows.argoproj.io/node-id"
OUT = RESULTS / "argo-overhead.json"
RUN1 = RESULTS / "argo-overhead-run1.json"  # an earlier run (no child workload), lower load
POLL5 = RESULTS / "argo-overhead-resource-poll-5s.json"  # --executor-env ...=5s (Argo's default)
TIMEOUT_S = 600.0

# Per pod step (seconds between two observed transitions).
STEP_METRICS = ("create", "start", "run", "notice")
STEP_LABELS = {
    "create": "ready -> pod created (controller)",
    "start": "pod created -> Running (node agent)",
    "run": "Running -> pod Succeeded",
    "notice": "pod Succeeded -> node Succeeded (controller)",
}


CHILD_METRICS = {
    "child_total": "child created -> child Succeeded (its one pod)",
    "resource_pod_start": "resource pod created -> Running",
    "child_created": "resource pod Running -> child created (argoexec apply)",
    "child_first_pod": "child created -> its pod created",
    "child_done_to_resource_pod_done": "child Succeeded -> resource pod Succeeded",
    "parent_notice": "resource pod Succeeded -> parent Succeeded",
}


class Recorder:
    """First time (this clock) each pod / Workflow / node reached each phase, from API watches."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.lock = threading.Lock()
        # pod name -> {"created"|"Running"|"Succeeded"|...: t, "wf": name, "node": id}
        self.pods: dict[str, dict[str, Any]] = defaultdict(dict)
        # wf name -> {"phase:<P>": t, "node:<id>:<P>": t}
        self.wfs: dict[str, dict[str, float]] = defaultdict(dict)
        self.last: dict[str, dict[str, Any]] = {}  # wf name -> last object seen
        self.errors: list[str] = []
        self._stop = threading.Event()

    def _first(self, d: dict[str, Any], key: str, t: float) -> None:
        d.setdefault(key, t)

    def _on_pod(self, obj: dict[str, Any], t: float) -> None:
        meta = obj.get("metadata", {})
        wf = (meta.get("labels") or {}).get(WF_LABEL)
        if not wf:
            return
        with self.lock:
            rec = self.pods[meta["name"]]
            rec.setdefault("wf", wf)
            rec.setdefault("node", (meta.get("annotations") or {}).get(NODE_ID))
            self._first(rec, "created", t)
            phase = (obj.get("status") or {}).get("phase")
            if phase:
                self._first(rec, phase, t)

    def _on_wf(self, obj: dict[str, Any], t: float) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        with self.lock:
            rec = self.wfs[name]
            self._first(rec, "seen", t)
            if status.get("phase"):
                self._first(rec, f"phase:{status['phase']}", t)
            for node_id, node in (status.get("nodes") or {}).items():
                self._first(rec, f"node:{node_id}:seen", t)
                if node.get("phase"):
                    self._first(rec, f"node:{node_id}:{node['phase']}", t)
            self.last[name] = obj

    def _watch(
        self, lister: Callable[..., Any], on: Callable[[dict[str, Any], float], None]
    ) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(lister, timeout_seconds=60, _request_timeout=90):
                    t = time.time()
                    if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        raw = ev["raw_object"]
                        on(raw, t)
                    if self._stop.is_set():
                        w.stop()
                        break
            except Exception as e:  # a dropped watch is re-opened; a gap shows as a late time
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.2)

    def start(self) -> None:
        pods = self._pods_lister
        wfs = self._wfs_lister
        for lister, on in ((pods, self._on_pod), (wfs, self._on_wf)):
            threading.Thread(target=self._watch, args=(lister, on), daemon=True).start()

    def _pods_lister(self, **kw: Any) -> Any:
        return self.core.list_namespaced_pod(NAMESPACE, label_selector=WF_LABEL, **kw)

    def _wfs_lister(self, **kw: Any) -> Any:
        return self.custom.list_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "workflows", **kw
        )

    def stop(self) -> None:
        self._stop.set()


def workflow(kind: str, n: int, tag: str) -> dict[str, Any]:
    """A Workflow of `n` trivial pods: `chain` (each after the previous) or `fanout` (parallel)."""
    tasks = []
    for i in range(n):
        task: dict[str, Any] = {"name": f"t{i}", "template": "noop"}
        if kind == "chain" and i:
            task["depends"] = f"t{i - 1}"
        tasks.append(task)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {
            "generateName": f"overhead-{kind}-",
            "namespace": NAMESPACE,
            "labels": {"vcube.io/bench": "argo-overhead", "vcube.io/bench-setting": tag},
        },
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "vcube",
            "templates": [
                {"name": "main", "dag": {"tasks": tasks}},
                {
                    "name": "noop",
                    "container": {"image": "vcube-worker", "command": ["sh", "-c", "true"]},
                },
            ],
        },
    }


def parent_child(tag: str) -> dict[str, Any]:
    """A parent whose one step applies a child Workflow of one trivial pod and waits for it to
    succeed: vcube-build's `group` step (resource template, ServiceAccount vcube-launcher)."""
    child = workflow("fanout", 1, tag)
    child["metadata"] = {
        "name": "{{workflow.name}}-c",
        "namespace": NAMESPACE,
        "labels": {**child["metadata"]["labels"], "vcube.io/parent-workflow": "{{workflow.name}}"},
    }
    body = workflow("fanout", 1, tag)
    body["metadata"]["generateName"] = "overhead-parent-"
    body["spec"]["templates"] = [
        {"name": "main", "dag": {"tasks": [{"name": "child", "template": "child"}]}},
        {
            "name": "child",
            "serviceAccountName": "vcube-launcher",
            "resource": {
                "action": "apply",
                "successCondition": "status.phase == Succeeded",
                "failureCondition": "status.phase in (Failed, Error)",
                "manifest": json.dumps(child),
            },
        },
    ]
    return body


def analyse_child(rec: Recorder, name: str, t_submit: float) -> dict[str, Any]:
    """Parent -> child latencies: the parent's resource pod, the child and its one pod."""
    parent = analyse(rec, name, t_submit)
    child = analyse(rec, f"{name}-c", t_submit)
    with rec.lock:
        pw, cw = dict(rec.wfs[name]), dict(rec.wfs[f"{name}-c"])
        pods = {r["wf"]: dict(r) for r in rec.pods.values() if r.get("wf") in (name, f"{name}-c")}
    res_pod, child_pod = pods[name], pods[f"{name}-c"]
    return {
        "workflow": name,
        "pods": 2,
        "total": parent["total"],
        "child_total": cw["phase:Succeeded"] - cw["seen"],
        "child_created": cw["seen"] - res_pod["Running"],
        "child_first_pod": child_pod["created"] - cw["seen"],
        "child_done_to_resource_pod_done": res_pod["Succeeded"] - cw["phase:Succeeded"],
        "resource_pod_start": res_pod["Running"] - res_pod["created"],
        "parent_notice": pw["phase:Succeeded"] - res_pod["Succeeded"],
        "steps": parent["steps"] + child["steps"],
        "first_pod_created": parent["first_pod_created"],
        "finish": parent["finish"],
    }


def run_one(rec: Recorder, body: dict[str, Any]) -> tuple[str, float]:
    """Submit `body` and wait for it to succeed; returns its name and the submit time."""
    t_submit = time.time()
    created = cast(
        "dict[str, Any]",
        rec.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "workflows", body),
    )
    name = str(created["metadata"]["name"])
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        with rec.lock:
            phases = {k for k in rec.wfs.get(name, {}) if k.startswith("phase:")}
        if "phase:Succeeded" in phases:
            return name, t_submit
        if phases & {"phase:Failed", "phase:Error"}:
            msg = (rec.last.get(name, {}).get("status") or {}).get("message")
            raise RuntimeError(f"workflow {name} did not succeed: {phases} {msg}")
        time.sleep(0.05)
    raise RuntimeError(f"workflow {name} not Succeeded after {TIMEOUT_S:.0f} s")


def analyse(rec: Recorder, name: str, t_submit: float) -> dict[str, Any]:
    """Per-step and per-Workflow latencies of one finished Workflow, from the recorded times."""
    with rec.lock:
        w = dict(rec.wfs[name])
        final = rec.last[name]
        pods = {p: dict(r) for p, r in rec.pods.items() if r.get("wf") == name}
    nodes = final["status"]["nodes"]
    by_node = {r["node"]: r for r in pods.values() if r.get("node")}
    pod_nodes = [nid for nid, n in nodes.items() if n["type"] == "Pod"]
    missing = [nid for nid in pod_nodes if nid not in by_node]
    if missing:
        raise RuntimeError(f"{name}: no pod seen for nodes {missing}")
    # A pod node's predecessors: the pod nodes that list it as a child (DAG dependencies).
    preds: dict[str, list[str]] = defaultdict(list)
    for nid in pod_nodes:
        for child in nodes[nid].get("children") or []:
            preds[child].append(nid)
    steps = []
    for nid in sorted(pod_nodes, key=lambda i: by_node[i]["created"]):
        p = by_node[nid]
        ready = max((by_node[q]["Succeeded"] for q in preds[nid]), default=t_submit)
        steps.append(
            {
                "node": nodes[nid]["displayName"],
                "create": p["created"] - ready,
                "start": p["Running"] - p["created"],
                "run": p["Succeeded"] - p["Running"],
                "notice": w[f"node:{nid}:Succeeded"] - p["Succeeded"],
            }
        )
    last_node = max(w[f"node:{nid}:Succeeded"] for nid in pod_nodes)
    return {
        "workflow": name,
        "pods": len(pod_nodes),
        "total": w["phase:Succeeded"] - t_submit,
        "first_pod_created": min(p["created"] for p in by_node.values()) - t_submit,
        "finish": w["phase:Succeeded"] - last_node,
        "steps": steps,
    }


def _p50(xs: list[float]) -> float:
    return float(statistics.median(xs))


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """p50 per requeue value and workload: each step metric, total, total per pod (chain)."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[(r["requeue"], r["kind"])].append(r)
    for (rq, kind), rs in groups.items():
        s: dict[str, float] = {"runs": len(rs)}
        for m in STEP_METRICS:
            s[m] = _p50([st[m] for r in rs for st in r["steps"]])
        s["total"] = _p50([r["total"] for r in rs])
        s["per_step"] = _p50([r["total"] / r["pods"] for r in rs])
        s["first_pod_created"] = _p50([r["first_pod_created"] for r in rs])
        s["finish"] = _p50([r["finish"] for r in rs])
        # Between two chained steps: previous pod Succeeded -> next pod created.
        if kind == "chain":
            s["handoff"] = _p50([st["create"] for r in rs for st in r["steps"][1:]])
        if kind == "child":
            for key in CHILD_METRICS:
                s[key] = _p50([r[key] for r in rs])
        out[rq][kind] = s
    return dict(out)


def set_executor_env(layout: controlplane.Layout, env: dict[str, str] | None) -> str:
    """Put `env` over the executor env of the controller's ConfigMap (what the chart's
    `executor.env` renders); returns the previous `config` to restore. The controller is
    restarted for every setting anyway, so it reads the new ConfigMap."""
    import yaml

    kc = controlplane.Kubectl(layout)
    cm = kc.json("get", "configmap", controlplane.CONTROLLER_CONFIGMAP, "-n", "argo")
    before = str(cm["data"]["config"])
    if env:
        cfg = yaml.safe_load(before)
        executor = cfg.setdefault("executor", {})
        kept = [e for e in executor.get("env", []) if e["name"] not in env]
        executor["env"] = kept + [{"name": k, "value": v} for k, v in env.items()]
        restore_configmap(layout, yaml.safe_dump(cfg, sort_keys=False))
    return before


def restore_configmap(layout: controlplane.Layout, config: str) -> None:
    controlplane.kubectl(
        layout, "apply", "-f", "-", stdin=json.dumps(controlplane.controller_configmap(config))
    )


def measure(
    requeues: list[str], reps: int, chain: int, fanout: int, executor_env: dict[str, str]
) -> dict[str, Any]:
    from kubernetes import config

    layout = controlplane.Layout(controlplane.STATE)
    if not controlplane.healthy(layout):
        raise SystemExit("error: no healthy local cluster in build/cluster: run `make cluster-up`")
    api = config.new_client_from_config(config_file=str(layout.kubeconfig))
    rec = Recorder(api)
    rec.start()
    chart_env = controlplane.controller_env(controlplane.chart_values())
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mach = machine()
    runs: list[dict[str, Any]] = []
    loads: list[float] = []
    config_before = set_executor_env(layout, executor_env)
    try:
        for rep in range(reps):
            order = requeues[rep % len(requeues) :] + requeues[: rep % len(requeues)]
            for rq in order:
                t0 = time.monotonic()
                controlplane.restart_controller(layout, {"DEFAULT_REQUEUE_TIME": rq})
                run_one(rec, workflow("fanout", 1, f"warmup-{rq}"))
                log(
                    f"rep {rep + 1}/{reps} requeue {rq}: controller up + warm-up "
                    f"{time.monotonic() - t0:.1f} s"
                )
                for kind, n in (("chain", chain), ("fanout", fanout), ("child", 1)):
                    body = parent_child(rq) if kind == "child" else workflow(kind, n, rq)
                    name, t_submit = run_one(rec, body)
                    time.sleep(0.5)  # let the last watch events arrive
                    an = analyse_child if kind == "child" else analyse
                    r = {"requeue": rq, "rep": rep, "kind": kind, **an(rec, name, t_submit)}
                    runs.append(r)
                    loads.append(os.getloadavg()[0])
                    log(
                        f"  {kind} x{n}: total {r['total']:.1f} s, notice p50 "
                        f"{_p50([s['notice'] for s in r['steps']]):.2f} s"
                    )
    finally:
        rec.stop()
        if executor_env:
            restore_configmap(layout, config_before)
        controlplane.restart_controller(layout, None)  # back to what the chart deploys
    return {
        "command": "python -m bench.argo_overhead " + " ".join(sys.argv[1:]),
        "code": code_version(),
        "started_utc": started,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {**mach, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "load_avg_1m_runs": {"min": min(loads), "median": _p50(loads), "max": max(loads)},
        "argo_controller": "workflow-controller v4.0.5 (built from source, tests/cluster)",
        "chart_controller_env": chart_env,
        "chart_executor_env": controlplane.chart_values().get("executor", {}).get("env", []),
        "executor_env_override": executor_env,
        "requeue_values": requeues,
        "reps": reps,
        "chain": chain,
        "fanout": fanout,
        "watch_errors": rec.errors,
        "runs": runs,
        "summary": summarize(runs),
    }


def _rows(res: dict[str, Any]) -> Iterator[str]:
    rqs = res["requeue_values"]
    base = rqs[0]
    summ = res["summary"]
    head = " | ".join(f"{rq}" for rq in rqs)
    ratio = " | ".join(f"{rq} / {base}" for rq in rqs[1:])
    yield f"| workload | figure (p50, s) | {head} | {ratio} |"
    yield "|---|---|" + "---:|" * (2 * len(rqs) - 1)
    figures: list[tuple[str, str, str]] = [
        ("chain", "total", f"submit -> Workflow Succeeded ({res['chain']} steps)"),
        ("chain", "per_step", "per step (total / steps)"),
        ("chain", "first_pod_created", "submit -> first pod created"),
        ("chain", "handoff", "pod Succeeded -> next step's pod created"),
    ]
    figures += [("chain", m, STEP_LABELS[m]) for m in ("start", "run", "notice")]
    figures += [
        ("chain", "finish", "last node Succeeded -> Workflow Succeeded"),
        ("fanout", "total", f"submit -> Workflow Succeeded ({res['fanout']} parallel pods)"),
        ("fanout", "first_pod_created", "submit -> first pod created"),
        ("fanout", "start", STEP_LABELS["start"]),
        ("fanout", "notice", STEP_LABELS["notice"]),
    ]
    if all("child" in summ[rq] for rq in rqs):
        figures.append(("child", "total", "submit -> parent Succeeded (parent -> child -> 1 pod)"))
        figures += [("child", key, label) for key, label in CHILD_METRICS.items()]
    for kind, key, label in figures:
        vals = [summ[rq][kind][key] for rq in rqs]
        cells = " | ".join(f"{v:.2f}" for v in vals)
        ratios = " | ".join(f"{v / vals[0]:.2f}" if vals[0] > 0.05 else "-" for v in vals[1:])
        yield f"| {kind} | {label} | {cells} | {ratios} |"


def _executor_env(res: dict[str, Any]) -> str:
    env = {e["name"]: e["value"] for e in res.get("chart_executor_env", [])}
    over = res.get("executor_env_override") or {}
    text = str({**env, **over})
    return text + (f", overriding the chart's {env}" if over else " as the chart deploys it")


def section(results: Path) -> list[str]:
    """The "Argo controller overhead" section of bench/results/README.md (empty if not run)."""
    lines = render(results / OUT.name)
    run1 = results / RUN1.name
    if lines and run1.exists():
        res = json.loads(run1.read_text())
        per = ", ".join(
            f"{rq} {res['summary'][rq]['chain']['per_step']:.2f} s" for rq in res["requeue_values"]
        )
        ld = res["load_avg_1m_runs"]
        lines += [
            f"An earlier run of the same (`{run1.name}`, code {res['code']}, without the child "
            f"workload; load {ld['min']:.1f}-{ld['max']:.1f}): chain per step {per}.",
            "",
        ]
    poll5 = results / POLL5.name
    if lines and poll5.exists():
        res = json.loads(poll5.read_text())
        child = res["summary"][res["requeue_values"][0]]["child"]
        main = json.loads((results / OUT.name).read_text())
        ours = main["summary"][res["requeue_values"][0]]["child"]
        key = "child_done_to_resource_pod_done"
        lines += [
            f"With Argo's default executor setting instead (`{res['command']}`, "
            f"`{poll5.name}`, code {res['code']}): {CHILD_METRICS[key]} {child[key]:.2f} s "
            f"(p50 of {int(child['runs'])}) against {ours[key]:.2f} s above; submit -> parent "
            f"Succeeded {child['total']:.2f} s against {ours['total']:.2f} s.",
            "",
        ]
    return lines


def render(path: Path) -> list[str]:
    """The section from one results file of this benchmark."""
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    m, ld = res["machine"], res["load_avg_1m_runs"]
    return [
        "## Argo controller overhead (issue 10)",
        "",
        f"`{res['command']}` on the local cluster (`make cluster-up`; `bench/argo_overhead.py`, "
        f"code {res['code']}, {res['started_utc']} to {res['finished_utc']}), raw numbers in "
        f"`{path.name}`. The real {res['argo_controller']} against a real kube-apiserver; pods "
        "run by the node agent (tests/cluster/nodeagent: argoexec init/wait + `sh -c true` as "
        "local processes, no images). For each requeue value (`DEFAULT_REQUEUE_TIME` over the "
        f"chart's controller env {res['chart_controller_env']}; executor env "
        f"{_executor_env(res)}) the controller is "
        f"restarted, warmed up with one pod, then runs a chain of {res['chain']} DAG tasks, a "
        f"fan-out of {res['fanout']} and a parent whose resource step applies a child Workflow "
        "of one pod and waits for it (vcube-build's `group` step); "
        f"{res['reps']} repetitions, settings rotated; p50 over "
        "runs (steps: over every step of every run). Times are this machine's clock when the "
        "API watch delivered each change. Load: 1-minute average "
        f"{m['load_avg_1m_at_start']} at the start, {ld['min']:.1f}-{ld['max']:.1f} during the "
        "runs (2 shared cores).",
        "",
        *_rows(res),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.argo_overhead", description=__doc__)
    ap.add_argument("--requeue", default="10s,5s,2s,1s", help="DEFAULT_REQUEUE_TIME values")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chain", type=int, default=4, help="steps in the chained DAG")
    ap.add_argument("--fanout", type=int, default=6, help="parallel pods in the fan-out")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--executor-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an executor env var of the chart for this run (e.g. "
        "RESOURCE_STATE_CHECK_INTERVAL=5s, Argo's default)",
    )
    ap.add_argument("--report", action="store_true", help="print the section from --out")
    args = ap.parse_args(argv)
    if not args.report:
        exe = dict(kv.split("=", 1) for kv in args.executor_env)
        res = measure(args.requeue.split(","), args.reps, args.chain, args.fanout, exe)
        dump(args.out, res)
        log(f"wrote {args.out}")
    print("\n".join(render(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
