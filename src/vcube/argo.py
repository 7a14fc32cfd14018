"""How is a `vcube-build` Workflow submitted and followed? The way `argo submit` does it.

With ``ARGO_SERVER`` set, requests go through the Argo Server API (Hera's WorkflowsService,
``ARGO_TOKEN``, ``ARGO_NAMESPACE``, ``ARGO_SECURE``, ``ARGO_INSECURE_SKIP_VERIFY``); without it,
the Workflow object is created through the Kubernetes API with the ``kubernetes`` client and
the current kubeconfig (or the in-cluster config). Hera and kubernetes are the ``workflows``
extra: they are imported only here, only when a request is made.

Every failure to reach or use a server is an :class:`ArgoError` with a one-line message saying
what to set; callers print it (no traceback).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vcube.storage import first_line

TEMPLATE_NAME = "vcube-build"
GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
DEFAULT_NAMESPACE = "vcube"
_TIMEOUT_S = 10


class ArgoError(RuntimeError):
    """Submitting or reading a workflow failed; the message says what to set or fix."""


@dataclass(frozen=True)
class Submitted:
    name: str
    namespace: str
    url: str
    via: str  # "argo-server" or "kubernetes"


def workflow_manifest(
    spec: str,
    groups: str = "",
    *,
    namespace: str | None = None,
    template: str = TEMPLATE_NAME,
    parallelism: int | None = None,
) -> dict[str, Any]:
    """The Workflow that runs the template: a reference plus arguments, nothing else.

    ``spec`` is the spec's path inside the pod; ``groups`` a comma list of group ids ("" = all).
    ``parallelism`` overrides the template's limit of pods at a time for this run only.
    """
    spec_params = [{"name": "spec", "value": spec}, {"name": "groups", "value": groups}]
    body: dict[str, Any] = {
        "workflowTemplateRef": {"name": template},
        "arguments": {"parameters": spec_params},
    }
    if parallelism is not None:
        if parallelism < 1:
            raise ArgoError(f"parallelism must be >= 1, got {parallelism}")
        body["parallelism"] = parallelism
    metadata: dict[str, Any] = {
        "generateName": f"{template}-",
        "labels": {
            "app.kubernetes.io/name": "vcube",
            "app.kubernetes.io/part-of": "vcube",
            "app.kubernetes.io/component": "build",
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": metadata,
        "spec": body,
    }


def manifest_yaml(manifest: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(manifest), sort_keys=False)


# -- Argo Server ----------------------------------------------------------------------------
def _server_url(env: Mapping[str, str]) -> str:
    server = env["ARGO_SERVER"].strip().rstrip("/")
    if "://" in server:
        return server
    secure = env.get("ARGO_SECURE", "true").lower() not in ("false", "0", "no")
    return f"{'https' if secure else 'http'}://{server}"


def _ui_url(env: Mapping[str, str], namespace: str, name: str) -> str:
    base = env.get("ARGO_UI_URL") or (_server_url(env) if env.get("ARGO_SERVER") else "")
    base = base.rstrip("/") or "https://localhost:2746"
    base_href = env.get("ARGO_BASE_HREF", "").strip("/")
    prefix = f"{base}/{base_href}" if base_href else base
    return f"{prefix}/workflows/{namespace}/{name}"


def _service(env: Mapping[str, str]) -> Any:
    try:
        from hera.workflows import WorkflowsService
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ArgoError("hera is not installed: pip install 'vcube[workflows]'") from e
    skip_verify = env.get("ARGO_INSECURE_SKIP_VERIFY", "false").lower() in ("true", "1", "yes")
    return WorkflowsService(
        host=_server_url(env),
        token=env.get("ARGO_TOKEN") or None,
        namespace=env.get("ARGO_NAMESPACE") or DEFAULT_NAMESPACE,
        verify_ssl=not skip_verify,
    )


def _server_error(e: Exception, env: Mapping[str, str], what: str) -> ArgoError:
    import requests

    url = _server_url(env)
    if isinstance(e, requests.exceptions.SSLError):
        return ArgoError(
            f"{what}: TLS error talking to {url} ({type(e).__name__}); set ARGO_SECURE=false for "
            "plain HTTP or ARGO_INSECURE_SKIP_VERIFY=true for a self-signed certificate"
        )
    if isinstance(e, requests.exceptions.RequestException):
        return ArgoError(
            f"{what}: cannot reach the Argo Server at {url} ({type(e).__name__}); check "
            "ARGO_SERVER (host:port), or unset it to use the Kubernetes API via your kubeconfig"
        )
    text = first_line(e)
    hint = ""
    if "401" in text or "403" in text or "Unauthorized" in text or "Forbidden" in text:
        hint = "; set ARGO_TOKEN (e.g. 'Bearer <token>' from `argo auth token`)"
    return ArgoError(f"{what}: the Argo Server at {url} refused: {text}{hint}")


def _submit_server(manifest: dict[str, Any], env: Mapping[str, str]) -> Submitted:
    from hera.workflows.models import Workflow, WorkflowCreateRequest

    service = _service(env)
    namespace = manifest["metadata"].get("namespace") or service.namespace
    body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    try:
        created = service.create_workflow(
            WorkflowCreateRequest(workflow=Workflow.model_validate(body)), namespace=namespace
        )
    except Exception as e:
        raise _server_error(e, env, "submit") from None
    name = created.metadata.name or "?"
    return Submitted(name, namespace, _ui_url(env, namespace, name), "argo-server")


# -- Kubernetes API -------------------------------------------------------------------------
def _kube(env: Mapping[str, str]) -> tuple[Any, str]:
    """A CustomObjectsApi and the namespace: ARGO_NAMESPACE, else the context's, else vcube."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ArgoError(
            "the kubernetes client is not installed: pip install 'vcube[workflows]'"
        ) from e
    namespace = env.get("ARGO_NAMESPACE")
    try:
        if env.get("KUBERNETES_SERVICE_HOST") and not env.get("KUBECONFIG"):
            config.load_incluster_config()
        else:
            config.load_kube_config(config_file=env.get("KUBECONFIG"))
            _, active = config.list_kube_config_contexts(config_file=env.get("KUBECONFIG"))
            namespace = namespace or (active or {}).get("context", {}).get("namespace")
    except (ConfigException, FileNotFoundError, TypeError) as e:
        raise ArgoError(
            "nothing to submit to: set ARGO_SERVER (and ARGO_TOKEN) for the Argo Server, "
            f"or KUBECONFIG / a current kubectl context for the Kubernetes API ({e})"
        ) from None
    api = client.CustomObjectsApi()
    return api, namespace or DEFAULT_NAMESPACE


