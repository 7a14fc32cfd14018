"""The spec model refuses what it cannot build, with messages that say what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import SAMPLE_SPEC, spec_dict
from vcube.spec import DatasetSpec, SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["sample.yaml", "oae-atlas.yaml"])
def test_committed_specs_are_valid(name: str) -> None:
    spec = load_spec(REPO / "datasets" / name)
    assert spec.cube.dim_names == ["polygon_id", "injection_date", "elapsed_time"]
    assert spec.source.fields == ["polygon_id", "injection_month", "year", "month"]


def test_atlas_spec_reads_anonymously_from_source_coop() -> None:
    spec = load_spec(REPO / "datasets" / "oae-atlas.yaml")
    assert spec.source.root == "s3://cworthy/oae-efficiency-atlas/data/experiments/"
    assert spec.source.storage.endpoint == "https://data.source.coop"
    assert spec.source.storage.anonymous is True
    assert spec.source.storage.region == "us-west-2"


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _error(tmp_path: Path, raw: dict) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(_write(tmp_path, raw))
    return str(e.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    raw = spec_dict("a", "b")
    raw["cube"]["chunking"] = "auto"
    assert "cube.chunking: Extra inputs are not permitted" in _error(tmp_path, raw)


def test_credentials_in_a_spec_are_refused(tmp_path: Path) -> None:
    raw = spec_dict("s3://bucket/x", "b")
    raw["source"]["storage"] = {"region": "us-west-2", "aws_secret_access_key": "x" * 40}
    msg = _error(tmp_path, raw)
    assert "must not contain credentials" in msg
    assert "x" * 40 not in msg


def test_order_by_must_use_pattern_fields(tmp_path: Path) -> None:
    raw = spec_dict("a", "b")
    raw["cube"]["dims"][2]["order_by"] = ["year", "day"]
    assert "order_by uses ['day']" in _error(tmp_path, raw)


def test_commit_by_must_be_a_shard_dim(tmp_path: Path) -> None:
    raw = spec_dict("a", "b", commit_by="elapsed_time")
    assert "a shard must lie inside one commit group" in _error(tmp_path, raw)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_digest_ignores_target_but_not_cube() -> None:
    a = DatasetSpec.model_validate(spec_dict("a", "repo1"))
    b = DatasetSpec.model_validate(spec_dict("a", "repo2"))
    c = DatasetSpec.model_validate(spec_dict("a", "repo1", drop=["DIC"]))
    assert a.digest() == b.digest() != c.digest()


def test_default_work_area_sits_next_to_the_repo() -> None:
    spec = load_spec(SAMPLE_SPEC)
    assert spec.target.work_url == "build/sample-cube.work"


def test_file_group_and_dropped_groups(tmp_path: Path) -> None:
    raw = spec_dict("a", "b", file_group="/model/ocean/", drop=["/atmos", "HT"])
    spec = load_spec(_write(tmp_path, raw))
    assert spec.cube.file_group == "model/ocean"
    assert spec.cube.dropped_groups == ["atmos"]
    assert spec.cube.dropped_variables == ["HT"]
    for bad in ("/", "a//b"):
        raw = spec_dict("a", "b", file_group=bad)
        assert "cube.file_group: file_group names a group inside the files" in _error(tmp_path, raw)
