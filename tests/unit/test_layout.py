"""Steps per file: positions from cumulative lengths, the same series in every commit group."""

from __future__ import annotations

import pytest

from tests.unit.test_plan import SPEC, _listing
from vcube.plan import Layout, PlanError, build_layout, build_plan

DIMS = SPEC.cube.dim_names  # polygon_id (commit_by), injection_date, elapsed_time


def _layout(lengths: dict[tuple[int, int], int]) -> tuple[Layout, dict[str, list]]:
    """A sample-shaped plan (2 polygons x 2 injection months x 3 months); `lengths` maps
    (injection position, month position) to a file's steps along elapsed_time (default 1)."""
    plan, shard_files = build_plan(SPEC, _listing())
    files = [
        (pf.key, pf.pos, [1, 1, lengths.get(pf.pos[1:], 1)])
        for sid in plan.layout_shards
        for pf in shard_files[sid]
    ]
    return build_layout(plan, DIMS, 0, files), shard_files


def test_layout_shards_cover_every_place_with_the_first_group() -> None:
    plan, _ = build_plan(SPEC, _listing())
    assert plan.layout_shards == plan.groups["000"]


def test_positions_are_cumulative_steps_per_series() -> None:
    layout, _ = _layout({(0, 0): 31, (0, 1): 28, (0, 2): 31, (1, 0): 30})
    assert layout.place(2, (1, 0, 2)) == (31 + 28, 31)
    assert layout.place(2, (0, 1, 1)) == (30, 1)  # the other series starts from its own files
    assert layout.place(0, (1, 0, 0)) == (1, 1)  # commit_by: one step per file
    assert layout.total("elapsed_time") == 90  # the longest series
    assert layout.lengths("elapsed_time") == {1, 28, 30, 31}
    assert [e[1:] for e in layout.entries("elapsed_time")][:3] == [
        (0, 31, False),
        (31, 28, False),
        (59, 31, True),
    ]


def test_every_group_must_have_the_same_steps() -> None:
    layout, shard_files = _layout({(0, 2): 5})
    other = next(pf for pf in shard_files["001-04"] if pf.pos[1:] == (1, 2))
    layout.check_file(other.key, other.pos, [1, 1, 1])
    with pytest.raises(PlanError, match=r"001-1999-04.*holds 2 steps along 'elapsed_time'"):
        layout.check_file(other.key, other.pos, [1, 1, 2])
    with pytest.raises(PlanError, match="along commit_by"):
        layout.check_file(other.key, other.pos, [2, 1, 1])


def test_disagreeing_files_at_one_place_are_refused() -> None:
    plan, shard_files = build_plan(SPEC, _listing())
    files = [(pf.key, pf.pos, [1, 1, 1]) for sid in plan.shards for pf in shard_files[sid]]
    files[-1] = (files[-1][0], files[-1][1], [1, 1, 2])
    with pytest.raises(PlanError, match="the series must line up"):
        build_layout(plan, DIMS, 0, files)
    files[-1] = (files[-1][0], files[-1][1], [3, 1, 1])
    with pytest.raises(PlanError, match="one length along commit_by"):
        build_layout(plan, DIMS, 0, files)


def test_layout_round_trips_through_json() -> None:
    layout, _ = _layout({(0, 0): 3})
    again = Layout.from_json(layout.to_json())
    assert again == layout and again.digest == layout.digest


def test_a_place_the_first_group_lacks_is_learnt_from_another_group() -> None:
    from tests.unit.test_plan import _key

    plan, shard_files = build_plan(SPEC, _listing(drop=[_key(0, 4, 2)]), allow_missing=True)
    assert plan.layout_shards == [*plan.groups["000"], "001-04"]
    files = [
        (pf.key, pf.pos, [1, 1, 7 if pf.pos[1:] == (1, 2) else 1])
        for sid in plan.layout_shards
        for pf in shard_files[sid]
    ]
    layout = build_layout(plan, DIMS, 0, files)
    assert layout.place(2, (0, 1, 2)) == (2, 7)  # learnt from polygon 001's file
