"""README's "Repository layout" matches the tree: every vcube module named, every folder real."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _layout() -> dict[str, str]:
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Repository layout", 1)[1].split("```", 2)[1]
    rows = [line for line in block.splitlines() if line.strip()]
    return {line.split()[0]: line.split(None, 1)[1] for line in rows}


def test_every_module_of_the_package_is_listed() -> None:
    listed = set(_layout()["src/vcube/"].split())
    modules = {p.stem for p in (REPO / "src/vcube").glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (REPO / "src/vcube").iterdir() if (p / "__init__.py").is_file()}
    assert listed == modules, (
        f"README lists {sorted(listed - modules)} / misses {sorted(modules - listed)}"
    )


def test_every_listed_folder_exists() -> None:
    missing = [d for d in _layout() if not (REPO / d).is_dir()]
    assert not missing, f"README's layout names folders that do not exist: {missing}"
