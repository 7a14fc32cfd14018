"""Exit codes tell Argo what to retry: 3 when the store or the network failed, 1 only for the data.

Argo's retry expression (workflows/parts.py RETRY_TRANSIENT) retries exit 3 and never 1 or
2, so a storage failure reported as 1 ("not a readable HDF5 file") would fail a build that a
retry would finish, and a bad file reported as 3 would be retried for nothing. Every step is
run as the CLI, against the local S3 server behind a proxy that is then killed (connections
refused and reset, as when the server is gone).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.test_s3_build import s3_spec
from tests.support.faultproxy import FaultProxy
from tests.support.s3server import S3Server
from vcube import steps, storage, workarea
from vcube.places import Places
from vcube.spec import load_spec

VCUBE = [sys.executable, "-m", "vcube.cli"]
# obstore's and Icechunk's own retry budgets come first (tests/integration/test_s3_build.py
# measured 29-37 s for a commit); a step must then give up, not hang.
GIVE_UP_S = 180


@pytest.fixture(scope="module")
def s3_archive(s3_server: S3Server, sample_archive: Path) -> str:
    """The session's sample archive uploaded once: s3://<bucket>/data/..."""
    bucket = s3_server.create_bucket("exit-codes-archive")
    s3_server.upload_dir(sample_archive, bucket, "data")
    return bucket


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VCUBE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _finish(procs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int, str]]:
    """Exit code and last stderr line of each process, failing if one does not give up."""
    t0 = time.monotonic()
    results = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=max(1.0, GIVE_UP_S - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"`vcube {name}` still running {GIVE_UP_S} s after the server went")
        results[name] = (proc.returncode, err.strip().splitlines()[-1] if err.strip() else "")
    print({k: v[1][:200] for k, v in results.items()}, f"{time.monotonic() - t0:.0f} s")
    return results


@pytest.mark.slow
def test_every_step_exits_3_when_the_server_is_gone(
    s3_server: S3Server, s3_archive: str, tmp_path: Path
) -> None:
    """The sources go away (the work area and the cube stay up, so each step gets as far as
    reading source files: the HDF5 walk over S3, VirtualiZarr, xarray through Icechunk)."""
    cubes = s3_server.create_bucket("exit-codes")
    with FaultProxy("127.0.0.1", s3_server.port, lifetime=600) as proxy:
        path, spec = s3_spec(tmp_path / "spec.yaml", proxy.endpoint, s3_archive, cubes)
        raw = spec.model_dump(mode="json", exclude_none=True)
        raw["target"]["storage"]["endpoint"] = s3_server.endpoint
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        spec = load_spec(path)
        steps.plan_step(spec)
        steps.init_step(spec)
        plan = workarea.load_plan(Places.of(spec).work, spec)
        for sid in plan.shards:
            steps.scan_step(spec, sid)
        for gid in plan.groups:
            steps.commit_step(spec, gid)
        proxy.kill()
        results = _finish(
            {
                "plan": _start("plan", str(path)),
                "validate": _start("validate", str(path), "--samples", "1"),
            }
        )
        # A scan that must read its files again (its result is gone).
        last = sorted(plan.shards)[-1]
        storage.delete(Places.of(spec).work, workarea.result_key(last))
        results |= _finish({"scan": _start("scan", str(path), "--shard", last)})
    wrong = {k: v for k, v in results.items() if v[0] != 3}
    assert not wrong, f"expected exit 3 (storage unreachable) from every step: {wrong}"
    scan_err = results["scan"][1]
    assert "HDF5" not in scan_err, scan_err  # never blamed on the file


def test_a_file_that_is_not_hdf5_is_the_datas_fault_exit_1(
    s3_server: S3Server, s3_archive: str, tmp_path: Path
) -> None:
    """The same scan with the server up, on a file whose bytes are not HDF5: exit 1."""
    archive = s3_server.create_bucket("exit-codes-bad")
    src = s3_server.boto3_client()
    keys = s3_server.list_keys(s3_archive, "data/")
    # The last file: its group is not one of the layout shards that init scans.
    broken = keys[-1]
    for key in keys:
        body = src.get_object(Bucket=s3_archive, Key=key)["Body"].read()
        if key == broken:
            body = b"this is not an HDF5 file" + body[24:]
        s3_server.put_bytes(archive, key, body)
    cubes = s3_server.create_bucket("exit-codes-bad-cube")
    path, spec = s3_spec(tmp_path / "spec.yaml", s3_server.endpoint, archive, cubes)
    # A spec whose template is the broken file: init fails as data, naming it.
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["cube"]["template"] = broken.removeprefix("data/")
    bad_template = tmp_path / "spec-bad-template.yaml"
    bad_template.write_text(yaml.safe_dump(raw, sort_keys=False))
    for verb, code in (("plan", 0), ("init", 1)):
        r = subprocess.run(
            [*VCUBE, verb, str(bad_template)], capture_output=True, text=True, check=False
        )
        assert r.returncode == code, r.stderr
    assert broken.removeprefix("data/") in r.stderr
    # With the default (healthy) template, plan and init succeed; the broken file's scan fails
    # as data.
    for verb in ("plan", "init"):
        r = subprocess.run([*VCUBE, verb, str(path)], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr
    plan = workarea.load_plan(Places.of(spec).work, spec)
    _, polygon, month, *_ = broken.split("/")
    bad_shard = f"{polygon}-{month}"
    assert bad_shard in plan.shards
    r = subprocess.run(
        [*VCUBE, "scan", str(path), "--shard", bad_shard],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1, r.stderr
    assert "HDF5" in r.stderr and broken.removeprefix("data/") in r.stderr, r.stderr
