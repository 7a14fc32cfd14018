"""The cluster tests' node agent (test infrastructure), without servers.

Scheduling decisions and pod-spec rules are pure functions; the process sandbox is exercised for
real (unshare, mounts, signals) with a client that records what would go to the API server.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.cluster.nodeagent import fit, kubeletapi, podspec
from tests.cluster.nodeagent.nodes import NodeSpec, parse_nodes
from tests.cluster.nodeagent.runtime import PodWorker, RuntimeConfig

SPOT_TOLERATION = {
    "key": "karpenter.sh/capacity-type",
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}


def node(spec: NodeSpec, *, ready: bool = True, extra_taints: list[dict[str, str]] | None = None):
    """A Node object as the agent registers it (after its first status)."""
    return {
        "metadata": {"name": spec.name, "labels": spec.labels()},
        "spec": {"taints": spec.taints() + (extra_taints or [])},
        "status": {
            "allocatable": spec.resources(),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    name: str = "p",
    *,
    selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
    cpu: str | None = None,
    affinity: dict[str, Any] | None = None,
    node_name: str | None = None,
    phase: str = "Pending",
):
    """A minimal pod."""
    container: dict[str, Any] = {"name": "main", "command": ["true"]}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    spec: dict[str, Any] = {"containers": [container]}
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = tolerations
    if affinity:
        spec["affinity"] = affinity
    if node_name:
        spec["nodeName"] = node_name
    return {
        "metadata": {"name": name, "namespace": "vcube"},
        "spec": spec,
        "status": {"phase": phase},
    }


NODES = parse_nodes("spot,on-demand,system", cpu="4", memory="16Gi", pods="110")
ALL = [node(n) for n in NODES]


# -- fit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Gi", Decimal(1024**3)),
        ("512Mi", Decimal(512 * 1024**2)),
        ("1k", Decimal(1000)),
        ("1e3", Decimal(1000)),
        ("100n", Decimal("1e-7")),
    ],
)
def test_parse_quantity(text: str, expected: Decimal) -> None:
    assert fit.parse_quantity(text) == expected


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="quantity"):
        fit.parse_quantity("lots")


def test_scan_pod_goes_to_spot() -> None:
    """vcube's scan template: selects capacity-type=spot and tolerates the spot taint."""
    p = pod(selector={"karpenter.sh/capacity-type": "spot"}, tolerations=[SPOT_TOLERATION])
    assert fit.choose_node(p, ALL, {}) == fit.Decision("spot-0")


def test_commit_pod_goes_to_on_demand() -> None:
    p = pod(selector={"karpenter.sh/capacity-type": "on-demand"})
    assert fit.choose_node(p, ALL, {}).node == "on-demand-0"


def test_spot_selector_without_toleration_is_unschedulable() -> None:
    p = pod(selector={"karpenter.sh/capacity-type": "spot"})
    decision = fit.choose_node(p, ALL, {})
    assert decision.node is None
    assert decision.message.startswith("0/3 nodes are available: ")
    assert "1 node(s) had untolerated taint {karpenter.sh/capacity-type: spot}" in decision.message
    assert "2 node(s) didn't match Pod's node affinity/selector" in decision.message


def test_pod_without_selector_never_lands_on_tainted_spot() -> None:
    for i in range(10):
        assert fit.choose_node(pod(f"p{i}"), ALL, {}).node in ("on-demand-0", "system-0")


def test_least_loaded_node_wins() -> None:
    usage = fit.usage_by_node([pod("busy", cpu="3", node_name="on-demand-0", phase="Running")])
    assert fit.choose_node(pod(cpu="500m"), ALL, usage).node == "system-0"


def test_terminated_pods_free_their_requests() -> None:
    busy = [pod("done", cpu="4", node_name="on-demand-0", phase="Succeeded")]
    p = pod(selector={"vcube.io/pool": "on-demand"}, cpu="4")
    assert fit.choose_node(p, ALL, fit.usage_by_node(busy)).node == "on-demand-0"


def test_insufficient_cpu() -> None:
    usage = fit.usage_by_node([pod("a", cpu="3500m", node_name="on-demand-0", phase="Running")])
    p = pod(selector={"vcube.io/pool": "on-demand"}, cpu="1")
    decision = fit.choose_node(p, ALL, usage)
    assert decision.node is None
    assert "1 Insufficient cpu" in decision.message


