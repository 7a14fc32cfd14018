"""Never a silently wrong value (issue 11): a file that would decode otherwise is refused.

Each test breaks one file of group m01 of a small variant archive (2 members x 2 years) the way
real archives drift — another scale_factor, another fill value, another compression — and runs
the real build. The scan must fail naming the file, the variable and the attribute; group m00
(good) is committed, and `main` holds no snapshot of group m01.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr
import yaml

from tests.archives import VARIANT_GROUP, copy_with_changes, write_variant_archive
from tests.conftest import write_spec
from tests.support.s3server import REGION, S3Server
from vcube import hdf, template, validate, workarea
from vcube.places import Places
from vcube.repo import history
from vcube.run_local import run_local
from vcube.scan import ScanError
from vcube.spec import DatasetSpec

VCUBE = [sys.executable, "-m", "vcube.cli"]
VICTIM = "m01/run.m01.2001.nc"  # not the template file, in the second commit group


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A good variant archive (2 members x 2 years), written once; tests copy it."""
    d = tmp_path_factory.mktemp("fidelity")
    _, raw = write_variant_archive(d / "archive", members=2, years=2, strings=True, group=True)
    return d / "archive", raw


def _spec_for(tmp_path: Path, root: Path, raw: dict[str, Any], **cube_keys: Any) -> DatasetSpec:
    raw = copy.deepcopy(raw)
    raw["source"]["root"] = str(root)
    raw["target"]["repo"] = str(tmp_path / "cube")
    raw["cube"].update(cube_keys)
    return write_spec(tmp_path / "spec.yaml", raw)[1]


def _built(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]], samples: int = 4, **cube_keys: Any
) -> DatasetSpec:
    """The variant archive built and validated (`samples` files compared) with these cube keys."""
    base, raw = variant
    spec = _spec_for(tmp_path, base, raw, **cube_keys)
    run_local(spec, workers=1, progress=False, samples=samples)
    return spec


def _broken(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]], **changes: Any
) -> tuple[Path, DatasetSpec]:
    """A copy of the archive whose VICTIM file has `changes` (see `copy_with_changes`)."""
    base, raw = variant
    root = tmp_path / "archive"
    shutil.copytree(base, root)
    victim = root / VICTIM
    good = victim.with_suffix(".good")
    victim.rename(good)
    copy_with_changes(good, victim, **changes)
    good.unlink()
    return root, _spec_for(tmp_path, root, raw)


def _template_refused(spec: DatasetSpec, *needles: str) -> str:
    """The real local build fails deriving the template from m00's file, naming every needle."""
    with pytest.raises(template.TemplateError) as err:
        run_local(spec, workers=1, progress=False)
    msg = str(err.value)
    for needle in ("m00/run.m00.2000.nc", *needles):
        assert needle in msg, msg
    return msg


def _assert_refused(spec: DatasetSpec, *needles: str) -> str:
    """The real local build fails on VICTIM naming every needle; m01 never reaches `main`."""
    with pytest.raises(ScanError) as err:
        run_local(spec, workers=1, progress=False)
    msg = str(err.value)
    assert VICTIM in msg, msg
    assert re.search(r"variable \w+", msg), msg
    for needle in needles:
        assert needle in msg, msg
    hist = history(Places.of(spec).repo(), spec.target.branch)
    assert "m01" not in hist.groups  # nothing of the bad group is committed
    assert "m00" in hist.groups  # the good group is: the refusal is per group, before commit
    return msg


