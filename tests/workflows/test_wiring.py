"""The committed YAML, not the Python, builds the same cube as `vcube run`.

Walks the rendered DAGs of k8s/base/vcube-build*.yaml in dependency order and runs every
container's command (parameters substituted, withParam expanded from the previous step's real
output files, child workflows created from the resource template's manifest) on a small sample
archive; the resulting cube must equal the local executor's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import local_spec
from tests.workflows.argo_emulator import EmulationError, Emulator, NodeRecord
from workflows.parts import GROUP_TEMPLATE_NAME, TEMPLATE_NAME
from workflows.render import OUTPUT_DIR

VCUBE = Path(sys.executable).parent / "vcube"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _library() -> dict[str, dict[str, Any]]:
    return {
        name: yaml.safe_load((OUTPUT_DIR / f"{name}.yaml").read_text())
        for name in (TEMPLATE_NAME, GROUP_TEMPLATE_NAME)
    }


def _emulator(workdir: Path) -> Emulator:
    library = _library()
    return Emulator(library[TEMPLATE_NAME], workdir, library=library)


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    subprocess.run([*_sample_args(root), "--months", "3"], check=True, capture_output=True)
    return root


def _sample_args(root: Path) -> list[str]:
    return [
        *(str(VCUBE), "sample", str(root), "--polygons", "2", "--dates", "2"),
        *("--grid", "12x10", "--levels", "5"),
    ]


def _open(spec_path: Path) -> Any:
    import xarray as xr

    from vcube import spec
    from vcube.places import Places

    s = spec.load_spec(spec_path)
    session = Places.of(s).repo().readonly_session(s.target.branch)
    return xr.open_zarr(session.store, consolidated=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_outputs(nodes: list[NodeRecord]) -> None:
    for node in nodes:
        # Every output the YAML reads exists: no metric silently falls back to its default.
        assert node.defaulted_outputs == [], (node.task_path, node.defaulted_outputs)
        json.loads(node.outputs["summary"])
        for name, value in node.metrics.items():
            assert float(value) >= 0, (node.task_path, name, value)


@pytest.mark.slow
def test_rendered_dags_build_the_cube_vcube_run_builds_and_resume(
    sample_archive: Path, tmp_path: Path
) -> None:
    import xarray as xr

    argo_spec = local_spec(tmp_path, sample_archive, "argo")
    run_spec = local_spec(tmp_path, sample_archive, "local")

    # 1. A partial build (groups=000), as if the first submission had been cut short.
    first = _emulator(tmp_path / "first")
    first.run({"spec": str(argo_spec), "groups": "000"})
    # Emulated one task at a time: the committer runs after the scans, so it finds every
    # group complete and commits without waiting for scans-done (tests/cluster: side by side).
    assert [n.template for n in first.nodes] == [
        "plan",
        "init",
        "scan",
        "scan",
        "commit-all",
        "scans-done",
        "validate",
        "status",
    ]
    plan_groups = json.loads(first.nodes[0].outputs["groups"])
    assert plan_groups == [{"group": "000", "shards": ["000-01", "000-04"]}]
    # One child per group, named after the parent and the group, its spec inline.
    assert [c["metadata"]["name"] for c in first.children] == ["wf-g000"]
    assert all("workflowTemplateRef" not in c["spec"] for c in first.children)
    first_commit = json.loads(first.nodes[4].outputs["summary"])
    assert (first_commit["groups"], first_commit["committed"]) == (1, 1)
    _check_outputs(first.nodes)

    # 2. Re-submitting the whole build: plan hands out only the groups not committed with their
    # current inputs, so only group 001 is scanned and committed; 000 stays as committed.
    again = _emulator(tmp_path / "again")
    again.run({"spec": str(argo_spec)})
    _check_outputs(again.nodes)
    by_template: dict[str, list[NodeRecord]] = {}
    for node in again.nodes:
        by_template.setdefault(node.template, []).append(node)
    assert [n.template for n in again.nodes][:2] == ["plan", "init"]
    assert [n.template for n in again.nodes][-2:] == ["validate", "status"]
    assert json.loads(again.nodes[0].outputs["groups"]) == [
        {"group": "001", "shards": ["001-01", "001-04"]}
    ]
    assert sorted(n.display_name or "" for n in by_template["scan"]) == [
        "scan-001-01",
        "scan-001-04",
    ]
    (committer,) = by_template["commit-all"]
    assert committer.display_name == "commit-all"
    assert json.loads(committer.outputs["summary"])["committed"] == 1  # group 001 only
    assert committer.progress == "1/1"
    assert all(int(n.metrics["vcube_files_scanned"]) == 3 for n in by_template["scan"])
    assert int(committer.metrics["vcube_refs_committed"]) > 0
    # Scans report N/M progress.
    assert all(json.loads(n.outputs["summary"])["changed"] for n in by_template["scan"])
    assert all(n.progress == "3/3" for n in by_template["scan"])
    # validate exits 1 on any problem (the step would have failed): check what it covered.
    checked = json.loads(by_template["validate"][0].outputs["summary"])
    assert (checked["groups"], checked["committed"]) == (2, 2)  # polygons 000 and 001
    assert checked["files_compared"] > 0
    # The children carry the labels that tie them to their parent.
    for child in again.children:
        assert child["metadata"]["labels"]["vcube.io/parent-workflow"] == "wf"
    assert [c["metadata"]["name"] for c in again.children] == ["wf-g001"]
    # The exit handler drew the cube's state (the build's output artifact).
    (status_node,) = by_template["status"]
    picture = Path(json.loads(status_node.outputs["summary"])["plot"])
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # 3. Nothing left to do: plan and validate only (no init, scan or commit), then the picture.
    idle = _emulator(tmp_path / "idle")
    idle.run({"spec": str(argo_spec)})
    assert [n.template for n in idle.nodes] == ["plan", "validate", "status"]
    assert idle.nodes[0].outputs["todo"] == "0" and idle.children == []

    # `vcube status --workflow` still reports the cube when no cluster is reachable.
    status = subprocess.run(
        [str(VCUBE), "status", str(argo_spec), "--workflow", "vcube-build-x7k2p"],
        env={**os.environ, "ARGO_SERVER": f"127.0.0.1:{_closed_port()}", "ARGO_SECURE": "false"},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(status.stdout)
    assert report["counts"] == {"committed": 2}
    assert "cannot reach the Argo Server" in report["workflow"]["error"]

    # 4. The local executor builds an identical cube from the same archive.
    subprocess.run(
        [str(VCUBE), "run", str(run_spec), "--workers", "2", "--quiet"],
        check=True,
        capture_output=True,
    )
    xr.testing.assert_identical(_open(argo_spec), _open(run_spec))

    # 5. One new month in every series (issue 10, Done when 2, through the rendered YAML): plan
    # packs the four one-file shards into one scan pod of one work item (vcube.packing), fewer
    # scan pods than shards; only the new files are scanned, each group is committed once, and
    # the cube equals the local executor's refresh of the same archive.
    subprocess.run(
        [*_sample_args(sample_archive), "--months", "4"], check=True, capture_output=True
    )
    month = _emulator(tmp_path / "month")
    month.run({"spec": str(argo_spec)})
    _check_outputs(month.nodes)
    plan_out = month.nodes[0].outputs
    assert plan_out["todo"] == "2"  # groups, not work items
    assert json.loads(plan_out["groups"]) == [
        {"group": "p0000", "shards": ["000-01,000-04,001-01,001-04"]}
    ]
    assert [c["metadata"]["name"] for c in month.children] == ["wf-gp0000"]
    assert month.children[0]["metadata"]["annotations"] == {
        "workflows.argoproj.io/title": "work item p0000"
    }
    scans = [n for n in month.nodes if n.template == "scan"]
    assert len(scans) == 1  # one scan pod for the 4 shards
    assert scans[0].display_name == "scan-000-01-to-001-04"
    scanned = [json.loads(n.outputs["summary"]) for n in month.nodes if n.template == "init"]
    scanned += [json.loads(scans[0].outputs["summary"])]
    assert sum(s["files_scanned"] for s in scanned) == 4  # the new files only
    assert json.loads(scans[0].outputs["summary"])["files"] == 16
    (committer,) = [n for n in month.nodes if n.template == "commit-all"]
    assert json.loads(committer.outputs["summary"])["committed"] == 2
    subprocess.run(
        [str(VCUBE), "run", str(run_spec), "--workers", "2", "--quiet"],
        check=True,
        capture_output=True,
    )
    xr.testing.assert_identical(_open(argo_spec), _open(run_spec))


def test_emulator_refuses_unresolved_parameters(tmp_path: Path) -> None:
    library = _library()
    obj = library[TEMPLATE_NAME]
    obj["spec"]["templates"] = [
        t if t["name"] != "plan" else {**t, "container": {**t["container"], "args": ["{{nope}}"]}}
        for t in obj["spec"]["templates"]
    ]
    with pytest.raises(EmulationError, match="unresolved"):
        Emulator(obj, tmp_path, library=library).run({"spec": "x.yaml"})