def test_pod_requests_count_the_largest_init_container() -> None:
    p = pod(cpu="100m")
    p["spec"]["initContainers"] = [{"name": "init", "resources": {"requests": {"cpu": "2"}}}]
    assert fit.pod_requests(p)["cpu"] == Decimal(2)
    p["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "3"}}  # request defaults to limit
    assert fit.pod_requests(p)["cpu"] == Decimal(3)


def test_not_ready_and_tainted_nodes_are_skipped() -> None:
    not_ready_taint = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
    nodes = [node(NODES[1], ready=False), node(NODES[2], extra_taints=[not_ready_taint])]
    decision = fit.choose_node(pod(), nodes, {})
    assert decision.node is None
    assert "1 node(s) were not ready" in decision.message
    assert "{node.kubernetes.io/not-ready}" in decision.message


def test_exists_toleration_without_key_tolerates_everything() -> None:
    p = pod(selector={"vcube.io/pool": "spot"}, tolerations=[{"operator": "Exists"}])
    assert fit.choose_node(p, ALL, {}).node == "spot-0"
    wrong_effect = dict(SPOT_TOLERATION, effect="NoExecute")
    assert (
        fit.choose_node(
            pod(selector={"vcube.io/pool": "spot"}, tolerations=[wrong_effect]), ALL, {}
        ).node
        is None
    )


def test_retry_on_another_host_affinity() -> None:
    """Argo's retryStrategy.affinity.nodeAntiAffinity: kubernetes.io/hostname NotIn [failed]."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/hostname",
                                "operator": "NotIn",
                                "values": ["spot-0"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    nodes = [node(n) for n in parse_nodes("spot=2", cpu="4", memory="16Gi", pods="110")]
    p = pod(selector={"vcube.io/pool": "spot"}, tolerations=[SPOT_TOLERATION], affinity=affinity)
    assert fit.choose_node(p, nodes, {}).node == "spot-1"
    assert fit.choose_node(p, nodes[:1], {}).node is None


def test_node_pools_copy_karpenter() -> None:
    spot = next(n for n in NODES if n.pool == "spot")
    assert spot.labels()["karpenter.sh/capacity-type"] == "spot"
    assert spot.taints() == [
        {"key": "karpenter.sh/capacity-type", "value": "spot", "effect": "NoSchedule"}
    ]
    with pytest.raises(ValueError, match="unknown node pool"):
        parse_nodes("gpu", cpu="1", memory="1Gi", pods="1")


# -- podspec --------------------------------------------------------------------------------------


def test_expand() -> None:
    env = {"A": "x", "B": "y"}
    assert podspec.expand("$(A)-$(B)", env) == "x-y"
    assert podspec.expand("$(C)", env) == "$(C)"
    assert podspec.expand("$$(A)", env) == "$(A)"
    assert podspec.expand("cost $5 $(A", env) == "cost $5 $(A"


class Resolver:
    """ConfigMaps from a dict."""

    def __init__(self, cms: dict[str, dict[str, Any]]) -> None:
        self.cms = cms

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cms.get(name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None


def test_container_env() -> None:
    p = {
        "metadata": {"name": "wf-1", "namespace": "vcube", "uid": "u1", "annotations": {"k": "v"}},
        "spec": {"nodeName": "spot-0"},
    }
    container = {
        "name": "main",
        "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "500m"}},
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "ANN", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['k']"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "x"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}},
            },
            {"name": "REF", "value": "$(POD)/$(BASE)"},
        ],
    }
    ctx = podspec.EnvContext(
        pod=p,
        resolver=Resolver({"c": {"data": {"x": "1"}}}),
        host_ip="127.0.0.1",
        allocatable={"cpu": "4"},
    )
    env = podspec.container_env(container, ctx, {"BASE": "b"})
    assert env["POD"] == "wf-1"
    assert env["ANN"] == "v"
    assert env["MEM"] == "1024"
    assert env["CPU"] == "1"  # rounded up to whole cores with the default divisor
    assert env["CPU_LIMIT"] == "4"  # no limit: the node's allocatable
    assert env["CM"] == "1"
    assert "OPT" not in env
    assert env["REF"] == "wf-1/b"
    container["env"].append(
        {"name": "BAD", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x"}}}
    )
    with pytest.raises(podspec.ConfigError, match='configmap "nope" not found'):
        podspec.container_env(container, ctx, {})


def test_container_argv() -> None:
    c = {"name": "wait", "command": ["argoexec", "wait"], "args": ["--x=$(A)"]}
    assert podspec.container_argv(c, {"A": "1"}, argoexec="/bin/argoexec") == [
        "/bin/argoexec",
        "wait",
        "--x=1",
    ]
    with pytest.raises(podspec.ConfigError, match="no command"):
        podspec.container_argv({"name": "x", "args": ["a"]}, {}, argoexec="/bin/argoexec")


def test_projected_service_account_volume() -> None:
    """What the ServiceAccount admission plugin adds: token, kube-root-ca.crt, namespace."""
    volume = {
        "name": "kube-api-access-x",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    asked = []

    def token(audience: str, seconds: int) -> str:
        asked.append((audience, seconds))
        return "TOKEN"

    files = podspec.volume_files(
        volume,
        pod={"metadata": {"namespace": "vcube"}},
        resolver=Resolver({"kube-root-ca.crt": {"data": {"ca.crt": "PEM"}}}),
        host_ip="127.0.0.1",
        allocatable={},
        token=token,
    )
    assert files is not None
    assert {f.path: f.content for f in files} == {
        "token": b"TOKEN",
        "ca.crt": b"PEM",
        "namespace": b"vcube",
    }
    assert asked == [("", 3607)]
    empty_dir = {"name": "e", "emptyDir": {}}
    kw: dict[str, Any] = {"pod": {}, "resolver": Resolver({}), "host_ip": "", "allocatable": {}}
    assert podspec.volume_files(empty_dir, token=token, **kw) is None


# -- the process sandbox ------------------------------------------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
    reason="the node agent's sandbox needs root, unshare and setpriv",
)


class RecordingClient:
    """Stands in for the API server: records status patches, hands out a fixed token."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.deletes: list[str] = []
        self.changed = threading.Event()

    def patch(self, path: str, body: dict[str, Any], content_type: str = "") -> dict[str, Any]:
        self.patches.append(body["status"])
        self.changed.set()
        return {}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path.endswith("/serviceaccounts/vcube/token"), path
        assert body["spec"]["boundObjectRef"]["kind"] == "Pod"
        return {"status": {"token": "TOKEN-" + body["spec"]["boundObjectRef"]["uid"]}}

    def delete(self, path: str, body: Any = None) -> None:
        self.deletes.append(path)

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        if path.endswith("/configmaps/kube-root-ca.crt"):
            return {"data": {"ca.crt": "PEM"}}
        raise AssertionError(path)

    def last(self) -> dict[str, Any]:
        return self.patches[-1]


def worker(tmp_path: Path, spec: dict[str, Any]) -> tuple[PodWorker, RecordingClient]:
    client = RecordingClient()
    cfg = RuntimeConfig(
        workdir=tmp_path,
        argoexec="/bin/false",
        bin_dir=tmp_path / "bin",
        venv_bin=str(Path(sys.executable).parent),
        api_host="127.0.0.1",
        api_port=6443,
        host_ip="127.0.0.1",
        extra_env={"FROM_AGENT": "yes"},
        allocatable={"cpu": "4", "memory": "16Gi"},
    )
    uid = str(uuid.uuid4())
    p = {
        "metadata": {"name": "pod-" + uid[:8], "namespace": "vcube", "uid": uid},
        "spec": {"nodeName": "spot-0", "serviceAccountName": "vcube", **spec},
    }
    w = PodWorker(client, cfg, p, lambda: None)  # type: ignore[arg-type]
    return w, client


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def processes_with_env(marker: str) -> list[int]:
    """PIDs whose environment holds marker (what a leftover container process would carry)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


@needs_root
def test_pod_runs_with_volumes_token_and_exit_codes(tmp_path: Path) -> None:
    mount = f"/var/run/nodeagent-test-{uuid.uuid4().hex[:8]}"
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    w, client = worker(
        tmp_path,
        {
            "volumes": [
                {"name": "shared", "emptyDir": {}},
                {
                    "name": "kube-api-access",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                        ]
                    },
                },
            ],
            "initContainers": [
                {
                    "name": "init",
                    "command": ["sh", "-c", f"echo $POD > {mount}/from-init"],
                    "env": [
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                    ],
                    "volumeMounts": [{"name": "shared", "mountPath": mount}],
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "command": ["sh", "-c"],
                    "args": [
                        f"cat {mount}/from-init {sa}/token {sa}/ca.crt;"
                        "echo $FROM_AGENT $KUBERNETES_SERVICE_PORT; echo $$$$; command -v vcube;"
                        "echo why > /dev/termination-log; exit 3"
                    ],
                    "volumeMounts": [
                        {"name": "shared", "mountPath": mount},
                        {"name": "kube-api-access", "mountPath": sa, "readOnly": True},
                    ],
                },
                {"name": "side", "command": ["true"]},
            ],
        },
    )
    w.start()
    wait_for(lambda: client.patches and client.last()["phase"] == "Failed")
    status = client.last()
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    assert init["state"]["terminated"]["reason"] == "Completed"
    main, side = status["containerStatuses"]
    assert main["state"]["terminated"]["exitCode"] == 3
    assert main["state"]["terminated"]["reason"] == "Error"
    assert main["state"]["terminated"]["message"] == "why\n"
    assert side["state"]["terminated"]["exitCode"] == 0
    assert client.patches[0]["phase"] == "Pending"
    assert "Running" in [p["phase"] for p in client.patches]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Initialized"] == "True"
    log = (w.log_dir / "main.log").read_text().split("\n")
    assert log[0] == w.pod_name  # written by the init container into the shared emptyDir
    assert log[1] == f"TOKEN-{w.uid}PEMyes 6443"  # bound token + CA at the standard path, env
    assert log[2] == "1"  # PID 1 of its own PID namespace ($$ is "$" after $(VAR) expansion)
    assert log[3] == str(Path(sys.executable).parent / "vcube")
    assert not Path(mount, "from-init").exists()  # the bind mount stayed in the container
    Path(mount).rmdir()


@needs_root
def test_a_volume_over_an_ancestor_of_the_image_hides_nothing(tmp_path: Path) -> None:
    """An emptyDir at /tmp must not hide a checkout under /tmp (the fresh-clone case)."""
    top = "/" + tmp_path.parts[1]  # /tmp for pytest's tmp_path: an ancestor of the agent's workdir
    (tmp_path / "marker").write_text("still here\n")
    witness = f"{top}/nodeagent-witness-{uuid.uuid4().hex[:8]}"
    stale = Path(f"/var/run/nodeagent-test-{uuid.uuid4().hex[:8]}")
    stale.touch()  # an empty file left as a mount point by an earlier container: now a directory
    w, client = worker(
        tmp_path,
        {
            "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "more", "emptyDir": {}}],
            "containers": [
                {
                    "name": "main",
                    "command": ["sh", "-c"],
                    "args": [
                        f"cat {tmp_path}/marker; touch {witness};"
                        "echo over > /dev/termination-log; exit 4"
                    ],
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": top},
                        {"name": "more", "mountPath": str(stale)},
                    ],
                }
            ],
        },
    )
    w.start()
    wait_for(lambda: client.patches and client.last()["phase"] == "Failed")
    (main,) = client.last()["containerStatuses"]
    assert main["state"]["terminated"]["exitCode"] == 4, (w.log_dir / "main.log").read_text()
    assert main["state"]["terminated"]["message"] == "over\n"
    assert (w.log_dir / "main.log").read_text() == "still here\n"
    assert not Path(witness).exists()  # written into the volume, not the host's /tmp
    assert list((w.pod_dir / "volumes" / "scratch").glob("nodeagent-witness-*"))
    assert stale.is_dir()
    stale.rmdir()


@needs_root
def test_deleted_pod_leaves_no_process(tmp_path: Path) -> None:
    marker = f"NODEAGENT_TEST_{uuid.uuid4().hex}"
    w, client = worker(
        tmp_path,
        {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    # ignores SIGTERM and leaves a grandchild in its own session and process group
                    "command": ["sh", "-c", "trap '' TERM; setsid sleep 300 & sleep 300; wait"],
                    "env": [{"name": marker, "value": "1"}],
                }
            ],
        },
    )
    w.start()
    wait_for(lambda: client.patches and client.last()["phase"] == "Running")
    wait_for(lambda: len(processes_with_env(marker)) >= 3)
    deleted = dict(w.pod)
    deleted["metadata"] = dict(
        w.pod["metadata"], deletionTimestamp="now", deletionGracePeriodSeconds=1
    )
    started = time.monotonic()
    w.update(deleted)
    wait_for(lambda: bool(client.deletes))
    assert time.monotonic() - started < 10
    assert processes_with_env(marker) == []
    status = client.last()
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    w.join(5)
    assert not w.is_alive()
    assert not w.pod_dir.exists()


@needs_root
def test_active_deadline(tmp_path: Path) -> None:
    w, client = worker(
        tmp_path,
        {
            "activeDeadlineSeconds": 1,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "command": ["sleep", "300"]}],
        },
    )
    w.start()
    wait_for(lambda: client.patches and client.last()["phase"] == "Failed")
    status = client.last()
    assert status["reason"] == "DeadlineExceeded"
    # sleep is PID 1 of its namespace with no handler: SIGTERM is ignored, SIGKILL after the grace
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] in (143, 137)
    w.stop_for_shutdown()


def _traps_term() -> dict[str, Any]:
    """A pod whose main container says `trapped`, then waits; SIGTERM makes it exit 42."""
    return {
        "containers": [
            {
                "name": "main",
                "command": ["sh", "-c", "trap 'exit 42' TERM; echo trapped; sleep 300 & wait"],
            }
        ]
    }


@needs_root
def test_sigterm_reaches_the_container(tmp_path: Path) -> None:
    w, client = worker(tmp_path, _traps_term())
    w.start()
    wait_for(lambda: client.patches and client.last()["phase"] == "Running")
    wait_for(lambda: (w.log_dir / "main.log").read_text() == "trapped\n")
    w.stop_for_shutdown()
    w.join(10)
    assert w.mains[0].exit_code == 42  # SIGTERM first: a SIGKILL would read 137


# -- the kubelet endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/var/run/argo/argoexec", "kill", "15", "1"], 15),
        (["/var/run/argo/argoexec", "kill", "9", "1"], 9),
        (["/bin/sh", "-c", "kill -15 1"], 15),
        (["/bin/sh", "-c", "kill -TERM 1"], 15),
        (["/bin/sh", "-c", "kill -15 1; rm -rf /"], None),
        (["/var/run/argo/argoexec", "kill", "15", "7"], None),
        (["ls"], None),
    ],
)
def test_kill_signal(command: list[str], expected: int | None) -> None:
    assert kubeletapi.kill_signal(command) == expected


@needs_root
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_exec_kill_and_logs_through_the_kubelet_endpoint(tmp_path: Path) -> None:
    """What the API server forwards: Argo's `argoexec kill 15 1` exec, and a log request."""
    w, _ = worker(tmp_path, _traps_term())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = kubeletapi.KubeletServer("127.0.0.1", port, tmp_path / "pki", lambda ns, name: w)
    server.start()
    try:
        w.start()
        wait_for(
            lambda: (
                (w.log_dir / "main.log").exists()
                and (w.log_dir / "main.log").read_text() == "trapped\n"
            )
        )
        http = urllib3.PoolManager(cert_reqs="CERT_NONE")
        base = f"https://127.0.0.1:{port}"
        logs = http.request("GET", f"{base}/containerLogs/vcube/{w.pod_name}/main?tailLines=5")
        assert (logs.status, logs.data) == (200, b"trapped\n")
        other = http.request("POST", f"{base}/exec/vcube/{w.pod_name}/main?command=ls&stdout=true")
        assert other.status == 501
        assert w.mains[0].running
        query = "command=%2Fvar%2Frun%2Fargo%2Fargoexec&command=kill&command=15&command=1"
        kill = http.request("POST", f"{base}/exec/vcube/{w.pod_name}/main?{query}")
        assert kill.status == 501
        assert b"delivered signal 15" in kill.data
        wait_for(lambda: w.mains[0].terminated)
        assert w.mains[0].exit_code == 42
        missing = http.request("GET", f"{base}/containerLogs/vcube/{w.pod_name}/nope")
        assert missing.status == 404
    finally:
        server.stop()
        w.stop_for_shutdown()