# Attribute changes on virtual variables: (variable, {attribute: value}, expected text).
ATTRIBUTE_CASES = [
    ("sst", {"scale_factor": np.float32(0.02)}, "attribute scale_factor '0.02 (float32)'"),
    # the same number as float64: xarray would decode to float64 instead of float32
    ("sst", {"scale_factor": np.float64(0.01)}, "attribute scale_factor '0.01 (float64)'"),
    ("sst", {"add_offset": np.float32(14.0)}, "attribute add_offset '14.0 (float32)'"),
    ("sst", {"_Unsigned": "true"}, "attribute _Unsigned 'true' (template: absent)"),
    ("tas", {"_FillValue": np.float32(-999.0)}, "attribute _FillValue '-999.0 (float32)'"),
    ("tas", {"missing_value": np.float32(1e20)}, "attribute missing_value '1e+20 (float32)'"),
    ("tas", {"units": "degC"}, "attribute units 'degC' (template: 'K')"),
    ("tas", {"calendar": "noleap"}, "attribute calendar 'noleap' (template: absent)"),
    ("tas", {"valid_min": np.float32(0)}, "attribute valid_min '0.0 (float32)'"),
    ("tas", {"valid_max": np.float32(400)}, "attribute valid_max '400.0 (float32)'"),
    (
        "tas",
        {"valid_range": np.array([0, 400], np.float32)},
        "attribute valid_range '0.0 400.0 (float32)'",
    ),
]


@pytest.mark.parametrize(
    ("var", "attrs", "expect"), ATTRIBUTE_CASES, ids=[next(iter(c[1])) for c in ATTRIBUTE_CASES]
)
def test_an_attribute_that_changes_decoding_is_refused(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]], var: str, attrs: dict, expect: str
) -> None:
    _, spec = _broken(tmp_path, variant, attrs={var: attrs})
    msg = _assert_refused(spec, f"variable {var} ", expect)
    assert "every file must match it" in msg


@pytest.mark.parametrize(
    ("changes", "var", "expect"),
    [
        (
            {"encoding": {"tas": {"complevel": 6}}},
            "tas",
            "filters ['2 shuffle [4]', '1 deflate [6]']",
        ),
        ({"encoding": {"tas": {"shuffle": False}}}, "tas", "filters ['1 deflate [4]']"),
        # a plugin filter: zstd (id 32015) with its level as parameter
        (
            {"encoding": {"tas": {"zlib": False, "compression": "zstd", "complevel": 3}}},
            "tas",
            "'32015 ",
        ),
        ({"dtype": {"tas": "f8"}}, "tas", "dtype '<f8' (template: '<f4')"),
        ({"rename_dims": {"y": "lat"}}, "", "dims ["),
    ],
    ids=["deflate-level", "no-shuffle", "zstd", "dtype", "dim-name"],
)
def test_storage_that_decodes_otherwise_is_refused(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]], changes: dict, var: str, expect: str
) -> None:
    _, spec = _broken(tmp_path, variant, **changes)
    msg = _assert_refused(spec, expect, *([f"variable {var} "] if var else []))
    if "rename_dims" in changes:
        assert "'lat'" in msg and "(template: [" in msg


