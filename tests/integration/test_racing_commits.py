"""Racing commits of groups that cover different steps keep every value (real Icechunk on S3).

Group 001 lacks the later months, so the shared inline coordinate `time` gets values only from
group 000 there. Group 001's session starts from the init snapshot; group 000 commits while it
is writing. A rebase that kept "ours" would put 001's stale copy of the `time` chunk (fill
values where 000 wrote months 1 and 2) over 000's values.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import SMALL, spec_dict, write_spec
from tests.support.s3server import REGION, S3Server
from vcube import steps, template, validate, workarea
from vcube.commit import commit_group
from vcube.places import Places
from vcube.sample import write_sample_archive


def _opts(endpoint: str) -> dict[str, Any]:
    return {"endpoint": endpoint, "region": REGION, "force_path_style": True, "allow_http": True}


def test_racing_groups_over_different_steps_keep_every_value(
    s3_server: S3Server, make_bucket: Any, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    write_sample_archive(root, **{**SMALL, "months": 3})
    dropped = [
        p
        for p in root.rglob("*.nc")
        if p.parts[-3] == "001"
        and not p.name.endswith(
            ("-01.nc", "-04.nc")  # keep only the first month of each injection month's series
        )
    ]
    assert dropped
    for p in dropped:
        p.unlink()
    archive, cubes = make_bucket("archive"), make_bucket("cubes")
    s3_server.upload_dir(root, archive, "data")
    raw = spec_dict(f"s3://{archive}/data/", f"s3://{cubes}/cube")
    raw["source"]["storage"] = raw["target"]["storage"] = _opts(s3_server.endpoint)
    raw["target"]["work"] = f"s3://{cubes}/work"
    _, spec = write_spec(tmp_path / "spec.yaml", raw)

    steps.plan_step(spec, allow_missing=True)
    steps.init_step(spec)
    plan = workarea.load_plan(Places.of(spec).work, spec)
    assert len(plan.missing) == len(dropped)
    for sid in plan.shards:
        steps.scan_step(spec, sid)
    tmpl = template.load_template(Places.of(spec).work)

    # 000 commits (in another thread) after 001's session has started and before 001 commits.
    raced: list[dict[str, Any]] = []

    def commit_000_first(done: int, total: int) -> None:
        if raced:
            return
        t = threading.Thread(
            target=lambda: raced.append(commit_group(Places.of(spec), plan, tmpl, "000"))
        )
        t.start()
        t.join(timeout=120)

    second = commit_group(Places.of(spec), plan, tmpl, "001", on_file=commit_000_first)
    assert raced and raced[0]["changed"] and second["changed"]
    repo = Places.of(spec).repo()
    snaps = list(repo.ancestry(branch="main"))
    assert [s.metadata.get("group") for s in snaps[:2]] == ["001", "000"]

    files = validate.planned_files(spec, plan)
    with validate.open_cube(spec, **validate.RAW) as ds:
        problems = validate.compare_files(spec, tmpl, ds, files, **validate.RAW)
        time = np.asarray(ds.time.values)
    assert problems == []
    assert not np.isnan(time).any() and (time > 0).all()  # every month of every series is set