def _kube_error(e: Exception, what: str) -> ArgoError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        hint = ""
        if e.status in (401, 403):
            hint = "; check your kubeconfig credentials and RBAC on workflows.argoproj.io"
        elif e.status == 404:
            hint = "; is Argo Workflows installed, and the namespace right (ARGO_NAMESPACE)?"
        return ArgoError(f"{what}: the Kubernetes API answered {e.status} {e.reason}{hint}")
    return ArgoError(
        f"{what}: cannot reach the Kubernetes API ({type(e).__name__}); check KUBECONFIG and "
        "the current context, or set ARGO_SERVER to go through the Argo Server"
    )


def _submit_kube(manifest: dict[str, Any], env: Mapping[str, str]) -> Submitted:
    api, namespace = _kube(env)
    namespace = manifest["metadata"].get("namespace") or namespace
    body = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
    try:
        created = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=_TIMEOUT_S
        )
    except Exception as e:
        raise _kube_error(e, "submit") from None
    name = created.get("metadata", {}).get("name", "?")
    return Submitted(name, namespace, _ui_url(env, namespace, name), "kubernetes")


# -- public ---------------------------------------------------------------------------------
def submit(manifest: dict[str, Any], env: Mapping[str, str] | None = None) -> Submitted:
    """Create the Workflow: Argo Server if ARGO_SERVER is set, else the Kubernetes API."""
    env = os.environ if env is None else env
    if env.get("ARGO_SERVER"):
        return _submit_server(manifest, env)
    return _submit_kube(manifest, env)