def test_static_inline_variable_in_other_units_is_refused(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    """`y` is written once, from the template file: a file that disagrees cannot be converted."""
    _, spec = _broken(tmp_path, variant, attrs={"y": {"units": "degrees"}})
    _assert_refused(spec, "variable y ", "attribute units 'degrees'")


def test_refusal_through_the_cli_is_one_line_exit_1(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    _, spec = _broken(tmp_path, variant, attrs={"sst": {"scale_factor": np.float32(0.02)}})
    spec_file = tmp_path / "spec.yaml"
    res = subprocess.run(
        [*VCUBE, "run", str(spec_file), "--workers", "1", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert VICTIM in last and "variable sst" in last and "attribute scale_factor" in last, last
    assert "m01" not in history(Places.of(spec).repo(), "main").groups


@pytest.mark.s3
def test_refusal_on_the_s3_build_path(
    s3_server: S3Server, tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    """Archive, repo and work area in S3: the same refusal, nothing of m01 committed."""
    root, _spec = _broken(tmp_path, variant, attrs={"sst": {"scale_factor": np.float32(0.02)}})
    archive = s3_server.create_bucket("fid-archive")
    cubes = s3_server.create_bucket("fid-cubes")
    s3_server.upload_dir(root, archive, "data")
    opts = {
        "endpoint": s3_server.endpoint,
        "region": REGION,
        "force_path_style": True,
        "allow_http": True,
    }
    raw = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    raw["source"] |= {"root": f"s3://{archive}/data/", "storage": opts}
    raw["target"] |= {"repo": f"s3://{cubes}/cube", "work": f"s3://{cubes}/work", "storage": opts}
    _, s3 = write_spec(tmp_path / "s3.yaml", raw)
    _assert_refused(s3, "variable sst ", "attribute scale_factor '0.02 (float32)'")


# --- strings, layouts that cannot be referenced, object types ---------------------------------


def _compare_all(spec: DatasetSpec, *, group: str | None = None) -> int:
    """Every variable of every file against the cube, raw and decoded; returns files compared."""
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    files = validate.planned_files(spec, plan)
    for kwargs in (validate.RAW, {}):
        with validate.open_cube(spec, **kwargs) as c:
            problems = validate.compare_files(spec, tmpl, c, files, include_static=True, **kwargs)
            # Decoded: Zarr's JSON attributes turn sst's float32 scale_factor into a Python
            # float, so the unpacked dtype differs (README, known limitations); nothing else.
            assert [p for p in problems if "sst is float64 in the cube" not in p] == []
    return len(files)


def test_variable_length_strings_are_inline_and_read_back(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    spec = _built(tmp_path, variant)
    tmpl = template.load_template(Places.of(spec).work)
    assert tmpl.variables["label"].kind == "inline"  # not listed: vlen strings are always inline
    assert tmpl.variables["station"].kind == "inline"
    assert _compare_all(spec) == 4
    with validate.open_cube(spec) as c, xr.open_dataset(variant[0] / VICTIM) as ref:
        got = c.label.sel(member="m01").isel(time=slice(12, 24)).values
        assert got.tolist() == ref.label.values.tolist()
        assert "é" in "".join(got.tolist())


def test_strings_listed_inline_work_too(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    spec = _built(tmp_path, variant, inline=["label", "station"])
    assert _compare_all(spec) == 4


def _add_dataset(path: Path, name: str, **kwargs: Any) -> None:
    """A dataset on the file's `y` dimension (netCDF4 readers and VirtualiZarr agree on it)."""
    with h5py.File(path, "a") as f:
        f.create_dataset(name, **kwargs).dims[0].attach_scale(f["y"])


def _compact(path: Path, name: str, values: np.ndarray) -> None:
    """A compact-layout dataset on `y`: the values live inside its object header."""
    with h5py.File(path, "a") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple(values.shape)
        h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_DOUBLE, space, dcpl=dcpl)
        f[name][...] = values
        f[name].dims[0].attach_scale(f["y"])


def _archive_with(tmp_path: Path, variant: tuple[Path, dict[str, Any]], edit: Any) -> Path:
    base, _ = variant
    root = tmp_path / "archive"
    shutil.copytree(base, root)
    for p in sorted(root.rglob("*.nc")):
        edit(p)
    return root


def test_compact_layout_is_refused_unless_inline(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    root = _archive_with(tmp_path, variant, lambda p: _compact(p, "weights", np.arange(5.0)))
    spec = _spec_for(tmp_path, root, variant[1])
    _template_refused(spec, "variable weights", "compact layout", "cube.inline")
    assert not Path(spec.target.repo).exists()  # refused before the repo was created
    spec = _spec_for(tmp_path, root, variant[1], inline=["weights"])
    run_local(spec, workers=1, progress=False, samples=4)
    with validate.open_cube(spec) as c:
        assert c.weights.values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_file_whose_variable_became_compact_is_refused(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    """The template stores `weights` contiguous; a later file has it compact."""

    def edit(p: Path) -> None:
        if p.as_posix().endswith(VICTIM):
            _compact(p, "weights", np.arange(5.0))
        else:
            _add_dataset(p, "weights", data=np.arange(5.0))

    root = _archive_with(tmp_path, variant, edit)
    spec = _spec_for(tmp_path, root, variant[1])
    _assert_refused(spec, "variable weights ", "layout 'compact' (template: 'contiguous')")


def test_object_references_are_refused_naming_the_fix(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    def edit(p: Path) -> None:
        with h5py.File(p, "a") as f:
            r = f.create_dataset("links", (2,), dtype=h5py.ref_dtype)
            r[0] = f["tas"].ref

    root = _archive_with(tmp_path, variant, edit)
    spec = _spec_for(tmp_path, root, variant[1])
    _template_refused(spec, "variable links", "object reference", "cube.drop")
    spec = _spec_for(tmp_path, root, variant[1], drop=["links", f"/{VARIANT_GROUP}"])
    run_local(spec, workers=1, progress=False, samples=4)


# --- netCDF4 groups ---------------------------------------------------------------------------


def test_groups_the_spec_does_not_mention_are_refused(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    base, raw = variant
    spec = _spec_for(tmp_path, base, raw, drop=[])
    _template_refused(spec, "'/ocean'", "cube.drop", "cube.file_group")


def test_a_group_in_one_later_file_is_refused(tmp_path: Path, variant: tuple[Path, dict]) -> None:
    """Only VICTIM has a group: the template passes, the scan of m01 refuses that file."""

    def edit(p: Path) -> None:
        if p.as_posix().endswith(VICTIM):
            with h5py.File(p, "a") as f:
                f.create_group("extra").create_dataset("secret", data=np.arange(3))

    root = _archive_with(tmp_path, variant, edit)
    spec = _spec_for(tmp_path, root, variant[1])  # drops /ocean, not /extra
    with pytest.raises(ScanError) as err:
        run_local(spec, workers=1, progress=False)
    msg = str(err.value)
    assert VICTIM in msg and "'/extra'" in msg, msg
    hist = history(Places.of(spec).repo(), "main")
    assert "m01" not in hist.groups and "m00" in hist.groups


def test_dropped_group_builds_the_root(tmp_path: Path, variant: tuple[Path, dict]) -> None:
    spec = _built(tmp_path, variant)  # the factory's spec drops /ocean
    with validate.open_cube(spec) as c:
        assert "thetao" not in c.variables
        assert "tas" in c.variables


def test_cube_from_one_group_reads_back_equal(tmp_path: Path, variant: tuple[Path, dict]) -> None:
    spec = _built(tmp_path, variant, file_group=VARIANT_GROUP, drop=[])
    assert _compare_all(spec) == 4
    with validate.open_cube(spec) as c:
        assert set(c.data_vars) == {"thetao"}
        assert dict(c.sizes) == {"member": 2, "time": 24, "depth": 3}
        with xr.open_dataset(variant[0] / VICTIM, group=VARIANT_GROUP) as ref:
            got = c.thetao.sel(member="m01").isel(time=slice(12, 24))
            xr.testing.assert_identical(got.drop_vars("member"), ref.thetao)


def test_file_group_that_a_file_lacks_is_refused(
    tmp_path: Path, variant: tuple[Path, dict]
) -> None:
    base, raw = variant
    spec = _spec_for(tmp_path, base, raw, file_group="atmos", drop=[])
    with pytest.raises(template.TemplateError, match=r"m00/run.m00.2000.nc: the file has no group"):
        run_local(spec, workers=1, progress=False)


# --- inline fill values -----------------------------------------------------------------------


def test_unwritten_inline_values_read_as_missing_not_zero(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    """A missing file leaves its inline places unwritten: they read as NaN / the source's own
    _FillValue / "", never as 0 (the files' HDF5 fill value for `time` is 0)."""
    base, raw = variant
    root = tmp_path / "archive"
    shutil.copytree(base, root)
    (root / VICTIM).unlink()
    spec = _spec_for(tmp_path, root, raw, inline=["tas", "label"])
    run_local(spec, workers=1, progress=False, allow_missing=True, samples=3)
    with validate.open_cube(spec) as c:
        hole = c.sel(member="m01").isel(time=slice(12, 24))
        assert np.isnan(hole.tas.values).all()  # tas's _FillValue, masked on decoding
        assert hole.label.values.tolist() == [""] * 12
        kept = c.sel(member="m01").isel(time=slice(0, 12))
        assert not np.isnan(kept.tas.values).any()
    with validate.open_cube(spec, **validate.RAW) as c:
        raw_hole = c.tas.sel(member="m01").isel(time=slice(12, 24)).values
        assert (raw_hole == np.float32(1e20)).all()
    tmpl = template.load_template(Places.of(spec).work)
    assert tmpl.variables["time"].zarr["fill_value"] == "NaN"  # the files say 0


def test_inline_fill_value_rules(tmp_path: Path) -> None:
    path = tmp_path / "fills.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("f_plain", data=np.zeros(2), fillvalue=0.0)
        f.create_dataset("i_plain", data=np.zeros(2, np.int32))
        f.create_dataset("i64_plain", data=np.zeros(2, np.int64))
        d = f.create_dataset("i_fill", data=np.zeros(2, np.int16))
        d.attrs["_FillValue"] = np.int16(-99)
        d = f.create_dataset("f_nanfill", data=np.zeros(2, np.float32))
        d.attrs["_FillValue"] = np.float32(np.nan)
        f.create_dataset("s", data=np.array(["a"], dtype=h5py.string_dtype()))
    with h5py.File(path) as f:
        fill = {k: hdf.inline_fill_value(f[k]) for k in f}
    assert fill == {
        "f_plain": "NaN",
        "i_plain": -2147483647,
        "i64_plain": -9223372036854775806,
        "i_fill": -99,
        "f_nanfill": "NaN",
        "s": "",
    }


def test_a_template_of_an_older_vcube_is_derived_again(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]]
) -> None:
    """Its fingerprints lack what is checked now: init derives it again, nothing is skipped."""
    spec = _built(tmp_path, variant, samples=0)
    work = Path(spec.target.work_url)
    doc = json.loads((work / workarea.TEMPLATE_KEY).read_text())
    del doc["format"]
    (work / workarea.TEMPLATE_KEY).write_text(json.dumps(doc))
    with pytest.raises(template.TemplateError, match="older vcube: run `vcube init` again"):
        template.load_template(Places.of(spec).work)
    run_local(spec, workers=1, progress=False, samples=4)
    assert template.load_template(Places.of(spec).work).format == template.TEMPLATE_FORMAT


@pytest.mark.parametrize(
    ("changes", "var", "expect"),
    [
        ({"attrs": {"sst": {"scale_factor": np.float32(0.02)}}}, "sst", "attribute scale_factor"),
        ({"attrs": {"sst": {"_FillValue": np.int16(-1)}}}, "sst", "attribute _FillValue"),
        ({"dtype": {"time": "f4"}}, "time", "dtype '<f4' (template: '<f8')"),
    ],
    ids=["packed-scale", "packed-fill", "time-dtype"],
)
def test_inline_differences_other_than_units_are_refused(
    tmp_path: Path, variant: tuple[Path, dict[str, Any]], changes: dict, var: str, expect: str
) -> None:
    """Inline values are copied, but a packed variable would still decode with the template's
    scale_factor, and another dtype would be cast: refused like a virtual variable."""
    root, _ = _broken(tmp_path, variant, **changes)
    spec = _spec_for(tmp_path, root, variant[1], inline=["sst"])
    msg = _assert_refused(spec, f"variable {var} ", expect)
    assert "every file must match it" not in msg  # the hint is for virtual variables


def test_inline_storage_may_differ(tmp_path: Path, variant: tuple[Path, dict[str, Any]]) -> None:
    """Inline values are read decoded by HDF5: another compression is not a difference."""
    root, _ = _broken(tmp_path, variant, encoding={"sst": {"complevel": 9, "shuffle": True}})
    spec = _spec_for(tmp_path, root, variant[1], inline=["sst"])
    run_local(spec, workers=1, progress=False, samples=4)
    assert _compare_all(spec) == 4
