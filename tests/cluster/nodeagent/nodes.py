"""Node objects of the node agent (test infrastructure), shaped like vcube's node pools.

``spot`` and ``on-demand`` copy the Karpenter NodePools in k8s/cluster/karpenter/ (their labels,
the spot taint); ``system`` copies eksctl's untainted managed node group. A node stays Ready
through a Lease in kube-node-lease renewed every 10 s and a status heartbeat every minute, the
signals the controller-manager's node lifecycle controller watches.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kube import ApiError, Client, now_rfc3339

log = logging.getLogger("nodeagent.nodes")

LEASE_SECONDS = 40
LEASE_RENEW = 10.0
STATUS_EVERY = 60.0
# The Kubernetes minor version k8s/cluster/eksctl pins; reported as the "kubelet" version.
KUBELET_VERSION = "v1.34.0-nodeagent"

POOLS: dict[str, dict[str, Any]] = {
    "spot": {
        "labels": {
            "karpenter.sh/capacity-type": "spot",
            "karpenter.sh/nodepool": "vcube-spot",
            "vcube.io/pool": "spot",
        },
        "taints": [{"key": "karpenter.sh/capacity-type", "value": "spot", "effect": "NoSchedule"}],
    },
    "on-demand": {
        "labels": {
            "karpenter.sh/capacity-type": "on-demand",
            "karpenter.sh/nodepool": "vcube-on-demand",
            "vcube.io/pool": "on-demand",
        },
        "taints": [],
    },
    "system": {"labels": {"vcube.io/pool": "system"}, "taints": []},
}


@dataclass(frozen=True)
class NodeSpec:
    """One node the agent runs: its name, pool, and allocatable resources."""

    name: str
    pool: str
    cpu: str = "4"
    memory: str = "16Gi"
    pods: str = "110"

    def labels(self) -> dict[str, str]:
        """Well-known labels plus the pool's."""
        return {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": "nodeagent",
            **POOLS[self.pool]["labels"],
        }

    def taints(self) -> list[dict[str, str]]:
        """The pool's taints."""
        return [dict(t) for t in POOLS[self.pool]["taints"]]

    def resources(self) -> dict[str, str]:
        """Capacity (= allocatable)."""
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": "100Gi",
        }


def parse_nodes(text: str, *, cpu: str, memory: str, pods: str) -> list[NodeSpec]:
    """Parse "spot,on-demand=2,system" into NodeSpecs named <pool>-<i>."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        pool, _, count = part.partition("=")
        if pool not in POOLS:
            raise ValueError(f"unknown node pool {pool!r} (known: {', '.join(POOLS)})")
        for i in range(int(count or 1)):
            out.append(NodeSpec(f"{pool}-{i}", pool, cpu=cpu, memory=memory, pods=pods))
    if not out:
        raise ValueError("no nodes")
    return out


@dataclass
class NodeManager:
    """Registers the nodes and keeps them Ready until stopped."""

    client: Client
    specs: list[NodeSpec]
    host_ip: str
    kubelet_port: int
    stop: threading.Event
    on_tick: Callable[[], None] = lambda: None
    _uids: dict[str, str] = field(default_factory=dict)
    _boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def register_all(self) -> None:
        """Create (or re-label) every node and post its first status."""
        for spec in self.specs:
            self._register(spec)

    def _register(self, spec: NodeSpec) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": spec.name, "labels": spec.labels()},
            "spec": {"taints": spec.taints()},
        }
        try:
            node = self.client.create("/api/v1/nodes", body)
            log.info("registered node %s (pool %s)", spec.name, spec.pool)
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = self.client.patch(
                f"/api/v1/nodes/{spec.name}",
                {
                    "metadata": {"labels": spec.labels()},
                    "spec": {"taints": spec.taints(), "unschedulable": None},
                },
            )
            log.info("node %s exists: labels and taints reset", spec.name)
        self._uids[spec.name] = node["metadata"]["uid"]
        self._post_status(spec)
        self._renew_lease(spec)

    def _post_status(self, spec: NodeSpec) -> None:
        now = now_rfc3339()
        conditions = [
            {
                "type": t,
                "status": "False",
                "reason": r,
                "message": m,
                "lastHeartbeatTime": now,
            }
            for t, r, m in (
                (
                    "MemoryPressure",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "vcube node agent is posting ready status",
                "lastHeartbeatTime": now,
            }
        )
        status = {
            "conditions": conditions,
            "capacity": spec.resources(),
            "allocatable": spec.resources(),
            # InternalIP only: the API server reaches the kubelet endpoint at the first address of
            # its preferred types, and Hostname (first by default) would not resolve.
            "addresses": [{"type": "InternalIP", "address": self.host_ip}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {
                "machineID": _machine_id(),
                "systemUUID": _machine_id(),
                "bootID": self._boot_id,
                "kernelVersion": platform.release(),
                "osImage": "vcube node agent (processes, no images)",
                "containerRuntimeVersion": "nodeagent://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        # A merge patch replaces lists: addresses and conditions are exactly these.
        self.client.patch(f"/api/v1/nodes/{spec.name}/status", {"status": status})

    def _renew_lease(self, spec: NodeSpec) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{spec.name}"
        renew = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        body: dict[str, Any] = {
            "spec": {
                "holderIdentity": spec.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": renew,
            }
        }
        try:
            self.client.patch(path, body)
        except ApiError as exc:
            if exc.status != 404:
                raise
            body.update(
                apiVersion="coordination.k8s.io/v1",
                kind="Lease",
                metadata={
                    "name": spec.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": spec.name,
                            "uid": self._uids[spec.name],
                        }
                    ],
                },
            )
            self.client.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body
            )

    def run(self) -> None:
        """Heartbeats until stopped; a node deleted meanwhile is registered again."""
        last_status = time.monotonic()
        while not self.stop.wait(LEASE_RENEW):
            status_due = time.monotonic() - last_status >= STATUS_EVERY
            for spec in self.specs:
                try:
                    if status_due:
                        self._post_status(spec)
                    self._renew_lease(spec)
                except ApiError as exc:
                    if exc.status == 404:
                        log.warning("node %s was deleted: registering it again", spec.name)
                        try:
                            self._register(spec)
                        except Exception as again:
                            log.warning("re-registering %s failed: %s", spec.name, again)
                    else:
                        log.warning("heartbeat of %s failed: %s", spec.name, exc)
                except Exception as exc:
                    log.warning("heartbeat of %s failed: %s", spec.name, exc)
            if status_due:
                last_status = time.monotonic()
            try:
                self.on_tick()
            except Exception:
                log.exception("periodic task failed")


def _machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip() or "nodeagent"
    except OSError:
        return os.uname().nodename
