"""Where do bytes live? Local directories and S3 prefixes behind one small interface.

Every URL in a spec (source root, Icechunk repo, work area) becomes a `Location`. The rest of
vcube lists, reads and writes through it, and asks it for the matching Icechunk storage and
virtual chunk container, so local and S3 runs share one code path. This module is the one
place (with the CLI) that looks at the environment: credentials come from the standard AWS
chain and are never part of a spec.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, S3Store

from vcube.spec import StorageOptions


class StorageError(RuntimeError):
    """An object store could not be reached or read; the message says which URL and why."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key relative to the location, size and version markers."""

    key: str
    size: int
    last_modified: datetime
    etag: str | None


@dataclass(frozen=True)
class Location:
    """A directory-like URL: `file:///abs/dir/` or `s3://bucket/prefix/` (always ends with '/')."""

    url: str
    options: StorageOptions

    @property
    def is_local(self) -> bool:
        return self.url.startswith("file://")

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise StorageError(f"{self.url} is not a local path")
        return Path(urllib.parse.unquote(self.url.removeprefix("file://")))

    @property
    def bucket(self) -> str:
        return self.url.removeprefix("s3://").split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket, without a trailing '/' ('' for a bucket root)."""
        return self.url.removeprefix("s3://").split("/", 1)[1].rstrip("/")

    def child(self, name: str) -> Location:
        return Location(self.url + name.strip("/") + "/", self.options)

    def url_of(self, key: str) -> str:
        """The full URL of an object, percent-encoding what a URL reserves (Icechunk wants that)."""
        return self.url + urllib.parse.quote(key, safe="/-_.~!$&'()*+,;=:@")

    @property
    def absent(self) -> bool:
        """A local directory that does not exist (yet): nothing to read, made by the first write."""
        return self.is_local and not self.local_path.is_dir()

    @cached_property
    def store(self) -> Any:
        """The obstore store rooted at this location (a local one needs its directory)."""
        if self.is_local:
            return LocalStore(prefix=self.local_path)
        o = self.options
        config: dict[str, Any] = {}
        if o.region:
            config["region"] = o.region
        if o.endpoint:
            config["endpoint"] = o.endpoint
        if o.anonymous:
            config["skip_signature"] = True
        if o.force_path_style:
            config["virtual_hosted_style_request"] = False
        client_options: dict[str, Any] = {"connect_timeout": "5s", "timeout": "60s"}
        if o.allow_http:
            client_options["allow_http"] = True
        retry = {
            "max_retries": 8,
            "retry_timeout": timedelta(seconds=60),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=8),
                "base": 2,
            },
        }
        return S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options=client_options,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
        )


def resolve(url: str, options: StorageOptions | None = None) -> Location:
    """Turn a spec URL or path into a Location; relative paths start at the current directory."""
    options = options or StorageOptions()
    if url.startswith("s3://"):
        rest = url.removeprefix("s3://")
        if not rest or rest.startswith("/"):
            raise StorageError(f"{url}: an s3:// URL needs a bucket name")
        return Location("s3://" + rest.rstrip("/") + "/", options)
    if "://" in url and not url.startswith("file://"):
        raise StorageError(f"{url}: unsupported URL scheme (use a path, file:// or s3://)")
    path = Path(urllib.parse.unquote(url.removeprefix("file://"))).expanduser().resolve()
    return Location(path.as_uri().rstrip("/") + "/", options)


def first_line(e: BaseException, default: str | None = None) -> str:
    """The first line of an error's message (client libraries append multi-line debug dumps);
    for an empty message `default`, else the error's type name."""
    text = str(e).strip()
    if text:
        return text.splitlines()[0]
    return type(e).__name__ if default is None else default


def _wrap(loc: Location, what: str, e: Exception) -> StorageError:
    msg = first_line(e)
    hint = ""
    if not loc.is_local:
        hint = " (check the endpoint, the network and the AWS credentials in the environment)"
    return StorageError(f"{what} {loc.url}: {msg}{hint}")


