"""Planning from a listing alone: placement, shifted series, holes, surprises."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.conftest import spec_dict
from vcube import storage
from vcube.commit import checksum_of
from vcube.plan import PLAN_VERSION, Plan, PlanError, build_plan, pattern_regex
from vcube.spec import DatasetSpec
from vcube.storage import ObjectInfo

T = datetime(2026, 1, 1, tzinfo=UTC)


def _key(p: int, inj: int, k: int) -> str:
    y, m = divmod(inj - 1 + k, 12)
    return (
        f"{p:03d}/{inj:02d}/alk-forcing.{p:03d}-1999-{inj:02d}.pop.h.{347 + y:04d}-{m + 1:02d}.nc"
    )


def _listing(polygons=2, injs=(1, 4), months=3, drop=(), extra=()):
    keys = [_key(p, i, k) for p in range(polygons) for i in injs for k in range(months)]
    keys = [k for k in keys if k not in drop] + list(extra)
    return [ObjectInfo(k, 100, T, f'"{n}"') for n, k in enumerate(keys)]


SPEC = DatasetSpec.model_validate(spec_dict("/src", "/repo"))


def test_pattern_requires_repeated_fields_to_agree() -> None:
    rx = pattern_regex(SPEC.source.pattern)
    assert rx.match(_key(3, 4, 0)).groupdict() == {
        "polygon_id": "003",
        "injection_month": "04",
        "year": "0347",
        "month": "04",
    }
    assert rx.match("003/04/alk-forcing.004-1999-04.pop.h.0347-04.nc") is None


def test_shifted_series_line_up_by_elapsed_time() -> None:
    plan, shards = build_plan(SPEC, _listing())
    assert [d["length"] for d in plan.dims] == [2, 2, 3]
    assert plan.dims[0]["keys"] == ["000", "001"]
    assert plan.dims[2]["keys"] is None  # the series start at different months
    assert list(plan.groups) == ["000", "001"]
    assert plan.groups["000"] == ["000-01", "000-04"]
    apr = shards["001-04"]
    assert [p.pos for p in apr] == [(1, 1, 0), (1, 1, 1), (1, 1, 2)]
    assert apr[0].key.endswith("0347-04.nc")
    assert plan.n_files == 12 and plan.missing == [] and plan.unexpected == []


def test_numbers_sort_numerically() -> None:
    listing = [ObjectInfo(_key(p, 1, 0), 1, T, None) for p in (9, 10, 100)]
    plan, _ = build_plan(SPEC, listing)
    assert plan.dims[0]["keys"] == ["009", "010", "100"]


def test_missing_file_is_named_exactly() -> None:
    listing = _listing(drop=[_key(1, 4, 1)])
    with pytest.raises(PlanError) as e:
        build_plan(SPEC, listing)
    assert "polygon_id=001 injection_date=04 elapsed_time=0347-05" in str(e.value)
    assert "--allow-missing" in str(e.value)
    plan, shards = build_plan(SPEC, listing, allow_missing=True)
    assert plan.missing == ["polygon_id=001 injection_date=04 elapsed_time=0347-05"]
    assert [p.pos[2] for p in shards["001-04"]] == [0, 2]  # the hole stays in its place


def test_missing_injection_month_is_named() -> None:
    listing = [o for o in _listing() if not o.key.startswith("001/04/")]
    plan, _ = build_plan(SPEC, listing, allow_missing=True)
    assert len(plan.missing) == 3
    assert all(m.startswith("polygon_id=001 injection_date=04") for m in plan.missing)


def test_unexpected_keys_are_reported_not_fatal() -> None:
    plan, _ = build_plan(SPEC, _listing(extra=["README.md", "000/01/notes.txt"]))
    assert plan.unexpected == ["000/01/notes.txt", "README.md"]
    assert plan.n_files == 12


def test_nothing_matching_is_an_error() -> None:
    with pytest.raises(PlanError, match="no file under /src matches"):
        build_plan(SPEC, [ObjectInfo("x.txt", 1, T, None)])


def test_digests_change_with_a_file_version_only_for_its_group() -> None:
    a, _ = build_plan(SPEC, _listing())
    changed = _listing()
    changed[-1] = ObjectInfo(changed[-1].key, 100, T, '"new"')
    b, _ = build_plan(SPEC, changed)
    assert a.group_digest("000") == b.group_digest("000")
    assert a.group_digest("001") != b.group_digest("001")
    assert a.digest != b.digest


def test_two_files_in_one_place_is_an_error() -> None:
    spec = DatasetSpec.model_validate(
        spec_dict(
            "/src",
            "/repo",
            dims=[
                {"name": "polygon_id", "order_by": ["polygon_id"]},
                {"name": "injection_date", "order_by": ["injection_month"]},
                {"name": "elapsed_time", "order_by": ["year"]},
            ],
        )
    )
    with pytest.raises(PlanError, match="map to the same place"):
        build_plan(spec, _listing())


def test_a_file_keeps_its_etag_and_mtime_apart() -> None:
    """The ETag and the last-modified time are fields of their own; a store without ETags
    leaves the ETag empty and the mtime tells versions apart."""
    listing = _listing()
    listing[0] = ObjectInfo(listing[0].key, 100, T, None)
    _, shard_files = build_plan(SPEC, listing)
    files = {pf.key: pf for fs in shard_files.values() for pf in fs}
    first, other = files[listing[0].key], files[listing[1].key]
    assert (first.etag, first.last_modified, first.revision) == (None, T.isoformat(), T.isoformat())
    assert (other.etag, other.last_modified, other.revision) == ('"1"', T.isoformat(), '"1"')


@pytest.mark.parametrize(
    ("url", "etag", "want"),
    [
        ("s3://b/p", '"9f0c"', '"9f0c"'),
        # Unquoted and starting with digits (S3-compatible stores): still the ETag.
        ("s3://b/p", "2026abcd", "2026abcd"),
        ("s3://b/p", None, datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)),
        ("file:///data", '"9f0c"', datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)),
    ],
)
def test_checksum_is_the_etag_on_s3_else_the_mtime(
    url: str, etag: str | None, want: object
) -> None:
    """Icechunk checks the ETag on S3 and the mtime (rounded up to whole seconds) on local disk
    or when the store gives no ETag."""
    mtime = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC).isoformat()
    assert checksum_of(storage.resolve(url), etag, mtime) == want


def test_a_plan_of_another_format_asks_for_a_re_plan() -> None:
    plan, _ = build_plan(SPEC, _listing())
    raw = json.loads(plan.to_json())
    assert Plan.from_json(plan.to_json()) == plan
    raw["version"] = PLAN_VERSION - 1
    with pytest.raises(PlanError, match="re-plan"):
        Plan.from_json(json.dumps(raw).encode())
