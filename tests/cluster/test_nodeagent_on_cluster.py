"""The node agent on the real API server and the real Argo controller (issue 9, part 2).

Five small Workflows run at once (submitted when the module starts, so the whole file takes about
as long as the slowest): a trivial one, one whose step always exits 3 (retried once, then the
Workflow fails), one that passes output parameters from a file on an emptyDir and from the
container's own file system, one whose first attempt is deleted mid-run like a pod on a lost
spot node (Argo retries it; no process of the deleted pod may survive), and one stopped with
`shutdown: Stop` while its step runs (the controller's pods/exec kill reaches the node agent's
kubelet endpoint through the API server). Plus a pod no node fits.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.argo_helpers import wait_for
from tests.cluster.conftest import Cluster
from tests.cluster.nodeagent.kube import ApiError, Client, load_kubeconfig

NS = "vcube"
LABEL = "vcube.io/test"
IMAGE = "nodeagent.invalid/ignored:never-pulled"  # the agent ignores images
RUN = uuid.uuid4().hex[:8]
DONE = ("Succeeded", "Failed", "Error")
POLL = 0.5  # seconds between checks while waiting (argo_helpers.wait_for)
PRODUCED = "{{steps.produce.outputs.parameters"
SPOT = {
    "nodeSelector": {"karpenter.sh/capacity-type": "spot"},
    "tolerations": [
        {
            "key": "karpenter.sh/capacity-type",
            "operator": "Equal",
            "value": "spot",
            "effect": "NoSchedule",
        }
    ],
}


def workflow(name: str, templates: list[dict[str, Any]], run: str) -> dict[str, Any]:
    """A Workflow in the vcube namespace, run as the vcube ServiceAccount."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": f"nodeagent-{name}-", "labels": {LABEL: run}},
        "spec": {"serviceAccountName": "vcube", "entrypoint": "main", "templates": templates},
    }


def container(command: list[str], **extra: Any) -> dict[str, Any]:
    """A container template body; the image is never pulled."""
    return {"image": IMAGE, "command": command, **extra}


def workflows(base_marker: str) -> dict[str, dict[str, Any]]:
    """The Workflows under test."""
    return {
        "trivial": workflow("trivial", [{"name": "main", "container": container(["true"])}], RUN),
        "exit3": workflow(
            "exit3",
            [
                {
                    "name": "main",
                    "retryStrategy": {"limit": "1", "retryPolicy": "Always"},
                    "container": container(["sh", "-c", "exit 3"]),
                }
            ],
            RUN,
        ),
        "outputs": workflow(
            "outputs",
            [
                {
                    "name": "main",
                    "steps": [
                        [{"name": "produce", "template": "produce"}],
                        [
                            {
                                "name": "consume",
                                "template": "consume",
                                "arguments": {
                                    "parameters": [
                                        {"name": "a", "value": f"{PRODUCED}.on-volume}}}}"},
                                        {"name": "b", "value": f"{PRODUCED}.on-rootfs}}}}"},
                                    ]
                                },
                            }
                        ],
                    ],
                },
                {
                    "name": "produce",
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "container": container(
                        ["sh", "-c"],
                        args=[
                            f"mkdir -p /tmp/out {base_marker}"
                            " && printf %s vol-$ARGO_NODE_ID > /tmp/out/a"
                            f" && echo rootfs-ok > {base_marker}/b"
                        ],
                        volumeMounts=[{"name": "scratch", "mountPath": "/tmp"}],
                    ),
                    "outputs": {
                        "parameters": [
                            {"name": "on-volume", "valueFrom": {"path": "/tmp/out/a"}},
                            {"name": "on-rootfs", "valueFrom": {"path": f"{base_marker}/b"}},
                        ]
                    },
                },
                {
                    "name": "consume",
                    "inputs": {"parameters": [{"name": "a"}, {"name": "b"}]},
                    "container": container(
                        [
                            "sh",
                            "-c",
                            'case "$A" in vol-*) test "$B" = rootfs-ok;; *) exit 1;; esac',
                        ],
                        env=[
                            {"name": "A", "value": "{{inputs.parameters.a}}"},
                            {"name": "B", "value": "{{inputs.parameters.b}}"},
                        ],
                    ),
                },
            ],
            RUN,
        ),
        "lost": workflow(
            "lost",
            [
                {
                    "name": "main",
                    "retryStrategy": {"limit": "2", "retryPolicy": "Always"},
                    # the first attempt waits to be deleted; the retry succeeds at once
                    "container": container(
                        ["sh", "-c", "test {{retries}} -ge 1 || exec sleep 600"]
                    ),
                    **SPOT,
                }
            ],
            RUN,
        ),
        "stopped": workflow(
            "stopped",
            [{"name": "main", "container": container(["sh", "-c", "exec sleep 600"]), **SPOT}],
            RUN,
        ),
    }


