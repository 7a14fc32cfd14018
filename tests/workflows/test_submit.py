"""Submitting and reading workflows through both paths, against recording servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.schemas import validate_argo_loose, validate_object
from vcube.argo import ArgoError, submit, workflow_manifest, workflow_progress

REPO_ROOT = Path(__file__).resolve().parents[2]
CREATED_NAME = "vcube-build-x7k2p"
STATUS = {
    "phase": "Running",
    "progress": "5/12",
    "startedAt": "2026-11-25T01:00:00Z",
    "nodes": {
        "a": {"type": "Pod", "templateName": "plan", "phase": "Succeeded"},
        "b": {"type": "Pod", "templateName": "group", "phase": "Running"},
        "c": {"type": "DAG", "templateName": "build", "phase": "Running"},
    },
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> Recorded:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k.lower(): v for k, v in self.headers.items()}
            rec = Recorded(self.command, self.path, headers, self.rfile.read(length))
            recorder.requests.append(rec)
            return rec

        def _reply(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            rec = self._record()
            body = json.loads(rec.body)
            wf = body.get("workflow", body)  # Argo Server wraps it, Kubernetes does not
            wf = {**wf, "metadata": {**wf["metadata"], "name": CREATED_NAME}}
            self._reply(200 if "workflow" in body else 201, wf)

        def do_GET(self) -> None:
            self._record()
            name = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            self._reply(
                200,
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Workflow",
                    "metadata": {"name": name, "namespace": "vcube"},
                    "spec": {"workflowTemplateRef": {"name": "vcube-build"}},
                    "status": STATUS,
                },
            )

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            return

    return Handler


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    recorder.url = f"127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield recorder
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubeconfig(tmp_path: Path, server: str, namespace: str = "vcube-test") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "t", "cluster": {"server": server}}],
        "users": [{"name": "t", "user": {"token": "kube-token-123"}}],
        "contexts": [
            {"name": "t", "context": {"cluster": "t", "user": "t", "namespace": namespace}}
        ],
        "current-context": "t",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_argo_server_path_posts_the_workflow_with_the_token_in_the_header_only(
    server: Recorder,
) -> None:
    token = "tok-5f3a9c-secret"
    env = {
        "ARGO_SERVER": server.url,
        "ARGO_SECURE": "false",
        "ARGO_TOKEN": token,
        "ARGO_NAMESPACE": "vcube",
    }
    manifest = workflow_manifest("/app/datasets/oae-atlas.yaml", "000,001")
    done = submit(manifest, env)

    assert done.name == CREATED_NAME
    assert done.via == "argo-server"
    assert done.url == f"http://{server.url}/workflows/vcube/{CREATED_NAME}"
    [req] = server.requests
    assert (req.method, req.path) == ("POST", "/api/v1/workflows/vcube")
    assert req.headers["authorization"] == f"Bearer {token}"
    others = {k: v for k, v in req.headers.items() if k != "authorization"}
    assert token not in json.dumps(others) + req.path + req.body.decode()
    body = json.loads(req.body)
    assert set(body) == {"workflow"}
    expected = {**manifest, "metadata": {**manifest["metadata"], "namespace": "vcube"}}
    assert body["workflow"] == expected
    validate_object(body["workflow"])
    validate_argo_loose(body["workflow"])


def test_kubernetes_path_creates_the_workflow_object(server: Recorder, tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(_kubeconfig(tmp_path, f"http://{server.url}"))}
    manifest = workflow_manifest("/app/datasets/oae-atlas.yaml", parallelism=40)
    done = submit(manifest, env)

    assert (done.name, done.namespace, done.via) == (CREATED_NAME, "vcube-test", "kubernetes")
    [req] = server.requests
    assert req.method == "POST"
    assert req.path == "/apis/argoproj.io/v1alpha1/namespaces/vcube-test/workflows"
    assert req.headers["authorization"] == "Bearer kube-token-123"
    body = json.loads(req.body)
    validate_object(body)
    assert body["spec"]["workflowTemplateRef"] == {"name": "vcube-build"}
    assert body["spec"]["parallelism"] == 40
    assert body["metadata"]["namespace"] == "vcube-test"


@pytest.mark.parametrize("path", ["argo-server", "kubernetes"])
def test_status_reads_phase_and_progress(server: Recorder, tmp_path: Path, path: str) -> None:
    if path == "argo-server":
        env = {"ARGO_SERVER": f"http://{server.url}", "ARGO_NAMESPACE": "vcube"}
    else:
        env = {"KUBECONFIG": str(_kubeconfig(tmp_path, f"http://{server.url}", "vcube"))}
    got = workflow_progress(CREATED_NAME, env)
    assert got["phase"] == "Running"
    assert got["progress"] == "5/12"
    assert got["pods"] == {"plan": {"Succeeded": 1}, "group": {"Running": 1}}
    [req] = server.requests
    assert req.method == "GET"
    expected = {
        "argo-server": f"/api/v1/workflows/vcube/{CREATED_NAME}",
        "kubernetes": f"/apis/argoproj.io/v1alpha1/namespaces/vcube/workflows/{CREATED_NAME}",
    }[path]
    assert req.path.split("?")[0] == expected


def test_unreachable_servers_are_one_line_errors(tmp_path: Path) -> None:
    port = _free_port()
    manifest = workflow_manifest("/app/datasets/oae-atlas.yaml")
    with pytest.raises(ArgoError, match=r"cannot reach the Argo Server.*ARGO_SERVER"):
        submit(manifest, {"ARGO_SERVER": f"127.0.0.1:{port}", "ARGO_SECURE": "false"})
    kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{port}")
    with pytest.raises(ArgoError, match=r"cannot reach the Kubernetes API.*KUBECONFIG"):
        submit(manifest, {"KUBECONFIG": str(kubeconfig)})
    with pytest.raises(ArgoError, match=r"set ARGO_SERVER.*KUBECONFIG"):
        submit(manifest, {"KUBECONFIG": str(tmp_path / "missing")})
    status = workflow_progress("x", {"ARGO_SERVER": f"127.0.0.1:{port}", "ARGO_SECURE": "false"})
    assert "cannot reach" in status["error"]


def _run_submit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ARGO_", "KUBE"))}
    return subprocess.run(
        [sys.executable, "-m", "workflows.submit", *args],
        env={**base, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_submit_command_without_any_server_says_what_to_set(tmp_path: Path) -> None:
    proc = _run_submit(["datasets/oae-atlas.yaml"], {"KUBECONFIG": str(tmp_path / "none")})
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "ARGO_SERVER" in proc.stderr
    assert "KUBECONFIG" in proc.stderr


def test_submit_command_prints_name_and_ui_url(server: Recorder) -> None:
    proc = _run_submit(
        ["datasets/oae-atlas.yaml", "--groups", "000, 001"],
        {"ARGO_SERVER": f"http://{server.url}", "ARGO_UI_URL": "https://argo.example.org"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        CREATED_NAME,
        f"https://argo.example.org/workflows/vcube/{CREATED_NAME}",
    ]
    [req] = server.requests
    params = json.loads(req.body)["workflow"]["spec"]["arguments"]["parameters"]
    assert params == [
        {"name": "spec", "value": "/app/datasets/oae-atlas.yaml"},
        {"name": "groups", "value": "000,001"},
    ]


def test_dry_run_prints_a_valid_workflow_and_contacts_nothing() -> None:
    proc = _run_submit(
        ["datasets/oae-atlas.yaml", "--groups", "012"],
        {"DRY_RUN": "1", "ARGO_SERVER": f"127.0.0.1:{_free_port()}"},
    )
    assert proc.returncode == 0, proc.stderr
    obj = yaml.safe_load(proc.stdout)
    validate_object(obj)
    assert obj["spec"]["arguments"]["parameters"][1] == {"name": "groups", "value": "012"}


def test_submit_refuses_a_spec_that_is_not_in_the_image(tmp_path: Path) -> None:
    outside = tmp_path / "x.yaml"
    outside.write_text((REPO_ROOT / "datasets" / "oae-atlas.yaml").read_text())
    proc = _run_submit([str(outside), "--dry-run"], {})
    assert proc.returncode == 2
    assert "datasets/" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pod_datasets_maps_a_datasets_spec_elsewhere() -> None:
    """The local test cluster's pods run on this machine: datasets/ is where the repo is."""
    proc = _run_submit(
        ["datasets/sample.yaml", "--dry-run", "--pod-datasets", str(REPO_ROOT / "datasets")], {}
    )
    assert proc.returncode == 0, proc.stderr
    params = yaml.safe_load(proc.stdout)["spec"]["arguments"]["parameters"]
    assert params[0] == {"name": "spec", "value": str(REPO_ROOT / "datasets" / "sample.yaml")}
