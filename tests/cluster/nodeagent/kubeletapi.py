"""The node agent's kubelet endpoint (test infrastructure): container logs and Argo's signals.

The API server proxies ``pods/log`` and ``pods/exec`` to the node's kubelet endpoint
(``status.daemonEndpoints.kubeletEndpoint.Port`` at its InternalIP), over TLS without verifying
the kubelet's certificate unless told to. Two things come this way:

- ``GET /containerLogs/<ns>/<pod>/<container>``: ``kubectl logs`` (tailLines, follow).
- ``POST /exec/<ns>/<pod>/<container>?command=...``: the Argo controller terminates a running
  pod's containers (workflow shutdown, deadline, main container done) by exec'ing
  ``/var/run/argo/argoexec kill <signal> 1`` or ``/bin/sh -c "kill -<signal> 1"``. There is no
  stream protocol here: the agent delivers the signal to the container's PID 1 itself and answers
  501 (the caller logs the error and moves on, as it would for any exec failure). Any other exec
  command is refused with 501 and runs nothing.
"""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .runtime import ContainerRun, PodWorker

log = logging.getLogger("nodeagent.kubeletapi")

_SH_KILL = re.compile(r"^\s*kill\s+-(\d+|[A-Z]+)\s+1\s*$")
_SIGNALS = {"TERM": 15, "KILL": 9, "INT": 2, "HUP": 1, "QUIT": 3, "USR1": 10, "USR2": 12}


def kill_signal(command: list[str]) -> int | None:
    """The signal of an Argo kill command aimed at PID 1, else None."""
    if len(command) == 4 and command[1] == "kill" and command[3] == "1" and command[2].isdigit():
        return int(command[2])  # /var/run/argo/argoexec kill 15 1
    if len(command) == 3 and command[0].endswith("sh") and command[1] == "-c":
        m = _SH_KILL.match(command[2])
        if m:
            sig = m.group(1)
            return int(sig) if sig.isdigit() else _SIGNALS.get(sig.removeprefix("SIG"))
    return None


def ensure_certificate(directory: Path, host_ip: str) -> tuple[Path, Path]:
    """A self-signed serving certificate for the endpoint (made once per workdir)."""
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    if not (cert.exists() and key.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"),
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=vcube-nodeagent"),
                *("-addext", f"subjectAltName=IP:{host_ip}"),
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
    return cert, key


class KubeletServer:
    """HTTPS server on the kubelet port; find(ns, pod) gives the pod's worker."""

    def __init__(
        self,
        host_ip: str,
        port: int,
        cert_dir: Path,
        find: Callable[[str, str], PodWorker | None],
    ) -> None:
        self.find = find
        cert, key = ensure_certificate(cert_dir, host_ip)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        server = self

        class Handler(_Handler):
            agent = server

        self.httpd = ThreadingHTTPServer((host_ip, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="kubelet-api", daemon=True
        )

    def start(self) -> None:
        """Serve in the background."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    agent: KubeletServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _target(self, prefix: str) -> tuple[PodWorker, ContainerRun, dict[str, list[str]]] | None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 4 or parts[0] != prefix:
            self._reply(404, f"nodeagent: no such endpoint {url.path}")
            return None
        _, ns, pod, container = parts
        worker = self.agent.find(ns, pod)
        run = None
        if worker is not None:
            run = next((r for r in worker.inits + worker.mains if r.name == container), None)
        if worker is None or run is None:
            self._reply(
                404, f"nodeagent: container {container} of pod {ns}/{pod} is not on this node"
            )
            return None
        return worker, run, parse_qs(url.query)

    def do_GET(self) -> None:
        """containerLogs (exec also arrives as GET from some clients)."""
        if self.path.startswith("/exec/"):
            return self._exec()
        if self.path.startswith("/healthz"):
            return self._reply(200, "ok")
        target = self._target("containerLogs")
        if target is None:
            return None
        _, run, query = target
        return self._logs(run, query)

    def do_POST(self) -> None:
        """exec."""
        if self.path.startswith("/exec/"):
            return self._exec()
        return self._reply(404, "nodeagent: no such endpoint")

    def _exec(self) -> None:
        target = self._target("exec")
        if target is None:
            return
        worker, run, query = target
        command = query.get("command", [])
        sig = kill_signal(command)
        if sig is None or not run.running:
            self._reply(501, f"nodeagent: exec is not supported (command {command} not run)")
            return
        log.info(
            "pod %s/%s: signal %d to %s (exec %s)",
            worker.ns,
            worker.pod_name,
            sig,
            run.name,
            command,
        )
        run.signal(sig)
        self._reply(
            501, f"nodeagent: no exec streams; delivered signal {sig} to PID 1 of {run.name}"
        )

    def _logs(self, run: ContainerRun, query: dict[str, list[str]]) -> None:
        path = run.log_path
        if path is None or not path.exists():
            self._reply(400, f'container "{run.name}" is waiting to start')
            return
        data = path.read_bytes()
        tail = query.get("tailLines", [None])[0]
        if tail is not None and tail.lstrip("-").isdigit() and int(tail) >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[len(lines) - int(tail) :]) if int(tail) else b""
        follow = query.get("follow", ["false"])[0] == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        offset = path.stat().st_size
        self._chunk(data)
        while follow and run.running:
            time.sleep(0.5)
            with path.open("rb") as f:
                f.seek(offset)
                more = f.read()
            offset += len(more)
            if more and not self._chunk(more):
                return
        self._chunk(b"")

    def _chunk(self, data: bytes) -> bool:
        if not data and self.wfile.closed:
            return False
        try:
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            return False
        return True