@pytest.fixture(scope="module")
def api(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """A client on the test cluster (admin)."""
    return Client(load_kubeconfig(cluster.kubeconfig, tmp_path_factory.mktemp("creds")))


@pytest.fixture(scope="module")
def submitted(api: Client) -> Iterator[dict[str, str]]:
    """Submit every Workflow at once; name by key. Deleted (with their pods) afterwards."""
    marker = f"/var/tmp/nodeagent-test-{RUN}"
    names = {}
    for key, body in workflows(marker).items():
        created = api.create(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows", body)
        names[key] = created["metadata"]["name"]
    yield names
    for name in names.values():
        with contextlib.suppress(ApiError):
            api.delete(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/{name}")
    for leftover in (Path(marker) / "b", Path(marker)):
        if leftover.is_file():
            leftover.unlink()
        elif leftover.is_dir():
            leftover.rmdir()


def get_wf(api: Client, name: str) -> dict[str, Any]:
    return dict(api.get(f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/{name}"))


def finished(api: Client, name: str) -> dict[str, Any]:
    wf = wait_for(
        f"workflow {name} to finish",
        lambda: (w := get_wf(api, name)).get("status", {}).get("phase") in DONE and w,
        90,
        every=POLL,
    )
    return dict(wf)


def pod_nodes(wf: dict[str, Any]) -> list[dict[str, Any]]:
    """The Workflow's Pod nodes, oldest first."""
    nodes = [n for n in wf["status"]["nodes"].values() if n["type"] == "Pod"]
    return sorted(nodes, key=lambda n: n.get("startedAt") or "")


def summary(wf: dict[str, Any]) -> str:
    return str(
        [
            (n["displayName"], n["phase"], n.get("message"), n.get("hostNodeName"))
            for n in pod_nodes(wf)
        ]
    )


def test_trivial_workflow_succeeds(api: Client, submitted: dict[str, str]) -> None:
    wf = finished(api, submitted["trivial"])
    assert wf["status"]["phase"] == "Succeeded", summary(wf)
    (node,) = pod_nodes(wf)
    assert node["outputs"]["exitCode"] == "0"
    assert node["hostNodeName"] in ("on-demand-0", "system-0")  # never the tainted spot node


def test_exit_3_is_retried_then_fails(api: Client, submitted: dict[str, str]) -> None:
    wf = finished(api, submitted["exit3"])
    assert wf["status"]["phase"] == "Failed", summary(wf)
    attempts = pod_nodes(wf)
    assert len(attempts) == 2, summary(wf)
    for node in attempts:
        assert node["phase"] == "Failed"
        assert node["outputs"]["exitCode"] == "3"
        assert "exit code 3" in node["message"]


def test_output_parameters_from_files(api: Client, submitted: dict[str, str]) -> None:
    wf = finished(api, submitted["outputs"])
    assert wf["status"]["phase"] == "Succeeded", summary(wf)
    produce = next(n for n in pod_nodes(wf) if n["displayName"] == "produce")
    params = {p["name"]: p["value"] for p in produce["outputs"]["parameters"]}
    assert params == {"on-volume": f"vol-{produce['id']}", "on-rootfs": "rootfs-ok"}
    assert [n["phase"] for n in pod_nodes(wf)] == ["Succeeded", "Succeeded"]


def container_processes(pod_name: str) -> list[int]:
    """PIDs of processes of that pod (the agent gives each container HOSTNAME=<pod name>)."""
    marker = f"\0HOSTNAME={pod_name}\0".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in b"\0" + (entry / "environ").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def running_pod(api: Client, workflow_name: str) -> dict[str, Any] | None:
    """A pod of the Workflow whose `main` container runs, if there is one."""
    selector = f"workflows.argoproj.io/workflow={workflow_name}"
    for pod in api.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=selector)["items"]:
        statuses = {c["name"]: c["state"] for c in pod["status"].get("containerStatuses") or []}
        if "running" in statuses.get("main", {}):
            return dict(pod)
    return None


def test_pod_deleted_mid_run_is_retried_and_leaves_no_process(
    api: Client, submitted: dict[str, str]
) -> None:
    name = submitted["lost"]
    pod = wait_for("the first attempt to run", lambda: running_pod(api, name), 90, every=POLL)
    pod_name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] == "spot-0"
    # wait, emissary, sleep
    wait_for("its processes", lambda: len(container_processes(pod_name)) >= 3, 90, every=POLL)
    # A pod missing within RECENTLY_STARTED_POD_DURATION (10 s) of its node's start is created
    # again in place by the controller (same attempt, so this one would sleep again), not failed
    # and retried (v4.0.5 operator.go, recentlyStarted). A lost node is lost later than that.
    created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"]).timestamp()
    time.sleep(max(0.0, created + 12 - time.time()))
    api.delete(f"/api/v1/namespaces/{NS}/pods/{pod_name}")

    def gone() -> bool:
        try:
            api.get(f"/api/v1/namespaces/{NS}/pods/{pod_name}")
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_for("the deleted pod to be gone", gone, 60, every=POLL)
    assert container_processes(pod_name) == []
    wf = finished(api, name)
    assert wf["status"]["phase"] == "Succeeded", summary(wf)
    attempts = pod_nodes(wf)
    assert len(attempts) == 2, summary(wf)
    assert attempts[0]["phase"] in ("Failed", "Error")
    assert attempts[1]["phase"] == "Succeeded"


def test_stopped_workflow_stops_its_running_pod(api: Client, submitted: dict[str, str]) -> None:
    """`shutdown: Stop`: the controller signals the pod through pods/exec -> kubelet endpoint."""
    name = submitted["stopped"]
    pod = wait_for("the step to run", lambda: running_pod(api, name), 90, every=POLL)
    pod_name = pod["metadata"]["name"]
    wait_for("its processes", lambda: len(container_processes(pod_name)) >= 3, 90, every=POLL)
    api.patch(
        f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows/{name}",
        {"spec": {"shutdown": "Stop"}},
    )
    wf = finished(api, name)
    assert wf["status"]["phase"] == "Failed", summary(wf)
    pod = wait_for(
        "the pod to terminate",
        lambda: (
            (p := api.get(f"/api/v1/namespaces/{NS}/pods/{pod_name}"))["status"]["phase"]
            in ("Failed", "Succeeded")
            and p
        ),
        60,
        every=POLL,
    )
    main = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "main")
    assert main["state"]["terminated"]["exitCode"] != 0
    assert container_processes(pod_name) == []


def test_pod_that_fits_no_node_stays_pending(api: Client, submitted: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "nodeagent-nofit-", "labels": {LABEL: RUN}},
        "spec": {
            "nodeSelector": {"vcube.io/pool": "gpu"},
            "containers": [{"name": "main", "image": IMAGE, "command": ["true"]}],
        },
    }
    pod = api.create(f"/api/v1/namespaces/{NS}/pods", body)
    path = f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}"
    try:

        def condition() -> dict[str, Any] | None:
            current = api.get(path)
            conds = {c["type"]: c for c in current["status"].get("conditions") or []}
            return conds.get("PodScheduled")

        cond = wait_for("PodScheduled=False", condition, 30, every=POLL)
        assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
        assert cond["message"].startswith("0/3 nodes are available")
        current = api.get(path)
        assert current["status"]["phase"] == "Pending"
        assert not current["spec"].get("nodeName")
    finally:
        api.delete(path)
