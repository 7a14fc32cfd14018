"""Container launcher of the node agent (test infrastructure); stdlib only, run by path.

The agent starts ``unshare --mount --propagation private --pid --fork --mount-proc`` around
``python -I -S launch.py SPEC.json``. Here, as PID 1 of the container's new PID namespace and in
its private mount namespace, this script bind-mounts the container's volumes at their mount
paths, then replaces itself (exec) by the container's command, which thereby becomes PID 1: when
it dies, the kernel kills everything else in the namespace, so a container leaves no process
behind. Mount points that do not exist yet are created on the host file system (empty
directories or files; the bind mounts themselves stay private to this namespace).

The host's file system plays the image, so a volume mounted over an ancestor of a host path the
container needs (an emptyDir at /tmp over a checkout under /tmp: the venv, the pod's volumes) would
hide it, where a real image keeps its own /app. Every source is therefore opened before the first
mount and bound through /proc/self/fd, and each "keep" path (the image's directories) that a
mount shadows is bound back at its own path right after that mount.

SPEC.json: {"argv": [...], "env": {...}, "cwd": "/", "mounts": [{"source", "target",
"read_only"}], "termination_log": {"source", "target"} | null, "keep": [path, ...]}
"""

import contextlib
import ctypes
import json
import os
import sys
from pathlib import Path

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source, target, flags):
    if _libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _ensure_target(target, source_is_dir):
    path = Path(target)
    if source_is_dir and path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
        path.unlink()  # an empty file made for a file volume earlier: this one is a directory
    if path.is_symlink() or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if source_is_dir:
        path.mkdir(exist_ok=True)
    else:
        path.touch()


def bind(source, target, read_only):
    """Bind source at target (recursively), read-only if asked."""
    _ensure_target(target, Path(source).is_dir())
    _mount(source, target, MS_BIND | MS_REC)
    if read_only:
        _mount(source, target, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


def _pinned(path):
    """A path to what `path` names now that stays valid when a later mount hides `path`."""
    return f"/proc/self/fd/{os.open(path, os.O_PATH)}"


def _under(path, ancestor):
    ancestor = ancestor.rstrip("/") or "/"
    return ancestor in ("/", path) or path.startswith(ancestor + "/")


def mount_all(mounts, term, keep):
    """Bind the volumes in depth order; bind back each kept host path a mount has hidden."""
    mounts = sorted(mounts, key=lambda m: m["target"].rstrip("/").count("/"))
    keep = sorted({k.rstrip("/") for k in keep if k.rstrip("/")})
    keep = [k for k in keep if not any(o != k and _under(k, o) for o in keep)]
    pinned = [(m, _pinned(m["source"])) for m in mounts]
    kept = {k: _pinned(k) for k in keep if Path(k).exists()}
    term_pin = _pinned(term["source"]) if term else None
    for m, pin in pinned:
        target = m["target"].rstrip("/") or "/"
        bind(pin, target, bool(m.get("read_only")))
        for k, kept_pin in kept.items():
            if k != target and _under(k, target):
                bind(kept_pin, k, False)
    return term_pin


def _fail(spec, message, code):
    sys.stderr.write(f"nodeagent launch: {message}\n")
    term = spec.get("termination_log") if isinstance(spec, dict) else None
    if term:
        with contextlib.suppress(OSError):
            Path(term["source"]).write_text(message)
    sys.stderr.flush()
    os._exit(code)


def main():
    """Mount, chdir, exec."""
    spec = {}
    try:
        spec = json.loads(Path(sys.argv[1]).read_text())
        term = spec.get("termination_log")
        term_pin = mount_all(spec.get("mounts") or [], term, spec.get("keep") or [])
        if term:
            try:
                bind(term_pin, term["target"], False)
            except OSError as exc:  # no mount point (read-only /dev): messages are lost, run anyway
                sys.stderr.write(f"nodeagent launch: no termination log: {exc}\n")
                spec["termination_log"] = None
        cwd = spec.get("cwd") or "/"
        Path(cwd).mkdir(parents=True, exist_ok=True)
        os.chdir(cwd)
    except Exception as exc:
        _fail(spec, f"cannot set up the container: {exc}", 128)
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as exc:
        _fail(spec, f"exec {argv[0]!r}: {exc.strerror}", 127 if exc.errno == 2 else 126)


if __name__ == "__main__":
    main()
