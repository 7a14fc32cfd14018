"""`validate` over S3 reads only the bytes it compares, never whole source files.

The archive is the sample's layout with the spec dropping the ten 3-D fields, which hold most
of every file's bytes (as in the atlas). Validating compares the variables the cube holds, so
what it fetches from the archive (the files' metadata, the compared values for the file side
and again for the cube side, the template's chunk index) must be a small part of the sampled
files' sizes. Downloading each sampled file whole fetched more than their sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import xarray as xr
import yaml

from tests.integration.test_s3_build import s3_spec
from tests.support.faultproxy import FaultProxy
from tests.support.s3server import S3Server
from vcube import validate
from vcube.run_local import run_local
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec, load_spec

# 3 files of ~16 MB: the 3-D fields are ~95% of the bytes, the 2-D fields ~4%.
GRID = (96, 80)
LEVELS = 60
# Measured 0.19 (fetched / sizes of the compared files); the whole-file download fetched 1.07.
MAX_FETCHED_FRACTION = 0.25


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validate-reads") / "archive"
    write_sample_archive(root, polygons=1, dates=1, months=3, grid=GRID, levels=LEVELS, seed=3)
    return root


def _three_d(path: Path) -> tuple[list[str], float]:
    """The 3-D fields of a sample file and the share of the file's bytes they hold."""
    with xr.open_dataset(path, decode_times=False) as ds:
        names = [str(n) for n, v in ds.variables.items() if {"elapsed_time", "z_t"} <= set(v.dims)]
    with h5py.File(path, "r") as f:
        stored = sum(f[n].id.get_storage_size() for n in names)
    return names, stored / path.stat().st_size


@pytest.fixture(scope="module")
def built(
    s3_server: S3Server, archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, DatasetSpec, str, FaultProxy]:
    """The archive in S3 behind a counting proxy, built with the 3-D fields dropped."""
    bucket = s3_server.create_bucket("validate-reads-archive")
    s3_server.upload_dir(archive, bucket, "data")
    cubes = s3_server.create_bucket("validate-reads-cubes")
    proxy = FaultProxy("127.0.0.1", s3_server.port, lifetime=900).start()
    d = tmp_path_factory.mktemp("validate-reads-spec")
    path, spec = s3_spec(d / "spec.yaml", proxy.endpoint, bucket, cubes)
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["cube"]["drop"] = _three_d(next(archive.rglob("*.nc")))[0]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(path)
    run_local(spec, workers=1, progress=False, samples=0)
    yield path, spec, bucket, proxy
    proxy.stop()


def test_validate_fetches_a_small_part_of_the_compared_files(
    archive: Path, built: tuple[Path, DatasetSpec, str, FaultProxy]
) -> None:
    path, _, bucket, proxy = built
    files = sorted(archive.rglob("*.nc"))
    _, share = _three_d(files[0])
    assert share > 0.8, "the dropped fields must hold most of the bytes for the bound to mean much"
    proxy.reset_stats()
    r = subprocess.run(
        [sys.executable, "-m", "vcube.cli", "validate", str(path), "--samples", str(len(files))],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files_compared"] == len(files)
    gets = proxy.stats.matching("GET", f"/{bucket}/")
    fetched = sum(g.body_bytes for g in gets)
    sizes = sum(f.stat().st_size for f in files)
    print(f"validate: {len(files)} files of {sizes} B, fetched {fetched} B in {len(gets)} GETs")
    assert fetched < MAX_FETCHED_FRACTION * sizes, (
        f"validate fetched {fetched} B of the archive for {len(files)} files of {sizes} B"
    )
    assert all(g.range is not None for g in gets), "validate must never GET a whole source file"


def test_a_file_read_over_s3_is_the_file(
    archive: Path, built: tuple[Path, DatasetSpec, str, FaultProxy]
) -> None:
    """Every variable and attribute, values as stored: what validate compares the cube with."""
    _, spec, _, _ = built
    key = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*.nc"))[-1]
    with (
        validate.open_source_file(spec, key, **validate.RAW) as remote,
        xr.open_dataset(archive / key, **validate.RAW) as local,
    ):
        xr.testing.assert_identical(remote.load(), local.load())


def test_a_missing_file_is_named(built: tuple[Path, DatasetSpec, str, FaultProxy]) -> None:
    _, spec, bucket, _ = built
    with (
        pytest.raises(FileNotFoundError, match=f"s3://{bucket}/data/nope.nc does not exist"),
        validate.open_source_file(spec, "nope.nc"),
    ):
        pass
