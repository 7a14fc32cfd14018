"""Where did the cube's repo and commit code go? To `repo` and `commit`.

Spec-taking names kept only for bench/fanin.py and tests/cluster/ until they use
`places.Places`; nothing else imports this module.
"""

from __future__ import annotations

from typing import Any

import icechunk

from vcube import commit
from vcube.places import Places
from vcube.plan import Plan
from vcube.repo import History, history
from vcube.spec import DatasetSpec
from vcube.template import Template

__all__ = ["History", "history", "init_cube", "open_repo"]


def open_repo(spec: DatasetSpec, *, create: bool = False) -> icechunk.Repository:
    return Places.of(spec).repo(create=create)


def init_cube(
    spec: DatasetSpec, plan: Plan, template: Template, template_file: Any
) -> dict[str, Any]:
    return commit.init_cube(Places.of(spec), plan, template, template_file)