def list_objects(loc: Location, prefix: str = "") -> Iterator[ObjectInfo]:
    """List every object under the location (recursively), in pages of 1000 keys.

    On S3 the first level of "directories" is listed concurrently, one paginated listing per
    prefix (the atlas: 690 polygon prefixes of 720 keys instead of 497 pages one after another).
    """
    if loc.is_local:
        if loc.absent:
            raise StorageError(f"cannot list {loc.url}: directory does not exist")
        yield from _list_flat(loc, prefix)
        return
    try:
        top = obstore.list_with_delimiter(loc.store, prefix or None)
    except Exception as e:
        raise _wrap(loc, "cannot list", e) from None
    for meta in top["objects"]:
        yield _info(meta)
    subdirs = [str(p) for p in top["common_prefixes"]]
    with ThreadPoolExecutor(max_workers=LIST_CONCURRENCY) as pool:
        for objects in pool.map(lambda p: list(_list_flat(loc, p)), subdirs):
            yield from objects


LIST_CONCURRENCY = 16


def _info(meta: Any) -> ObjectInfo:
    return ObjectInfo(
        key=str(meta["path"]),
        size=int(meta["size"]),
        last_modified=meta["last_modified"],
        etag=meta.get("e_tag"),
    )


def _list_flat(loc: Location, prefix: str) -> Iterator[ObjectInfo]:
    try:
        for page in obstore.list(loc.store, prefix=prefix or None, chunk_size=1000):
            for meta in page:
                yield _info(meta)
    except Exception as e:
        raise _wrap(loc, "cannot list", e) from None


def read_bytes(loc: Location, key: str) -> bytes:
    if loc.absent:
        raise FileNotFoundError(f"{loc.url_of(key)} does not exist")
    try:
        return bytes(obstore.get(loc.store, key).bytes())
    except FileNotFoundError:
        raise
    except Exception as e:
        if isinstance(e, NotFoundError):
            raise FileNotFoundError(f"{loc.url_of(key)} does not exist") from None
        raise _wrap(loc, f"cannot read {key} from", e) from None


def write_bytes(loc: Location, key: str, data: bytes) -> None:
    """Write one object atomically (a local put goes through a temporary file and a rename)."""
    if loc.absent:
        loc.local_path.mkdir(parents=True, exist_ok=True)
    try:
        obstore.put(loc.store, key, data)
    except Exception as e:
        raise _wrap(loc, f"cannot write {key} to", e) from None


def delete(loc: Location, key: str, *, tries: int = 5) -> None:
    """Delete one object if it exists. S3 deletes go out as POST, which the client does not
    retry on a dropped connection, so they are retried here (deleting twice is harmless)."""
    if loc.absent:
        return
    for attempt in range(tries):
        try:
            obstore.delete(loc.store, key)
            return
        except (FileNotFoundError, NotFoundError):
            return
        except Exception as e:
            if attempt == tries - 1:
                raise _wrap(loc, f"cannot delete {key} from", e) from None
            time.sleep(0.2 * 2**attempt)


def exists(loc: Location, key: str) -> bool:
    if loc.absent:
        return False
    try:
        obstore.head(loc.store, key)
    except (FileNotFoundError, NotFoundError):
        return False
    except Exception as e:
        raise _wrap(loc, f"cannot check {key} in", e) from None
    return True


# --- Icechunk -----------------------------------------------------------------------------------


def icechunk_storage(loc: Location) -> Any:
    import icechunk

    if loc.is_local:
        return icechunk.local_filesystem_storage(str(loc.local_path))
    o = loc.options
    return icechunk.s3_storage(
        bucket=loc.bucket,
        prefix=loc.prefix,
        region=o.region,
        endpoint_url=o.endpoint,
        allow_http=o.allow_http,
        force_path_style=o.force_path_style,
        anonymous=o.anonymous or None,
        from_env=None if o.anonymous else True,
    )


def virtual_chunk_container(source: Location) -> Any:
    """The container that lets Icechunk read chunk refs pointing into the source archive."""
    import icechunk

    store: Any
    if source.is_local:
        store = icechunk.local_filesystem_store(str(source.local_path))
    else:
        o = source.options
        store = icechunk.s3_store(
            region=o.region,
            endpoint_url=o.endpoint,
            allow_http=o.allow_http,
            anonymous=o.anonymous,
            s3_compatible=o.endpoint is not None,
            force_path_style=o.force_path_style,
        )
    return icechunk.VirtualChunkContainer(source.url, store)


def virtual_chunk_credentials(source: Location) -> dict[str, Any]:
    """Authorization for the source container: anonymous, from the environment, or none (local)."""
    import icechunk

    cred: Any
    if source.is_local:
        cred = icechunk.Credentials.LocalFileSystemAccess()
    elif source.options.anonymous:
        cred = icechunk.s3_anonymous_credentials()
    else:
        cred = icechunk.s3_from_env_credentials()
    return icechunk.containers_credentials({source.url: cred})
