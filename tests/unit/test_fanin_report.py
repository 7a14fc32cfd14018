"""The fan-in benchmark's pure parts: percentiles and the report section (no timing involved)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import fanin_report
from bench.fanin import percentile


def test_percentile_is_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 11)]
    assert percentile(xs, 50) == 5.0
    assert percentile(xs, 95) == 10.0
    assert percentile(list(reversed(xs)), 10) == 1.0
    assert percentile([3.0], 95) == 3.0


def _writers(n: int, per_min: float, rebases: int, failed: int) -> dict:
    return {
        "writers": n,
        "groups": 100,
        "committed": 100 - failed,
        "failed": [{"group": str(i)} for i in range(failed)],
        "commits_per_min": per_min,
        "rebases": rebases,
        "rebases_per_commit": {"p50": rebases / 100, "p95": rebases / 50},
        "max_rebases_one_commit": rebases // 10,
        "commit_wall_s": {"p50": 1.0, "p95": 2.0},
        "cpu_s_per_commit": 0.5,
    }


def test_section_states_the_decision_with_the_measured_numbers(tmp_path: Path) -> None:
    assert fanin_report.section(tmp_path) == []  # no run, no section
    res = {
        "command": "python -m bench.fanin",
        "code": "abc",
        "started_utc": "t0",
        "finished_utc": "t1",
        "latency_s": 0.02,
        "files_per_group": 720,
        "virtual_vars": 34,
        "inline_varying": ["time"],
        "machine": {"load_avg_1m_at_start": 12.0, "load_avg_1m_at_end": 9.0},
        "writers_1": _writers(1, 13.7, 0, 0),
        "writers_5": _writers(5, 23.3, 377, 0),
        "writers_25": _writers(25, 10.7, 1323, 11),
    }
    (tmp_path / "fanin.json").write_text(json.dumps(res))
    text = "\n".join(fanin_report.section(tmp_path))
    assert "24,480 refs" in text
    assert "| 25 | 89/100 | 11 | 10.7 | 1323 |" in text
    assert "25 concurrent writers made 10.7 commits/min against 13.7 for one writer" in text
    assert "11 groups given up" in text
    assert "5 writers: 23.3/min (1.7x one writer) for 3.8 rebases per commit" in text
