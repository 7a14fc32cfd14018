"""Every environment variable the code reads is in the README's one table, and no other."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# os.environ["X"], os.environ.get("X"), env.get("X"), env["X"], setdefault("X", ...); ${X:-...}.
_PY = re.compile(
    r"""(?:environ|env)(?:\.get|\.setdefault|\.pop)?\(?\[?\s*["']([A-Z][A-Z0-9_]+)["']"""
)
_SH = re.compile(r"\$\{([A-Z][A-Z0-9_]+)[:}-]")
READERS = ["src", "workflows", "bench", "scripts", "tests/schemas.py", "Makefile"]


def _read_in_code() -> set[str]:
    names: set[str] = set()
    for top in READERS:
        root = REPO / top
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for f in files:
            if f.suffix == ".py":
                names |= set(_PY.findall(f.read_text()))
            elif f.suffix == ".sh" or f.name == "Makefile":
                names |= set(_SH.findall(f.read_text()))
    return names


def _documented() -> set[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Environment variables", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_every_variable_read_is_documented() -> None:
    missing = _read_in_code() - _documented()
    assert not missing, f"read in code but not in README's environment table: {sorted(missing)}"


def test_the_table_names_no_variable_nobody_reads() -> None:
    # AWS_* and KUBERNETES_SERVICE_* are read by the AWS and Kubernetes clients, not by us.
    ours = {n for n in _documented() if not n.startswith(("AWS_", "KUBERNETES_SERVICE_"))}
    unread = ours - _read_in_code()
    assert not unread, f"README's environment table lists variables nothing reads: {sorted(unread)}"
