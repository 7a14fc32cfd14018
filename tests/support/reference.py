"""VirtualiZarr's own recipe on a local archive: the oracle vcube's cubes are compared with.

Used by tests/integration/test_oracle.py (one commit of the whole archive) and by
bench/end_to_end.py (one commit per polygon, timed). Nothing in vcube imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import icechunk


def _prefix(root: Path) -> str:
    return root.as_uri() + "/"


def credentials(root: Path) -> Any:
    """Authorization to read virtual chunks under the archive `root`."""
    local = icechunk.Credentials.LocalFileSystemAccess()
    return icechunk.containers_credentials({_prefix(root): local})


def create_repo(root: Path, storage: Any) -> icechunk.Repository:
    """A new repository whose virtual chunk container is the archive `root`."""
    cfg = icechunk.RepositoryConfig.default()
    cfg.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(_prefix(root), icechunk.local_filesystem_store(str(root)))
    )
    return icechunk.Repository.create(
        storage, config=cfg, authorize_virtual_chunk_access=credentials(root)
    )


def open_virtual(root: Path, urls: list[str], loadable: list[str]) -> Any:
    """`open_virtual_mfdataset` over files of the archive, combined by their coordinates."""
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_mfdataset
    from virtualizarr.parsers import HDFParser

    return open_virtual_mfdataset(
        urls,
        registry=ObjectStoreRegistry({_prefix(root): LocalStore(prefix=root)}),
        parser=HDFParser(),
        combine="by_coords",
        coords="minimal",
        compat="override",
        loadable_variables=loadable,
        decode_times=False,
    )