def get_workflow(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Workflow object (as a dict) by name, through the same path as :func:`submit`."""
    env = os.environ if env is None else env
    if env.get("ARGO_SERVER"):
        # A plain GET with the service's auth and TLS settings: the raw JSON tolerates status
        # fields newer than the pinned Hera models (a status must never fail to parse).
        service = _service(env)  # raises ArgoError if hera (and so requests) is missing
        import requests

        url = f"{service.host}/api/v1/workflows/{service.namespace}/{name}"
        try:
            resp = service.session.get(
                url,
                headers={"Authorization": service.token} if service.token else {},
                verify=service.verify_ssl,
                timeout=_TIMEOUT_S,
            )
            resp.raise_for_status()
            return dict(resp.json())
        except requests.exceptions.HTTPError as e:
            raise ArgoError(f"workflow {name}: the Argo Server answered {e}") from None
        except Exception as e:
            raise _server_error(e, env, f"workflow {name}") from None
    api, namespace = _kube(env)
    try:
        return api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=_TIMEOUT_S
        )
    except Exception as e:
        raise _kube_error(e, f"workflow {name}") from None


def summarize(workflow: Mapping[str, Any]) -> dict[str, Any]:
    """Phase, progress ("done/total" pods) and per-template pod counts of a Workflow object."""
    status = workflow.get("status") or {}
    nodes = (status.get("nodes") or {}).values()
    by_template: dict[str, dict[str, int]] = {}
    for node in nodes:
        if node.get("type") != "Pod":
            continue
        counts = by_template.setdefault(node.get("templateName", "?"), {})
        phase = node.get("phase", "Pending")
        counts[phase] = counts.get(phase, 0) + 1
    meta = workflow.get("metadata") or {}
    out: dict[str, Any] = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "phase": status.get("phase") or "Pending",
        "progress": status.get("progress"),
        "started": status.get("startedAt"),
        "finished": status.get("finishedAt"),
        "pods": by_template,
    }
    if status.get("message"):
        out["message"] = status["message"]
    if status.get("compressedNodes") or status.get("offloadNodeStatusVersion"):
        out["note"] = "node status is compressed/offloaded: per-template counts unavailable here"
    return out


def workflow_progress(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """For `vcube status --workflow NAME`: the workflow's phase and progress, or the error.

    The cube's own status is still worth printing when the cluster is unreachable, so an
    unreachable server is reported in the result instead of raised.
    """
    try:
        return summarize(get_workflow(name, env))
    except ArgoError as e:
        return {"name": name, "error": str(e)}


# -- stopping a build's children (vcube-build's exit handler) -------------------------------
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
PARENT_LABEL = "vcube.io/parent-workflow"
COMPLETED_LABEL = "workflows.argoproj.io/completed"


def _in_cluster_request(
    method: str, path: str, body: Mapping[str, Any] | None = None, *, sa_dir: str
) -> dict[str, Any]:
    """One call to the API server with the pod's ServiceAccount token (standard library only:
    the worker image carries no Kubernetes client)."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ArgoError("not in a pod: KUBERNETES_SERVICE_HOST is not set")
    try:
        token = Path(sa_dir, "token").read_text().strip()
    except OSError as e:
        raise ArgoError(f"no ServiceAccount token under {sa_dir}: {e}") from None
    context = ssl.create_default_context(cafile=f"{sa_dir}/ca.crt")
    host = f"[{host}]" if ":" in host else host
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/merge-patch+json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S, context=context) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as e:
        raise ArgoError(
            f"{method} {path}: the Kubernetes API answered {e.code} {e.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        raise ArgoError(f"{method} {path}: cannot reach the Kubernetes API ({e})") from None


def stop_children(parent: str, *, sa_dir: str = SERVICE_ACCOUNT_DIR) -> dict[str, Any]:
    """Set ``spec.shutdown: Stop`` on every unfinished child Workflow of ``parent``.

    Owner references cascade only on deletion: a stopped or failed parent leaves its children
    running. Stop (not Terminate) lets each child's running pods end and its exit handlers run.
    Idempotent: a finished child is left alone, a stopped one is patched again harmlessly.
    """
    import urllib.parse

    try:
        namespace = Path(sa_dir, "namespace").read_text().strip()
    except OSError as e:
        raise ArgoError(f"no namespace file under {sa_dir}: {e}") from None
    selector = urllib.parse.quote(f"{PARENT_LABEL}={parent},{COMPLETED_LABEL}!=true")
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    listing = _in_cluster_request("GET", f"{base}?labelSelector={selector}", sa_dir=sa_dir)
    stopped = []
    for item in listing.get("items") or []:
        name = item["metadata"]["name"]
        _in_cluster_request(
            "PATCH", f"{base}/{name}", {"spec": {"shutdown": "Stop"}}, sa_dir=sa_dir
        )
        stopped.append(name)
    return {"step": "stop-children", "parent": parent, "stopped": len(stopped), "children": stopped}
