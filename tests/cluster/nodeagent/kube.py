"""A small Kubernetes API client for the node agent (test infrastructure).

Plain JSON over urllib3 (a dependency of the official client) instead of the generated models:
the agent handles every pod of a test cluster on a 2-core machine, and dicts cost far less CPU
than model objects. Only what a kubelet + scheduler needs: get/list/create/patch/delete, the
pods/binding, pods/status and serviceaccounts/token subresources, and watches.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import urllib3
import yaml

log = logging.getLogger("nodeagent.kube")

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status code and Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Kubeconfig:
    """The parts of a kubeconfig's current context the agent uses."""

    server: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    token: str | None
    insecure: bool

    @property
    def host(self) -> str:
        """API server host as the pods should reach it."""
        return urlsplit(self.server).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """API server port (KUBERNETES_SERVICE_PORT for the pods)."""
        return urlsplit(self.server).port or 443

    def ca_pem(self) -> bytes | None:
        """The cluster CA certificate (PEM), if the kubeconfig names one."""
        return Path(self.ca_file).read_bytes() if self.ca_file else None


def load_kubeconfig(path: Path, creds_dir: Path) -> Kubeconfig:
    """Read the current context; inline *-data fields are written to creds_dir (mode 0600)."""
    doc = yaml.safe_load(path.read_text())
    ctx_name = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
    if ctx_name not in contexts:
        raise ValueError(f"{path}: no current-context (or it names no context)")
    ctx = contexts[ctx_name]
    cluster = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}[ctx["cluster"]]
    user = {u["name"]: u["user"] for u in doc.get("users") or []}.get(ctx.get("user"), {})
    base = path.parent

    def file_of(section: Mapping[str, Any], key: str) -> str | None:
        if section.get(f"{key}-data"):
            creds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            out = creds_dir / key
            out.write_bytes(base64.b64decode(section[f"{key}-data"]))
            out.chmod(0o600)
            return str(out)
        if section.get(key):
            return str((base / section[key]).resolve())
        return None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    return Kubeconfig(
        server=cluster["server"].rstrip("/"),
        ca_file=file_of(cluster, "certificate-authority"),
        cert_file=file_of(user, "client-certificate"),
        key_file=file_of(user, "client-key"),
        token=token,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


class Client:
    """Thread-safe JSON client for one API server."""

    def __init__(self, config: Kubeconfig, *, user_agent: str = "vcube-nodeagent") -> None:
        self.config = config
        ctx = ssl.create_default_context(cafile=config.ca_file)
        if config.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if config.cert_file and config.key_file:
            ctx.load_cert_chain(config.cert_file, config.key_file)
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._http = urllib3.PoolManager(
            num_pools=4, maxsize=16, ssl_context=ctx, retries=False, block=False
        )

    # -- plain requests ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """One request; returns the decoded JSON body, raises ApiError on a non-2xx answer."""
        url = self.config.server + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self._http.request(
            method,
            url,
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(connect=5, read=timeout),
        )
        payload = resp.data
        if resp.status >= 300:
            raise _api_error(resp.status, payload)
        return json.loads(payload) if payload else None

    def get(self, path: str, **query: Any) -> Any:
        """GET path."""
        return self.request("GET", path, query=query)

    def create(self, path: str, body: Any) -> Any:
        """POST body to path."""
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any, content_type: str = MERGE) -> Any:
        """PATCH path (merge patch unless told)."""
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Any = None) -> Any:
        """DELETE path with optional DeleteOptions."""
        return self.request("DELETE", path, body=body)

    # -- watches -------------------------------------------------------------------------------

    def watch(
        self, path: str, *, query: Mapping[str, Any], resource_version: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Events of one watch request (ends when the server closes it)."""
        q = dict(query)
        q.update(
            watch="true",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=timeout_seconds,
        )
        url = f"{self.config.server}{path}?{urlencode(q)}"
        resp = self._http.request(
            "GET",
            url,
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 30),
        )
        try:
            if resp.status >= 300:
                raise _api_error(resp.status, resp.read())
            buf = b""
            for chunk in resp.stream(65536):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()


def _api_error(status: int, payload: bytes) -> ApiError:
    try:
        doc = json.loads(payload)
        return ApiError(status, doc.get("reason", ""), doc.get("message", ""))
    except ValueError:
        return ApiError(status, "", payload[:500].decode(errors="replace"))


class Informer(threading.Thread):
    """List + watch one collection forever, calling handler(type, obj) for each change.

    On (re)start it lists and reports every object as "SYNC" (a handler treats it like MODIFIED)
    and objects that vanished meanwhile as "DELETED". Handlers run on this thread.
    """

    def __init__(
        self,
        client: Client,
        path: str,
        handler: Callable[[str, dict[str, Any]], None],
        *,
        query: Mapping[str, Any] | None = None,
        name: str,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.client, self.path, self.handler = client, path, handler
        self.query = dict(query or {})
        self.stop_event = stop
        self.known: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()

    def run(self) -> None:
        """Loop until the stop event is set."""
        while not self.stop_event.is_set():
            try:
                rv = self._relist()
                self.synced.set()
                while not self.stop_event.is_set():
                    rv = self._watch_once(rv)
            except _Gone:
                continue
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                log.warning("%s: %s; relisting in 2 s", self.name, exc)
                self.stop_event.wait(2)

    def _relist(self) -> str:
        doc = self.client.get(self.path, **self.query)
        seen: dict[str, dict[str, Any]] = {}
        for item in doc.get("items") or []:
            seen[item["metadata"]["uid"]] = item
        for uid, old in list(self.known.items()):
            if uid not in seen:
                self._dispatch("DELETED", old)
        for item in seen.values():
            self._dispatch("SYNC", item)
        return str(doc["metadata"]["resourceVersion"])

    def _watch_once(self, rv: str) -> str:
        for event in self.client.watch(
            self.path, query=self.query, resource_version=rv, timeout_seconds=240
        ):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Gone
                raise ApiError(
                    int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", "")
                )
            rv = obj.get("metadata", {}).get("resourceVersion", rv)
            if kind == "BOOKMARK":
                continue
            self._dispatch(str(kind), obj)
            if self.stop_event.is_set():
                break
        return rv

    def _dispatch(self, kind: str, obj: dict[str, Any]) -> None:
        uid = obj["metadata"]["uid"]
        if kind == "DELETED":
            self.known.pop(uid, None)
        else:
            self.known[uid] = obj
        try:
            self.handler(kind, obj)
        except Exception:
            log.exception(
                "%s: handler failed on %s %s", self.name, kind, obj["metadata"].get("name")
            )


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


def now_rfc3339() -> str:
    """The current time as the API writes timestamps."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
