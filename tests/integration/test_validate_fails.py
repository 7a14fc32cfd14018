"""`vcube validate` can fail: on cubes broken on purpose it names each problem (issue 11).

A good variant cube is built once; each test copies its Icechunk repo and work area, breaks the
copy by writing refs or metadata straight into it (one extra commit on `main`), and validates.
The value comparison is switched off (`samples=0`) where the point is that the structural checks
alone see the damage, and on where the sampled values must show it too.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from tests.archives import write_variant_archive
from tests.conftest import write_spec
from vcube import template, validate, workarea
from vcube.places import Places
from vcube.run_local import run_local
from vcube.spec import DatasetSpec

VCUBE = [sys.executable, "-m", "vcube.cli"]
A = "m00/run.m00.2000.nc"  # tas chunks 0/0/0/0 and 0/1/0/0 (two chunks per file along time)
B = "m01/run.m01.2001.nc"  # tas chunks 1/2/0/0 and 1/3/0/0


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    d = tmp_path_factory.mktemp("validate-good")
    _, raw = write_variant_archive(d / "archive", members=2, years=2, repo=d / "cube")
    _, spec = write_spec(d / "spec.yaml", raw)
    run_local(spec, workers=1, progress=False, samples=4)
    return d, raw


def _copy_of(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, DatasetSpec]:
    """The good cube's repo and work area copied; the copy reads the same source files."""
    d, raw = good
    shutil.copytree(d / "cube", tmp_path / "cube")
    shutil.copytree(d / "cube.work", tmp_path / "cube.work")
    raw = copy.deepcopy(raw)
    raw["target"]["repo"] = str(tmp_path / "cube")
    return write_spec(tmp_path / "spec.yaml", raw)


def _break(spec: DatasetSpec, damage: Callable[[Any], None]) -> None:
    """Apply `damage` to a writable store of `main` and commit it (not a vcube commit)."""
    session = Places.of(spec).repo().writable_session("main")
    damage(session.store)
    session.commit("damage for a test", metadata={"test": "broken"})


def _refs(store: Any) -> dict[str, tuple[str, int, int, int]]:
    return validate.cube_refs(store, ["tas"])


def _set(store: Any, key: str, ref: tuple[str, int, int, int]) -> None:
    store.set_virtual_ref(key, ref[0], offset=ref[1], length=ref[2])


def _validate(spec: DatasetSpec, *, samples: int) -> list[str]:
    plan = workarea.load_plan(Places.of(spec).work, spec)
    tmpl = template.load_template(Places.of(spec).work)
    with pytest.raises(validate.ValidationFailed) as err:
        validate.validate_cube(spec, plan, tmpl, samples=samples)
    return err.value.problems


def _has(problems: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in problems)


