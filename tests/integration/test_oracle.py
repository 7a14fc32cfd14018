"""VirtualiZarr is the oracle: its own recipe on the same files gives the same cube as vcube."""

from __future__ import annotations

from pathlib import Path

import icechunk
import pytest
import xarray as xr

from tests.support import reference
from vcube import validate
from vcube.spec import DatasetSpec


def _virtualizarr_cube(spec: DatasetSpec) -> icechunk.Repository:
    root = Path(spec.source.root)
    urls = [p.as_uri() for p in sorted(root.rglob("*.nc"))]
    with xr.open_dataset(urls[0].removeprefix("file://")) as first:
        scalars = [str(k) for k, v in first.variables.items() if v.ndim == 0]
    loadable = [*spec.cube.inline, *spec.cube.dim_names, *scalars]
    vds = reference.open_virtual(root, urls, loadable)
    repo = reference.create_repo(root, icechunk.in_memory_storage())
    session = repo.writable_session("main")
    vds.vz.to_icechunk(session.store)
    session.commit("VirtualiZarr recipe")
    return repo


@pytest.fixture(scope="module")
def oracle(built_sample: DatasetSpec) -> icechunk.Repository:
    return _virtualizarr_cube(built_sample)


@pytest.mark.parametrize("decode_times", [False, True])
def test_same_cube_as_virtualizarr(
    built_sample: DatasetSpec, oracle: icechunk.Repository, decode_times: bool
) -> None:
    repo = oracle
    theirs = xr.open_zarr(
        repo.readonly_session("main").store, consolidated=False, decode_times=decode_times
    )
    with validate.open_cube(built_sample, decode_times=decode_times) as ours:
        assert dict(ours.sizes) == dict(theirs.sizes)
        assert set(ours.coords) == set(theirs.coords)
        assert set(ours.data_vars) == set(theirs.data_vars)
        assert len(ours.data_vars) == 34
        assert len(ours.coords) == 64
        xr.testing.assert_identical(ours.load(), theirs[list(ours.variables)].load())
