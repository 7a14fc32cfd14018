"""Shared fixtures: a small sample archive (real netCDF4 files) and spec files pointing at it."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("ICECHUNK_LOG", "error")  # before icechunk is imported: quiet tests

from vcube.sample import write_sample_archive
from vcube.spec import DatasetSpec, load_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SPEC = REPO_ROOT / "datasets" / "sample.yaml"
# Small but complete: every variable, the real chunking and codecs, shifted time series.
SMALL = {"polygons": 2, "dates": 2, "months": 3, "grid": (12, 10), "levels": 5, "seed": 1}


def spec_dict(root: str, repo: str, **cube: Any) -> dict[str, Any]:
    """datasets/sample.yaml with the source root, the repo and cube keys replaced."""
    raw = yaml.safe_load(SAMPLE_SPEC.read_text())
    raw = copy.deepcopy(raw)
    raw["source"]["root"] = str(root)
    raw["target"]["repo"] = str(repo)
    raw["cube"].update(cube)
    return raw


def write_spec(path: Path, raw: dict[str, Any]) -> tuple[Path, DatasetSpec]:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, load_spec(path)


def local_spec(tmp: Path, archive_dir: Path, name: str) -> Path:
    """datasets/sample.yaml on a local archive, its cube and work area in tmp: a spec file."""
    raw = spec_dict(str(archive_dir), str(tmp / f"{name}-cube"))
    raw["target"]["work"] = str(tmp / f"{name}-work")
    return write_spec(tmp / f"{name}.yaml", raw)[0]


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive") / "sample-archive"
    write_sample_archive(root, **SMALL)
    return root


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., tuple[Path, DatasetSpec]]:
    """`make_spec(root)` → (spec file, spec) with the repo and work area in tmp_path."""

    def make(root: Path | str, name: str = "spec", **cube: Any) -> tuple[Path, DatasetSpec]:
        return write_spec(
            tmp_path / f"{name}.yaml", spec_dict(str(root), str(tmp_path / f"{name}-cube"), **cube)
        )

    return make


@pytest.fixture(scope="session")
def built_sample(tmp_path_factory: pytest.TempPathFactory, sample_archive: Path) -> DatasetSpec:
    """The small sample built once by `vcube run` (read-only for tests: copy before changing)."""
    from vcube.run_local import run_local

    d = tmp_path_factory.mktemp("built")
    _, spec = write_spec(d / "spec.yaml", spec_dict(str(sample_archive), str(d / "cube")))
    run_local(spec, workers=2, progress=False)
    return spec
