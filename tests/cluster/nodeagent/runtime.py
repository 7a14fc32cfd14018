"""The kubelet half of the node agent (test infrastructure): one thread per bound pod.

A ``PodWorker`` materializes the pod's volumes under ``<workdir>/pods/<uid>/``, runs the init
containers in order and then the regular containers together (each through ``launch.py`` in its
own mount + PID namespace), posts kubelet-shaped status on every transition, enforces
activeDeadlineSeconds, and on deletion sends SIGTERM, waits the grace period, sends SIGKILL and
finalizes the deletion. Container output goes to ``<workdir>/logs/<ns>_<pod>_<uid>/<ctr>.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import podspec
from .kube import STRATEGIC, ApiError, Client, now_rfc3339

log = logging.getLogger("nodeagent.pods")

LAUNCH = str(Path(__file__).with_name("launch.py"))
MESSAGE_LIMIT = 4096
# Dies with the agent (pdeathsig); new mount + PID namespaces; if unshare itself is killed, so is
# the container's PID 1 (--kill-child), and with it every process of the container.
SANDBOX = [
    *("setpriv", "--pdeathsig", "KILL"),
    *("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"),
    "--kill-child",
]
TOKEN_REFRESH_FRACTION = 0.8


@dataclass(frozen=True)
class RuntimeConfig:
    """What every pod worker shares."""

    workdir: Path
    argoexec: str
    bin_dir: Path  # holds an `argoexec` symlink; on every container's PATH after the venv
    venv_bin: str
    api_host: str
    api_port: int
    host_ip: str
    extra_env: Mapping[str, str]
    allocatable: Mapping[str, str]  # limits.* of the downward API when a container sets none
    default_workdir: str = "/"  # the image's WORKDIR, for containers without workingDir


@dataclass
class ContainerRun:
    """One container's life: waiting -> running -> terminated."""

    spec: dict[str, Any]
    init: bool
    waiting_reason: str = "PodInitializing"
    waiting_message: str = ""
    proc: subprocess.Popen[bytes] | None = None
    container_id: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    sent_kill: bool = False
    term_log: Path | None = None
    log_path: Path | None = None
    exited: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        """Started and not yet reaped."""
        return self.proc is not None and self.exit_code is None

    @property
    def terminated(self) -> bool:
        """Has an exit code (ran, or was given up on)."""
        return self.exit_code is not None

    def ns_init_pid(self) -> int | None:
        """Host PID of the container's PID 1 (the child of `unshare --fork`)."""
        if self.proc is None:
            return None
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def signal(self, sig: int) -> None:
        """Signal PID 1 of the container; SIGKILL also hits the unshare parent.

        Never after the unshare process has exited: its PID (and soon its child's) may belong
        to an unrelated process by then. The reaper marks the exit while the zombie still holds
        the PID (see wait_exit).
        """
        with self.lock:
            if self.exited or self.proc is None:
                return
            if sig == signal.SIGKILL:
                self.sent_kill = True
            target = self.ns_init_pid()
            for pid in ([target] if target else []) + (
                [self.proc.pid] if sig == signal.SIGKILL or not target else []
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    def wait_exit(self) -> int:
        """Wait for the unshare process; mark it exited before reaping it (frees its PID)."""
        assert self.proc is not None
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        with self.lock:
            self.exited = True
        return self.proc.wait()

    def status(self, pod_image_default: str = "") -> dict[str, Any]:
        """This container's entry in (init)containerStatuses."""
        state: dict[str, Any]
        if self.terminated:
            term: dict[str, Any] = {
                "exitCode": self.exit_code,
                "reason": self.reason,
                "startedAt": self.started_at or None,
                "finishedAt": self.finished_at,
            }
            if self.container_id:
                term["containerID"] = self.container_id
            if self.message:
                term["message"] = self.message
            state = {"terminated": term}
        elif self.running:
            state = {"running": {"startedAt": self.started_at}}
        else:
            waiting = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image") or pod_image_default,
            "imageID": "",
            "ready": self.running and not self.init,
            "restartCount": 0,
            "started": self.running,
            "state": state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


class _Removed(Exception):
    """The pod object is gone from the API server."""


class PodWorker(threading.Thread):
    """Runs one pod from binding to deletion."""

    def __init__(
        self, client: Client, cfg: RuntimeConfig, pod: dict[str, Any], on_change: Callable[[], None]
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.client, self.cfg, self.pod, self.on_change = client, cfg, pod, on_change
        self.wake = threading.Event()
        self.removed = False
        self.shutdown = False
        self._lock = threading.Lock()
        self._conditions: dict[str, dict[str, Any]] = {}
        self._tokens: list[tuple[Path, str, int, float]] = []
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.pod_dir = cfg.workdir / "pods" / self.uid
        self.log_dir = cfg.workdir / "logs" / f"{self.ns}_{self.pod_name}_{self.uid}"
        spec = pod["spec"]
        self.inits = [ContainerRun(dict(c), True) for c in spec.get("initContainers") or []]
        first_wait = "PodInitializing" if self.inits else "ContainerCreating"
        self.mains = [
            ContainerRun(dict(c), False, waiting_reason=first_wait)
            for c in spec.get("containers") or []
        ]
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.start_time = ""
        self.started_mono: float | None = None
        self._published = ""

    # -- events from the informer (any thread) -------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        """A newer version of the pod object."""
        with self._lock:
            self.pod = pod
        self.wake.set()

    def remove(self) -> None:
        """The pod object was deleted from the API server."""
        self.removed = True
        self.wake.set()

    def stop_for_shutdown(self) -> None:
        """The agent is stopping: kill the containers, post nothing more."""
        self.shutdown = True
        self.wake.set()

    @property
    def deleting(self) -> bool:
        """deletionTimestamp is set (graceful deletion requested)."""
        with self._lock:
            return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _grace(self) -> float:
        with self._lock:
            meta, spec = self.pod["metadata"], self.pod["spec"]
        if self.removed or self.shutdown:
            return 1.0 if self.removed else 2.0
        if meta.get("deletionGracePeriodSeconds") is not None:
            return float(meta["deletionGracePeriodSeconds"])
        return float(spec.get("terminationGracePeriodSeconds", 30))

    def _should_stop(self) -> bool:
        return self.removed or self.shutdown or self.deleting

    # -- main --------------------------------------------------------------------------------

    def run(self) -> None:
        """The pod's whole life on this node."""
        try:
            self._run()
        except _Removed:
            log.info("pod %s/%s is gone", self.ns, self.pod_name)
        except Exception:
            log.exception("pod %s/%s: worker failed", self.ns, self.pod_name)
            self._kill_all(2.0)
        finally:
            self._kill_all(1.0)
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            self.on_change()

    def _run(self) -> None:
        status = self.pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            self.phase = status["phase"]  # finished under an earlier agent: only deletion remains
        elif status.get("startTime"):
            self.start_time = status["startTime"]
            for r in self.inits + self.mains:
                self._give_up(
                    r,
                    137,
                    "ContainerStatusUnknown",
                    "the node agent restarted; the container was lost",
                )
            self.phase, self.reason = "Failed", "NodeAgentRestarted"
            self.message = "the node agent restarted while the pod ran"
            self._publish()
        else:
            self._start_pod()
        if not self.removed and not self.shutdown:
            self._await_deletion()

    def _start_pod(self) -> None:
        self.start_time = now_rfc3339()
        self.started_mono = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._publish()
        while True:
            if self._interrupted():
                return self._finish_interrupted()
            try:
                self._prepare_volumes()
                break
            except podspec.ConfigError as exc:
                self._config_wait(self.inits[:1] or self.mains, str(exc))
        for run in self.inits:
            if not self._start(run):
                return self._finish_interrupted()
            self._publish()
            self._wait(run_done(run))
            if self._interrupted():
                return self._finish_interrupted()
            if run.exit_code != 0:
                self.phase = "Failed"  # restartPolicy Never: a failed init container fails the pod
                self._publish()
                return None
            self._publish()
        for run in self.mains:
            run.waiting_reason = "ContainerCreating"
        for run in self.mains:
            if not self._start(run):
                return self._finish_interrupted()
        self.phase = "Running"
        self._publish()
        self._wait(lambda: all(r.terminated for r in self.mains))
        if self._interrupted():
            return self._finish_interrupted()
        self.phase = "Succeeded" if all(r.exit_code == 0 for r in self.mains) else "Failed"
        self._publish()
        return None

    def _interrupted(self) -> bool:
        """Deleted, removed, shut down, or past the active deadline."""
        return self._should_stop() or self.reason == "DeadlineExceeded"

    def _config_wait(self, runs: list[ContainerRun], message: str) -> None:
        for r in runs:
            r.waiting_reason, r.waiting_message = "CreateContainerConfigError", message
        log.info("pod %s/%s waits: %s", self.ns, self.pod_name, message)
        self._publish()
        self.wake.wait(2.0)
        self.wake.clear()

    def _deadline(self) -> float | None:
        seconds = self.pod["spec"].get("activeDeadlineSeconds")
        if seconds is None or self.started_mono is None:
            return None
        return self.started_mono + float(seconds)

    def _wait(self, done: Callable[[], bool]) -> None:
        """Sleep until done(), deletion, removal, shutdown or the active deadline (then kill)."""
        while not done():
            if self._should_stop():
                self._kill_all(self._grace())
                return
            deadline = self._deadline()
            if deadline is not None and time.monotonic() >= deadline:
                self.reason = "DeadlineExceeded"
                self.message = "Pod was active on the node longer than the specified deadline"
                log.info("pod %s/%s exceeded its active deadline", self.ns, self.pod_name)
                self._kill_all(self._grace())
                return
            timeout = (
                60.0 if deadline is None else max(0.05, min(60.0, deadline - time.monotonic()))
            )
            self.wake.wait(timeout)
            self.wake.clear()

    def _finish_interrupted(self) -> None:
        """After a kill: Succeeded only if every container had already exited 0, else Failed."""
        self._kill_all(self._grace())
        done_ok = bool(self.mains) and all(r.terminated and r.exit_code == 0 for r in self.mains)
        self.phase = "Succeeded" if done_ok and self.reason != "DeadlineExceeded" else "Failed"
        self._publish()

    def _give_up(self, run: ContainerRun, code: int, reason: str, message: str) -> None:
        run.exit_code, run.reason, run.message = code, reason, message
        run.finished_at = run.finished_at or now_rfc3339()

    def _await_deletion(self) -> None:
        """A finished pod stays until it is deleted; then the deletion is finalized."""
        while not (self.removed or self.shutdown):
            if self.deleting:
                self._kill_all(self._grace())
                self._finalize_deletion()
                return
            self.wake.wait(300)
            self.wake.clear()

    def _finalize_deletion(self) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            self.client.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}", body)
            log.info("pod %s/%s deleted", self.ns, self.pod_name)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("finalizing deletion of %s/%s: %s", self.ns, self.pod_name, exc)

    # -- volumes -----------------------------------------------------------------------------

    def _request_token(self, audience: str, expiration_seconds: int) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": max(600, expiration_seconds),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.uid,
                },
            },
        }
        try:
            doc = self.client.create(
                f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body
            )
        except ApiError as exc:
            raise podspec.ConfigError(f"token for serviceaccount {self.ns}/{sa}: {exc}") from exc
        return str(doc["status"]["token"])

    def refresh_tokens(self) -> None:
        """Rewrite projected tokens older than 80 % of their lifetime (as the kubelet does)."""
        for i, (path, audience, seconds, at) in enumerate(list(self._tokens)):
            if (
                time.monotonic() - at < TOKEN_REFRESH_FRACTION * seconds
                or not self.pod_dir.exists()
            ):
                continue
            try:
                token = self._request_token(audience, seconds)
            except podspec.ConfigError as exc:
                log.warning("refreshing %s: %s", path, exc)
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(token)
            tmp.chmod(0o644)
            tmp.replace(path)
            self._tokens[i] = (path, audience, seconds, time.monotonic())

    def _prepare_volumes(self) -> None:
        vol_root = self.pod_dir / "volumes"
        resolver = _Resolver(self.client)
        allocatable = dict(self.cfg.allocatable)
        self._tokens.clear()
        for vol in self.pod["spec"].get("volumes") or []:
            target = vol_root / vol["name"]
            if vol.get("emptyDir") is not None:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
                continue
            if vol.get("hostPath") is not None:
                continue
            files = podspec.volume_files(
                vol,
                pod=self.pod,
                resolver=resolver,
                host_ip=self.cfg.host_ip,
                allocatable=allocatable,
                token=self._token_for(target),
            )
            if files is None:
                kinds = sorted(k for k in vol if k != "name")
                raise podspec.ConfigError(f"volume {vol['name']!r}: unsupported kind {kinds}")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for f in files:
                dest = target / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(f.content)
                dest.chmod(f.mode)

    def _token_for(self, target: Path) -> podspec.TokenSource:
        # The projected token's file name is only known inside source_files; record the path
        # after the fact through a closure over the volume directory.
        def source(audience: str, expiration_seconds: int) -> str:
            token = self._request_token(audience, expiration_seconds)
            for src in (self._volume(target.name) or {}).get("projected", {}).get("sources") or []:
                sat = src.get("serviceAccountToken")
                if sat and (sat.get("audience") or "") == audience:
                    self._tokens.append(
                        (target / sat["path"], audience, expiration_seconds, time.monotonic())
                    )
                    break
            return token

        return source

    def _volume(self, name: str) -> dict[str, Any] | None:
        for vol in self.pod["spec"].get("volumes") or []:
            if vol["name"] == name:
                return dict(vol)
        return None

    def _mounts(self, container: dict[str, Any], env: Mapping[str, str]) -> list[dict[str, Any]]:
        out = []
        for vm in container.get("volumeMounts") or []:
            vol = self._volume(vm["name"])
            if vol is None:
                raise podspec.ConfigError(f"volumeMount {vm['name']!r} names no volume")
            if vol.get("hostPath") is not None:
                source = Path(vol["hostPath"]["path"])
                if (
                    vol["hostPath"].get("type") in ("DirectoryOrCreate", None, "")
                    and not source.exists()
                ):
                    source.mkdir(parents=True, exist_ok=True)
            else:
                source = self.pod_dir / "volumes" / vol["name"]
            sub = vm.get("subPath") or podspec.expand(vm.get("subPathExpr") or "", env)
            if sub:
                source = source / sub
                if not source.exists():
                    source.mkdir(parents=True, exist_ok=True)
                    source.chmod(0o777)
            read_only = bool(vm.get("readOnly")) or any(
                vol.get(k) is not None for k in ("configMap", "secret", "projected", "downwardAPI")
            )
            out.append({"source": str(source), "target": vm["mountPath"], "read_only": read_only})
        return out

    # -- containers --------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {
            "PATH": f"{self.cfg.venv_bin}:{self.cfg.bin_dir}:{podspec.DEFAULT_PATH}",
            "HOSTNAME": self.pod_name,
        }
        env.update(podspec.service_env(self.cfg.api_host, self.cfg.api_port))
        env.update(self.cfg.extra_env)
        return env

    def _start(self, run: ContainerRun) -> bool:
        """Start one container; False if the pod is being stopped meanwhile."""
        while True:
            if self._should_stop():
                return False
            try:
                spec_file = self._write_launch_spec(run)
                break
            except podspec.ConfigError as exc:
                self._config_wait([run], str(exc))
        log_path = self.log_dir / f"{run.name}.log"
        run.log_path = log_path
        argv = [*SANDBOX, sys.executable, "-I", "-S", LAUNCH, str(spec_file)]
        with log_path.open("ab") as out:
            run.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env={},
                start_new_session=True,
            )
        run.container_id = f"nodeagent://{uuid.uuid4().hex}"
        run.started_at = now_rfc3339()
        log.info("pod %s/%s: started %s (pid %d)", self.ns, self.pod_name, run.name, run.proc.pid)
        threading.Thread(
            target=self._reap, args=(run,), name=f"reap-{run.name}", daemon=True
        ).start()
        return True

    def _write_launch_spec(self, run: ContainerRun) -> Path:
        ctx = podspec.EnvContext(
            pod=self.pod,
            resolver=_Resolver(self.client),
            host_ip=self.cfg.host_ip,
            allocatable=dict(self.cfg.allocatable),
        )
        env = podspec.container_env(run.spec, ctx, self._base_env())
        env.setdefault("HOME", "/root")
        argv = podspec.container_argv(run.spec, env, argoexec=self.cfg.argoexec)
        mounts = self._mounts(run.spec, env)
        cdir = self.pod_dir / "containers"
        cdir.mkdir(parents=True, exist_ok=True)
        term = cdir / f"{run.name}.termination-log"
        term.write_bytes(b"")
        run.term_log = term
        target = run.spec.get("terminationMessagePath") or "/dev/termination-log"
        spec = {
            "argv": argv,
            "env": env,
            "cwd": run.spec.get("workingDir") or self.cfg.default_workdir,
            "mounts": mounts,
            "termination_log": {"source": str(term), "target": target},
            "keep": self._image_paths(),
        }
        path = cdir / f"{run.name}.json"
        path.write_text(json.dumps(spec))
        path.chmod(0o600)
        return path

    def _image_paths(self) -> list[str]:
        """The host directories that play the image: no volume may hide them."""
        return sorted(
            {
                str(self.cfg.workdir.resolve()),
                str(Path(self.cfg.venv_bin).resolve().parent),
                self.cfg.default_workdir,
                str(Path(self.cfg.argoexec).resolve().parent),
                sys.base_prefix,
            }
        )

    def _reap(self, run: ContainerRun) -> None:
        rc = run.wait_exit()
        code = 128 - rc if rc < 0 else rc
        if run.sent_kill and rc == 1:
            code = 137  # util-linux unshare cannot re-raise SIGKILL and exits 1 instead
        message = ""
        if run.term_log is not None:
            try:
                message = run.term_log.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
            except OSError:
                message = ""
        if (
            not message
            and code != 0
            and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = _tail(run.log_path)
        run.message = message
        run.reason = "Completed" if code == 0 else "Error"
        run.finished_at = now_rfc3339()
        run.exit_code = code
        log.info("pod %s/%s: %s exited %d", self.ns, self.pod_name, run.name, code)
        self.wake.set()

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every running container, SIGKILL what is left after the grace period."""
        running = [r for r in self.inits + self.mains if r.running]
        if not running:
            return
        for r in running:
            r.signal(signal.SIGTERM)
        end = time.monotonic() + grace
        while any(r.running for r in running) and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        for r in running:
            if r.running:
                r.signal(signal.SIGKILL)
        end = time.monotonic() + 10
        while any(r.running for r in running) and time.monotonic() < end:
            time.sleep(0.05)

    # -- status --------------------------------------------------------------------------------

    def _set_condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> None:
        cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        old = self._conditions.get(kind)
        if old and old["status"] == cond["status"]:
            cond["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            cond["lastTransitionTime"] = now_rfc3339()
        cond["lastProbeTime"] = None
        self._conditions[kind] = cond

    def build_status(self) -> dict[str, Any]:
        """The pod status a kubelet would post for the current state."""
        self._set_condition("PodReadyToStartContainers", bool(self.start_time))
        pending_inits = [r.name for r in self.inits if not (r.terminated and r.exit_code == 0)]
        if pending_inits:
            self._set_condition(
                "Initialized",
                False,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_inits)}]",
            )
        else:
            self._set_condition("Initialized", True)
        unready = [r.name for r in self.mains if not r.running]
        if self.phase in ("Succeeded", "Failed"):
            for kind in ("ContainersReady", "Ready"):
                self._set_condition(kind, False, "PodCompleted")
        elif unready:
            msg = f"containers with unready status: [{' '.join(unready)}]"
            for kind in ("ContainersReady", "Ready"):
                self._set_condition(kind, False, "ContainersNotReady", msg)
        else:
            for kind in ("ContainersReady", "Ready"):
                self._set_condition(kind, True)
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": list(self._conditions.values()),
            "hostIP": self.cfg.host_ip,
            "hostIPs": [{"ip": self.cfg.host_ip}],
            "podIP": self.cfg.host_ip,
            "podIPs": [{"ip": self.cfg.host_ip}],
            "containerStatuses": [r.status() for r in self.mains],
        }
        if self.inits:
            status["initContainerStatuses"] = [r.status() for r in self.inits]
        if self.start_time:
            status["startTime"] = self.start_time
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status

    def _publish(self) -> None:
        if self.removed or self.shutdown:
            return
        status = self.build_status()
        comparable = json.dumps(
            {k: v for k, v in status.items() if k != "conditions"}, sort_keys=True
        )
        if comparable == self._published:
            return
        body = {"metadata": {"uid": self.uid}, "status": status}
        try:
            self.client.patch(
                f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}/status", body, STRATEGIC
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                self.removed = True
                raise _Removed from exc
            log.warning("status of %s/%s: %s", self.ns, self.pod_name, exc)
            return
        self._published = comparable
        if self.phase in ("Succeeded", "Failed"):
            self.on_change()


def run_done(run: ContainerRun) -> Callable[[], bool]:
    """A predicate: the container has terminated."""
    return lambda: run.terminated


def _tail(path: Path | None, limit: int = 2048) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class _Resolver:
    """ConfigMaps and Secrets straight from the API server (no cache: pods start rarely)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise podspec.ConfigError(f"{kind} {namespace}/{name}: {exc}") from exc

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap or None."""
        return self._get("configmaps", namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret or None."""
        return self._get("secrets", namespace, name)
