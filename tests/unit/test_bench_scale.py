"""The numbers the README's "Scale" section claims, computed where they come from."""

from __future__ import annotations

import json

import pytest

from bench import scale
from bench.scale import ARGO_MAX_WORKFLOW_SIZE, ATLAS_GROUPS, measure


@pytest.fixture(scope="module")
def atlas() -> scale.ScaleReport:
    return measure(ATLAS_GROUPS)


def test_node_counts_follow_the_dag_shape(atlas: scale.ScaleReport) -> None:
    assert atlas.single.nodes == scale.expected_node_count("single", ATLAS_GROUPS, 4) == 8288
    assert atlas.parent.nodes == scale.expected_node_count("parent", ATLAS_GROUPS, 4) == 1388
    assert atlas.child.nodes == scale.expected_node_count("child", 1, 4) == 12
    assert len(scale.single_workflow_nodes(3, 2)) == scale.expected_node_count("single", 3, 2)


def test_submitted_workflow_and_plan_output_stay_small(atlas: scale.ScaleReport) -> None:
    # The submitted object is a template reference plus two parameters, whatever the size.
    assert atlas.submitted_workflow_bytes < 1024
    # plan's groups output: ids only, ~70 B per group -> 48 kB for the atlas.
    assert atlas.groups_json_bytes == 48_300
    assert atlas.groups_json_bytes == len(json.dumps(scale.atlas_groups()))
    assert atlas.groups_json_bytes < ARGO_MAX_WORKFLOW_SIZE / 20


def test_one_workflow_for_the_atlas_would_be_too_close_to_the_limit(
    atlas: scale.ScaleReport,
) -> None:
    single = atlas.single
    assert 900 < single.bytes_per_node < 1100
    assert 8_000_000 < single.status_nodes_bytes < 9_000_000  # ~8.4 MB raw
    # Even gzip-compressed it takes ~82 % of the 1 MiB object: no room for retries/growth.
    assert 0.75 < single.fraction_of_limit < 0.9


def test_the_split_keeps_every_object_far_below_the_limit(atlas: scale.ScaleReport) -> None:
    assert atlas.parent.fraction_of_limit < 0.25  # ~17 %
    assert atlas.child.fraction_of_limit < 0.03  # ~17 kB


@pytest.mark.slow
def test_headroom_claims() -> None:
    # One workflow breaks at ~840 groups; the parent of the split design at ~4 200.
    assert measure(800).single.stored_bytes <= ARGO_MAX_WORKFLOW_SIZE
    assert measure(900).single.stored_bytes > ARGO_MAX_WORKFLOW_SIZE
    assert measure(4000, single=False).parent.stored_bytes <= ARGO_MAX_WORKFLOW_SIZE
    assert measure(4500, single=False).parent.stored_bytes > ARGO_MAX_WORKFLOW_SIZE
