"""Each virtual ref carries its file's checksum: the ETag on S3, the last-modified time on disk.

Icechunk checks it before reading a chunk, so a file replaced after the commit is never read
as if it were the one scanned. The two kinds are told apart by what each store offers: on S3
the same bytes uploaded again (a new time, the same ETag) still read; on local disk a file
whose time changed is refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import icechunk
import numpy as np
import pytest

from tests.conftest import SMALL
from tests.integration.test_s3_build import s3_spec
from tests.support.s3server import S3Server
from vcube import template, validate, workarea
from vcube.places import Places
from vcube.run_local import run_local
from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec

VAR = "DIC"  # a virtual variable that varies: one ref per file
CHANGED = "the checksum of the object owning the virtual chunk has changed"


def _read_file_region(spec: DatasetSpec, key: str) -> np.ndarray:
    """The values of VAR at `key`'s place, read through the cube (so through its ref)."""
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    pf = next(pf for pf in validate.planned_files(spec, plan) if pf.key == key)
    region = validate.file_region(spec, tmpl, pf.pos)
    with validate.open_cube(spec, **validate.RAW) as cube:
        v = cube[VAR]
        return np.asarray(v.isel({d: s for d, s in region.items() if d in v.dims}).values)


def _archive(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "archive"
    files = write_sample_archive(root, **{**SMALL, "polygons": 1, "dates": 1})
    return root, [p.relative_to(root).as_posix() for p in files]


def test_s3_refs_carry_the_etag(s3_server: S3Server, tmp_path: Path) -> None:
    root, keys = _archive(tmp_path)
    bucket = s3_server.create_bucket("checksums-archive")
    s3_server.upload_dir(root, bucket, "data")
    _, spec = s3_spec(
        tmp_path / "spec.yaml", s3_server.endpoint, bucket, s3_server.create_bucket("checksums")
    )
    run_local(spec, workers=1, progress=False, samples=0)
    same, changed = keys[-1], keys[-2]
    before = _read_file_region(spec, same)
    time.sleep(1.1)  # a later Last-Modified, to the second
    body = (root / same).read_bytes()
    s3_server.put_bytes(bucket, f"data/{same}", body)  # same bytes: same ETag, new time
    np.testing.assert_array_equal(_read_file_region(spec, same), before)
    body = bytearray((root / changed).read_bytes())
    body[-1] ^= 0xFF  # same size, another ETag
    s3_server.put_bytes(bucket, f"data/{changed}", bytes(body))
    with pytest.raises(icechunk.IcechunkError, match=CHANGED):
        _read_file_region(spec, changed)


def test_local_refs_carry_the_mtime(tmp_path: Path, make_spec) -> None:
    root, keys = _archive(tmp_path)
    _, spec = make_spec(root)
    run_local(spec, workers=1, progress=False, samples=0)
    same, changed = keys[-1], keys[-2]
    _read_file_region(spec, same)
    st = (root / changed).stat()
    os.utime(root / changed, (st.st_atime, st.st_mtime + 10))  # same bytes, a later time
    with pytest.raises(icechunk.IcechunkError, match=CHANGED):
        _read_file_region(spec, changed)
    _read_file_region(spec, same)
