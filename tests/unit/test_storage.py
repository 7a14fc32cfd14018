"""Locations: reading never creates anything; the first write makes a local directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcube import storage


def test_reads_of_an_absent_local_directory_leave_it_absent(tmp_path: Path) -> None:
    loc = storage.resolve(str(tmp_path / "work" / "area"))
    assert loc.absent
    with pytest.raises(FileNotFoundError, match=r"work/area/plan\.json"):
        storage.read_bytes(loc, "plan.json")
    assert not storage.exists(loc, "plan.json")
    storage.delete(loc, "plan.json")
    with pytest.raises(storage.StorageError, match="does not exist"):
        list(storage.list_objects(loc))
    assert not (tmp_path / "work").exists()


def test_the_first_write_makes_the_directory(tmp_path: Path) -> None:
    loc = storage.resolve(str(tmp_path / "work"))
    storage.write_bytes(loc, "shards/a.json", b"[]")
    assert not loc.absent
    assert storage.read_bytes(loc, "shards/a.json") == b"[]"
    assert storage.exists(loc, "shards/a.json")
    assert [o.key for o in storage.list_objects(loc)] == ["shards/a.json"]
    storage.delete(loc, "shards/a.json")
    assert not storage.exists(loc, "shards/a.json")


def test_first_line_of_an_error() -> None:
    assert storage.first_line(OSError("refused\nDebug source: {...}")) == "refused"
    assert storage.first_line(TimeoutError()) == "TimeoutError"
    assert storage.first_line(TimeoutError("  "), "") == ""