def test_the_intact_copy_validates(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Control: the copy itself is fine, so each failure below comes from its damage."""
    _, spec = _copy_of(good, tmp_path)
    plan = workarea.load_plan(Places.of(spec).work, spec)
    # validate_cube raises ValidationFailed on any problem; the summary says what it covered.
    summary = validate.validate_cube(
        spec, plan, template.load_template(Places.of(spec).work), samples=4
    )
    assert summary["committed"] == summary["groups"] == len(plan.groups)
    assert summary["files_compared"] == 4


def test_refs_swapped_between_two_files(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, spec = _copy_of(good, tmp_path)

    def swap(store: Any) -> None:
        refs = _refs(store)
        a, b = refs["tas/c/0/0/0/0"], refs["tas/c/1/2/0/0"]
        _set(store, "tas/c/0/0/0/0", b)
        _set(store, "tas/c/1/2/0/0", a)

    _break(spec, swap)
    problems = _validate(spec, samples=0)
    assert _has(problems, f"{A}: chunk tas/c/0/0/0/0 points to {B} bytes"), problems
    assert _has(problems, f"{B}: chunk tas/c/1/2/0/0 points to {A} bytes"), problems
    assert len(problems) == 2, problems
    # The sampled values see it too, file and variable named.
    problems = _validate(spec, samples=4)
    assert _has(problems, f"{A}: tas differs in"), problems
    assert _has(problems, f"{B}: tas differs in"), problems


def test_a_ref_shifted_by_one_position(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """A's second chunk lands one step later (where B's member-0 sibling file starts)."""
    _, spec = _copy_of(good, tmp_path)

    def shift(store: Any) -> None:
        refs = _refs(store)
        _set(store, "tas/c/0/2/0/0", refs["tas/c/0/1/0/0"])
        sync(store.delete("tas/c/0/1/0/0"))

    _break(spec, shift)
    problems = _validate(spec, samples=0)
    assert _has(problems, f"{A}: chunk tas/c/0/1/0/0 is missing from the cube"), problems
    sibling = "m00/run.m00.2001.nc"
    assert _has(problems, f"{sibling}: chunk tas/c/0/2/0/0 points to {A} bytes"), problems
    assert len(problems) == 2, problems


def test_an_attribute_changed(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, spec = _copy_of(good, tmp_path)
    proto = default_buffer_prototype()

    def edit(store: Any) -> None:
        for name, attr, value in (("tas", "units", "degC"), ("sst", "scale_factor", 0.02)):
            doc = json.loads(sync(store.get(f"{name}/zarr.json", prototype=proto)).to_bytes())
            doc["attributes"][attr] = value
            sync(store.set(f"{name}/zarr.json", proto.buffer.from_bytes(json.dumps(doc).encode())))

    _break(spec, edit)
    problems = _validate(spec, samples=0)
    assert _has(problems, "tas: attribute units is 'degC' in the cube, 'K' in the template")
    assert _has(problems, "sst: attribute scale_factor is 0.02 in the cube"), problems
    assert len(problems) == 2, problems
    problems = _validate(spec, samples=1)
    assert _has(problems, f"{A}: tas attributes differ"), problems


def test_a_missing_chunk(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, spec = _copy_of(good, tmp_path)
    _break(spec, lambda store: sync(store.delete("tas/c/1/3/0/0")))
    problems = _validate(spec, samples=0)
    assert problems == [f"{B}: chunk tas/c/1/3/0/0 is missing from the cube"]


def test_a_missing_chunk_in_a_big_cube_sample(
    good: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the size where every ref is compared, sampled shards are checked key by key."""
    monkeypatch.setattr(validate, "FULL_CHUNK_CHECK_LIMIT", 0)
    _, spec = _copy_of(good, tmp_path)
    _break(spec, lambda store: sync(store.delete("tas/c/1/3/0/0")))
    problems = _validate(spec, samples=0)
    assert problems == [f"{B}: chunk tas/c/1/3/0/0 is missing from the cube"]


def test_validate_cli_fails_naming_the_problem(
    good: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    spec_file, spec = _copy_of(good, tmp_path)
    _break(spec, lambda store: sync(store.delete("tas/c/1/3/0/0")))
    res = subprocess.run(
        [*VCUBE, "validate", str(spec_file), "--samples", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert f"{B}: chunk tas/c/1/3/0/0 is missing from the cube" in res.stderr


def test_an_inline_value_lost(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """One step of the inline `time` overwritten with its fill value (as a bad rebase would)."""
    _, spec = _copy_of(good, tmp_path)

    def lose(store: Any) -> None:
        arr = zarr.open_array(store, path="time", mode="r+")
        arr[13] = arr.metadata.fill_value

    _break(spec, lose)
    problems = _validate(spec, samples=0)
    # Both members' 2001 files hold that step.
    for key in ("m00/run.m00.2001.nc", B):
        assert _has(problems, f"{key}: time differs from the values its scan read in 1 of 12"), (
            problems
        )
    assert len(problems) == 2, problems
