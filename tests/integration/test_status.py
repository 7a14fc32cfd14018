"""`vcube status` per group and shard, `--plot` read back by its pixels, and `plan` handing out
only the groups that need work (issue 10). Real netCDF4 files, a real local Icechunk repo."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from vcube import status, steps
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec

VCUBE = [sys.executable, "-m", "vcube.cli"]
POLYGONS = 9
# The state each group is brought into; the counts differ, so a swapped colour shows.
EXPECTED = {
    "000": "committed",
    "001": "changed",
    "002": "committed",
    "003": "waiting",
    "004": "scanning",
    "005": "failed",
    "006": "committed",
    "007": "waiting",
    "008": "pending",
}


def _vcube(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    """`vcube ARGS` in a child process, stdout and stderr captured as text."""
    return subprocess.run([*VCUBE, *args], capture_output=True, text=True, check=check, **kw)


def _shard(group: str, date_index: int) -> str:
    return f"{group}-{('01', '04')[date_index]}"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSpec]:
    """A cube with a group in every state (2 shards per group)."""
    from tests.conftest import spec_dict, write_spec

    d = tmp_path_factory.mktemp("mixed")
    root = d / "archive"
    write_sample_archive(root, polygons=POLYGONS, dates=2, months=2, grid=(6, 5), levels=2)
    # A file that is not HDF5: the scan of its shard fails (and leaves an error marker).
    bad = sorted((root / "005" / "04").glob("*.nc"))[0]
    bad.write_bytes(b"not an HDF5 file")
    spec_file, spec = write_spec(d / "spec.yaml", spec_dict(str(root), str(d / "cube")))
    steps.plan_step(spec)
    steps.init_step(spec)
    for g in ("000", "001", "002", "006"):
        for i in (0, 1):
            steps.scan_step(spec, _shard(g, i))
        steps.commit_step(spec, g)
    # 001 changes after its commit: a file gets a new modification time, then a re-plan.
    changed = sorted((root / "001" / "01").glob("*.nc"))[0]
    st = changed.stat()
    os.utime(changed, (st.st_atime, st.st_mtime + 100))
    steps.plan_step(spec)
    for g in ("003", "007"):
        for i in (0, 1):
            steps.scan_step(spec, _shard(g, i))
    steps.scan_step(spec, _shard("004", 0))
    steps.scan_step(spec, _shard("005", 0))
    with pytest.raises(Exception, match=bad.name):
        steps.scan_step(spec, _shard("005", 1))
    return spec_file, spec


def test_status_per_group_and_shard(mixed: tuple[Path, DatasetSpec]) -> None:
    _, spec = mixed
    st = steps.status_step(spec)
    assert {g: e["state"] for g, e in st["groups"].items()} == EXPECTED
    assert st["counts"] == dict(Counter(EXPECTED.values()))
    g = st["groups"]
    assert g["004"]["shards"] == {"004-01": "scanned", "004-04": "pending"}
    assert g["005"]["shards"] == {"005-01": "scanned", "005-04": "failed"}
    assert "not a readable HDF5" in g["005"]["failed_shards"]["005-04"]
    # 001's old scan is stale (its file changed): pending again, the commit is the old one.
    assert g["001"]["shards"] == {"001-01": "pending", "001-04": "scanned"}
    assert g["001"]["snapshot"] and g["000"]["snapshot"]
    assert "snapshot" not in g["003"]


def test_plan_lists_only_the_groups_that_need_work(
    mixed: tuple[Path, DatasetSpec], tmp_path: Path
) -> None:
    spec_file, _ = mixed
    res = _vcube("plan", str(spec_file), "--outputs-dir", str(tmp_path))
    todo = [g for g, s in EXPECTED.items() if s != "committed"]
    assert json.loads(res.stdout)["todo"] == len(todo)
    assert json.loads(res.stdout)["groups"] == POLYGONS
    listed = json.loads((tmp_path / "groups.json").read_text())
    # Work items (vcube.packing): shards that have a result and little or nothing new to scan
    # are packed into one pod; those with no result (004-04, the failed 005-04, group 008) keep
    # a pod of their own, and 008, all of whose shards do, stays one item as a group.
    assert listed == [
        {
            "group": "p0000",
            "shards": [
                "001-01,001-04,003-01,003-04,004-01,005-01,007-01,007-04",
                "004-04",
                "005-04",
            ],
        },
        {"group": "008", "shards": ["008-01", "008-04"]},
    ]
    pods = [entry.split(",") for item in listed for entry in item["shards"]]
    assert sorted(s for pod in pods for s in pod) == [
        f"{g}-{m}" for g in todo for m in ("01", "04")
    ]


def test_plan_of_a_finished_cube_lists_no_group(built_sample: DatasetSpec, tmp_path: Path) -> None:
    """Nothing to do: `plan` hands out no group (the build is plan + init no-op + validate)."""
    from tests.conftest import spec_dict, write_spec

    src_repo = Path(built_sample.target.repo)
    shutil.copytree(src_repo, tmp_path / "cube")
    shutil.copytree(Path(built_sample.target.work_url), tmp_path / "cube.work")
    spec_file, _ = write_spec(
        tmp_path / "spec.yaml", spec_dict(built_sample.source.root, str(tmp_path / "cube"))
    )
    out = tmp_path / "out"
    res = _vcube("plan", str(spec_file), "--outputs-dir", str(out))
    assert json.loads(res.stdout)["todo"] == 0
    assert json.loads((out / "groups.json").read_text()) == []


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_plot_colours_count_the_groups_in_each_state(
    mixed: tuple[Path, DatasetSpec], tmp_path: Path
) -> None:
    from matplotlib.image import imread

    _, spec = mixed
    st = steps.status_step(spec)
    png = tmp_path / "status.png"
    geo = status.plot_status(st, png)
    assert _png_size(png) == geo["size"] == (1200, 420)
    pixels = (imread(png)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (420, 1200)
    by_colour = {c: s for s, c in status.COLOURS.items() if s != "scanned"}
    x0, y0, x1, y1 = geo["strip"]
    n = geo["groups"]
    assert n == POLYGONS
    assert tuple(pixels[y0 - 2, (x0 + x1) // 2]) == (255, 255, 255)  # the box is the strip's
    mid = (y0 + y1) // 2
    seen = [by_colour[tuple(pixels[mid, int(x0 + (i + 0.5) * (x1 - x0) / n)])] for i in range(n)]
    assert Counter(seen) == Counter(EXPECTED.values())
    assert seen == list(EXPECTED.values())  # in the plan's group order
    # The grid: one row per shard; group 004 has one scanned shard, 005 one failed.
    gx0, gy0, gx1, gy1 = geo["grid"]
    rows = geo["rows"]

    def cell(i: int, r: int) -> tuple[int, ...]:
        x = int(gx0 + (i + 0.5) * (gx1 - gx0) / n)
        y = int(gy0 + (r + 0.5) * (gy1 - gy0) / rows)
        return tuple(pixels[y, x])

    assert [cell(4, r) for r in range(rows)] == [
        status.COLOURS["scanned"],
        status.COLOURS["pending"],
    ]
    assert [cell(5, r) for r in range(rows)] == [
        status.COLOURS["scanned"],
        status.COLOURS["failed"],
    ]
    assert [cell(1, r) for r in range(rows)] == [
        status.COLOURS["changed"],
        status.COLOURS["scanned"],
    ]
    assert {cell(0, r) for r in range(rows)} == {status.COLOURS["committed"]}


def test_status_plot_from_the_cli(mixed: tuple[Path, DatasetSpec], tmp_path: Path) -> None:
    spec_file, _ = mixed
    png = tmp_path / "s.png"
    res = _vcube("status", str(spec_file), "--plot", str(png))
    assert json.loads(res.stdout)["plot"] == str(png)
    assert _png_size(png) == (1200, 420)
    assert "3 committed" in res.stderr


def test_plot_without_matplotlib_is_a_clear_usage_error(
    mixed: tuple[Path, DatasetSpec], tmp_path: Path
) -> None:
    """The worker's core install has no matplotlib: the message says which extra to install."""
    spec_file, _ = mixed
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('blocked for the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    res = _vcube("status", str(spec_file), "--plot", str(tmp_path / "x.png"), check=False, env=env)
    assert res.returncode == 2, res.stderr
    assert "vcube[plot]" in res.stderr
    assert not (tmp_path / "x.png").exists()
