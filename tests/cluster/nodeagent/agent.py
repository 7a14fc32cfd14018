"""The node agent (test infrastructure): scheduler + kubelet for the nodes it registers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fit
from .kube import STRATEGIC, ApiError, Client, Informer, Kubeconfig, now_rfc3339
from .kubeletapi import KubeletServer
from .nodes import NodeManager, NodeSpec
from .runtime import PodWorker, RuntimeConfig

log = logging.getLogger("nodeagent")

RETRY_UNSCHEDULABLE = 5.0


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is told on its command line."""

    kubeconfig: Kubeconfig
    workdir: Path
    argoexec: str
    venv_bin: str
    nodes: list[NodeSpec]
    extra_env: Mapping[str, str]
    host_ip: str = "127.0.0.1"
    kubelet_port: int = 0
    default_workdir: str = "/"


class Agent:
    """Registers nodes, binds pending pods to them and runs the pods bound there."""

    def __init__(self, cfg: AgentConfig, client: Client) -> None:
        self.cfg = cfg
        self.client = client
        self.stop = threading.Event()
        self.node_names = {n.name for n in cfg.nodes}
        self.workers: dict[str, PodWorker] = {}
        self.bound: dict[str, dict[str, Any]] = {}  # uid -> pod bound to one of our nodes
        self.assumed: dict[str, dict[str, Any]] = {}  # bound by us, not yet seen by the informer
        self.pending: dict[str, dict[str, Any]] = {}
        self._unschedulable_posted: dict[str, str] = {}
        self._lock = threading.Lock()
        self.sched_wake = threading.Event()
        self.kubelet_api: KubeletServer | None = None
        bin_dir = cfg.workdir / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        link = bin_dir / "argoexec"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(cfg.argoexec).resolve())
        self.runtime = RuntimeConfig(
            workdir=cfg.workdir,
            argoexec=str(link),
            bin_dir=bin_dir,
            venv_bin=cfg.venv_bin,
            api_host=cfg.kubeconfig.host,
            api_port=cfg.kubeconfig.port,
            host_ip=cfg.host_ip,
            extra_env=dict(cfg.extra_env),
            allocatable={"cpu": cfg.nodes[0].cpu, "memory": cfg.nodes[0].memory},
            default_workdir=cfg.default_workdir,
        )
        self.nodes = NodeManager(
            client=client,
            specs=cfg.nodes,
            host_ip=cfg.host_ip,
            kubelet_port=cfg.kubelet_port,
            stop=self.stop,
            on_tick=self._refresh_tokens,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Register the nodes, then start the informers, the scheduler and the heartbeats."""
        _ensure_termination_log_mountpoint()
        if self.cfg.kubelet_port:
            self.kubelet_api = KubeletServer(
                self.cfg.host_ip, self.cfg.kubelet_port, self.cfg.workdir / "kubelet-pki", self.find
            )
            self.kubelet_api.start()
        self.nodes.register_all()
        threads: list[threading.Thread] = []
        for name in sorted(self.node_names):
            threads.append(
                Informer(
                    self.client,
                    "/api/v1/pods",
                    self._on_bound_pod,
                    query={"fieldSelector": f"spec.nodeName={name}"},
                    name=f"pods@{name}",
                    stop=self.stop,
                )
            )
        threads.append(
            Informer(
                self.client,
                "/api/v1/pods",
                self._on_unbound_pod,
                query={
                    "fieldSelector": "spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed"
                },
                name="pods@unscheduled",
                stop=self.stop,
            )
        )
        threads.append(threading.Thread(target=self._schedule_loop, name="scheduler", daemon=True))
        threads.append(threading.Thread(target=self.nodes.run, name="heartbeat", daemon=True))
        for t in threads:
            t.start()
        log.info("node agent up: nodes %s", ", ".join(sorted(self.node_names)))

    def shutdown(self) -> None:
        """Kill every pod's processes (quickly) and stop all threads."""
        self.stop.set()
        self.sched_wake.set()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop_for_shutdown()
        for w in workers:
            w.join(timeout=15)
        if self.kubelet_api is not None:
            self.kubelet_api.stop()
        log.info("node agent stopped (%d pods were on its nodes)", len(workers))

    def find(self, namespace: str, name: str) -> PodWorker | None:
        """The worker of a pod on our nodes, by namespace and name."""
        with self._lock:
            workers = list(self.workers.values())
        return next((w for w in workers if (w.ns, w.pod_name) == (namespace, name)), None)

    def _refresh_tokens(self) -> None:
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.refresh_tokens()

    # -- kubelet side --------------------------------------------------------------------------

    def _on_bound_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            self.assumed.pop(uid, None)
            if kind == "DELETED":
                self.bound.pop(uid, None)
                worker = self.workers.pop(uid, None)
            else:
                self.bound[uid] = pod
                worker = self.workers.get(uid)
                if worker is None and not self.stop.is_set():
                    worker = PodWorker(self.client, self.runtime, pod, self._capacity_changed)
                    self.workers[uid] = worker
                    worker.start()
                    return
        if worker is None:
            return
        if kind == "DELETED":
            worker.remove()
            self._capacity_changed()
        else:
            worker.update(pod)
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                self._capacity_changed()

    def _capacity_changed(self) -> None:
        self.sched_wake.set()

    # -- scheduler side ------------------------------------------------------------------------

    def _on_unbound_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        scheduler = (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"
        with self._lock:
            if (
                kind == "DELETED"
                or scheduler != "default-scheduler"
                or pod["metadata"].get("deletionTimestamp")
            ):
                self.pending.pop(uid, None)
                self._unschedulable_posted.pop(uid, None)
                return
            if (pod.get("spec") or {}).get("nodeName"):
                self.pending.pop(uid, None)
                return
            self.pending[uid] = pod
        self.sched_wake.set()

    def _schedule_loop(self) -> None:
        while not self.stop.is_set():
            self.sched_wake.wait(RETRY_UNSCHEDULABLE if self.pending else 60.0)
            self.sched_wake.clear()
            if self.stop.is_set():
                return
            try:
                self.schedule_pending()
            except Exception as exc:
                log.warning("scheduling pass failed: %s", exc)
                self.stop.wait(1.0)

    def schedule_pending(self) -> None:
        """One pass: bind every pending pod that fits, mark the others unschedulable."""
        with self._lock:
            queue = sorted(
                self.pending.values(),
                key=lambda p: (
                    -int((p.get("spec") or {}).get("priority") or 0),
                    p["metadata"].get("creationTimestamp", ""),
                    p["metadata"]["name"],
                ),
            )
        if not queue:
            return
        nodes = [
            n
            for n in self.client.get("/api/v1/nodes")["items"]
            if n["metadata"]["name"] in self.node_names
        ]
        for pod in queue:
            with self._lock:
                usage = fit.usage_by_node(list(self.bound.values()) + list(self.assumed.values()))
            ignored = fit.unsupported(pod)
            if ignored:
                log.warning("pod %s: ignoring %s", _name(pod), ", ".join(ignored))
            decision = fit.choose_node(pod, nodes, usage)
            if decision.node:
                self._bind(pod, decision.node)
            else:
                self._mark_unschedulable(pod, decision.message)

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            self.client.create(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                with self._lock:
                    self.pending.pop(meta["uid"], None)
                return
            log.warning("binding %s to %s: %s", _name(pod), node, exc)
            return
        log.info("bound %s to %s", _name(pod), node)
        bound = dict(pod)
        bound["spec"] = dict(pod["spec"], nodeName=node)
        with self._lock:
            self.pending.pop(meta["uid"], None)
            self._unschedulable_posted.pop(meta["uid"], None)
            if meta["uid"] not in self.bound:
                self.assumed[meta["uid"]] = bound

    def _mark_unschedulable(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        if self._unschedulable_posted.get(meta["uid"]) == message:
            return
        body = {
            "metadata": {"uid": meta["uid"]},
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastProbeTime": None,
                        "lastTransitionTime": now_rfc3339(),
                    }
                ]
            },
        }
        try:
            self.client.patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                body,
                STRATEGIC,
            )
        except ApiError as exc:
            if exc.status == 404:  # deleted meanwhile
                with self._lock:
                    self.pending.pop(meta["uid"], None)
                return
            log.warning("marking %s unschedulable: %s", _name(pod), exc)
            return
        log.info("pod %s is unschedulable: %s", _name(pod), message)
        self._unschedulable_posted[meta["uid"]] = message


def _name(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _ensure_termination_log_mountpoint() -> None:
    """Containers bind-mount their own file at /dev/termination-log: the mount point must exist."""
    path = Path("/dev/termination-log")
    if not path.exists():
        try:
            path.touch()
        except OSError as exc:
            log.warning("cannot create %s (termination messages will be lost): %s", path, exc)
