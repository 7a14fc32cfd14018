"""What does one step work on? The source, the work area and the repository, resolved once.

A step builds one `Places` from the spec and passes it down, so the locations are resolved once
and the Repository is opened once: `vcube run` builds one for the whole run (its in-process
commits share one Repository), each pod command builds its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import icechunk

from vcube import storage
from vcube.repo import open_repo
from vcube.spec import DatasetSpec


@dataclass
class Places:
    """What one step works on, resolved once from the spec and passed down."""

    spec: DatasetSpec
    source: storage.Location
    work: storage.Location
    target: storage.Location
    _repo: icechunk.Repository | None = field(default=None, repr=False)

    @classmethod
    def of(cls, spec: DatasetSpec | Places) -> Places:
        """Places of a spec; given Places, the same (so a step can take either)."""
        if isinstance(spec, Places):
            return spec
        return cls(
            spec=spec,
            source=storage.resolve(spec.source.root, spec.source.storage),
            work=storage.resolve(spec.target.work_url, spec.target.storage),
            target=storage.resolve(spec.target.repo, spec.target.storage),
        )

    def repo(self, *, create: bool = False) -> icechunk.Repository:
        """The cube's repository, opened on first use and then reused (a local build commits
        hundreds of groups from one process; a Repository per commit made each commit slower
        than the last)."""
        if self._repo is None:
            self._repo = open_repo(self.spec, self.source, self.target, create=create)
        return self._repo
