"""A second archive shaped unlike the atlas builds correctly too.

Members come from the path (`values: path`), 12 time steps per file, two chunks per variable
per file, an int16 variable packed with scale_factor/add_offset.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.archives import variant_member, write_variant_archive
from tests.conftest import write_spec
from vcube import template, validate, workarea
from vcube.places import Places
from vcube.run_local import run_local


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("variant")
    files, raw = write_variant_archive(d / "archive", members=3, years=2, repo=d / "cube")
    _, spec = write_spec(d / "spec.yaml", raw)
    run_local(spec, workers=1, progress=False, samples=len(files))
    return spec, files


@pytest.mark.parametrize("decode", [False, True])
def test_every_variant_file_reads_back(variant, decode: bool) -> None:
    spec, files = variant
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    kwargs = {} if decode else validate.RAW
    compared = 0
    with validate.open_cube(spec, **kwargs) as cube:
        for pf in validate.planned_files(spec, plan):
            with validate.open_source_file(spec, pf.key, **kwargs) as ref:
                region = validate.file_region(spec, tmpl, pf.pos)
                problems = validate.compare_file(
                    cube, ref, region, pf.key, include_static=True, concat_dims=spec.cube.dim_names
                )
                if decode:
                    # Zarr attributes are JSON: scale_factor comes back as a Python float, so
                    # xarray unpacks int16 to float64 from the cube and to float32 from the
                    # file (VirtualiZarr's cubes behave the same). Same numbers otherwise.
                    assert problems == [
                        f"{pf.key}: sst is float64 in the cube, float32 in the file"
                    ]
                    got = cube.sst.isel({k: v for k, v in region.items() if k in cube.sst.dims})
                    np.testing.assert_allclose(got.values, ref.sst.values, rtol=1e-6)
                    assert np.array_equal(np.isnan(got.values), np.isnan(ref.sst.values))
                else:
                    assert problems == []
                compared += 1
    assert compared == len(files) == 6


def test_variant_layout(variant) -> None:
    spec, _ = variant
    tmpl = template.load_template(Places.of(spec).work)
    assert tmpl.blocks == {"member": 1, "time": 12}
    with validate.open_cube(spec) as cube:
        assert cube.sizes["member"] == 3
        assert cube.sizes["time"] == 24
        assert list(cube.member.values) == [variant_member(i) for i in range(3)]
        assert cube.tas.dims[:2] == ("member", "time")
        assert cube.tas.encoding["chunks"][:2] == (1, 6)  # two chunks per file along time
        assert "member" not in cube.cell_area.dims  # static: written once
        assert cube.sst.dtype == np.float64  # unpacked (see above)
    with validate.open_cube(spec, mask_and_scale=False) as raw:
        assert raw.sst.dtype == np.int16
        assert "scale_factor" in raw.sst.attrs
    times = np.asarray(validate.open_cube(spec).time.values)
    assert (np.diff(times.astype("datetime64[D]").astype(int)) > 0).all()
