"""A real S3 server on 127.0.0.1 for the tests: moto's server mode in a child process.

A child process rather than moto's in-process thread: the server then does not compete with
the test (h5py, Icechunk) for the GIL, it can be killed to simulate "server gone", and its
state is private to the test session. Credentials are dummies that exist only in the
environment of the test session (see `dummy_aws_session`); nothing here reaches the network.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from obstore.store import S3Store

REGION = "us-east-1"
DUMMY_KEY_ID = "testing"
DUMMY_SECRET = "testing"  # a placeholder moto accepts, never a real secret


def dummy_aws_env(config_dir: Path) -> dict[str, str]:
    """Environment for talking to the local server: dummy keys, no profile, no metadata service.

    The config/credential files point into `config_dir` (empty) so a developer's ~/.aws is never
    read, and the EC2 metadata lookup is disabled so nothing tries 169.254.169.254.
    """
    return {
        "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(config_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# Variables that would let a test pick up a real identity instead of the dummy one.
AWS_ENV_TO_CLEAR = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@contextlib.contextmanager
def dummy_aws_session(config_dir: Path) -> Iterator[dict[str, str]]:
    """This process's environment with the dummy keys and no other AWS configuration (nothing of
    `AWS_ENV_TO_CLEAR`), as it was again on exit; child processes started inside inherit it."""
    env = dummy_aws_env(config_dir)
    before = {name: os.environ.get(name) for name in (*AWS_ENV_TO_CLEAR, *env)}
    for name in AWS_ENV_TO_CLEAR:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def boto3_client(endpoint: str) -> Any:
    """A boto3 S3 client on `endpoint` with the dummy credentials (explicit: no environment)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY_ID,
        aws_secret_access_key=DUMMY_SECRET,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def create_bucket(endpoint: str, name: str) -> str:
    """Create bucket `name` on the server at `endpoint` if it does not exist yet; return it."""
    client = boto3_client(endpoint)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)
    return name


class S3Server:
    """moto's S3 server in a child process bound to 127.0.0.1 on a free port.

    Use as a context manager, or call `start()` / `stop()`. `endpoint` is the URL to give
    boto3, obstore or a vcube spec (`storage.endpoint`, with `allow_http` and
    `force_path_style`).
    """

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> S3Server:
        """Start the server and wait until it answers; raise with its output if it does not."""
        cmd = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        # moto logs every request on stderr: a file, not a pipe nobody drains.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(
                    f"moto server exited at start (code {self._proc.returncode}): {err}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=1):
                    pass
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
                continue
            return self
        self.stop()
        raise RuntimeError(
            f"moto server did not answer on {self.endpoint} within {self._startup_timeout} s"
        )

    def stop(self) -> None:
        """Terminate the child (kill it if it does not exit within 5 s)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def reset(self) -> None:
        """Drop every bucket and object (moto's reset API): a clean server for the next test."""
        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients -----------------------------------------------------------------------------

    def boto3_client(self, endpoint: str | None = None) -> Any:
        """A boto3 S3 client with the dummy credentials (on this server unless `endpoint`)."""
        return boto3_client(endpoint or self.endpoint)

    def obstore_store(
        self, bucket: str, *, prefix: str | None = None, endpoint: str | None = None, **kw: Any
    ) -> S3Store:
        """An obstore S3Store on `bucket` (optionally through a proxy's `endpoint`)."""
        from obstore.store import S3Store

        return S3Store(
            bucket,
            prefix=prefix,
            endpoint=endpoint or self.endpoint,
            region=REGION,
            access_key_id=DUMMY_KEY_ID,
            secret_access_key=DUMMY_SECRET,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
            **kw,
        )

    # -- fixtures' helpers -------------------------------------------------------------------

    def create_bucket(self, name: str) -> str:
        """Create `name` if it does not exist yet; return it."""
        return create_bucket(self.endpoint, name)

    def upload_dir(self, local: Path, bucket: str, prefix: str = "") -> list[str]:
        """Upload every file under `local` to `s3://bucket/prefix/<relative path>`; return keys."""
        client = self.boto3_client()
        prefix = prefix.strip("/")
        keys = []
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            rel = path.relative_to(local).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self.boto3_client().put_object(Bucket=bucket, Key=key, Body=data)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under `prefix` (paginated), sorted."""
        paginator = self.boto3_client().get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start a server for the duration of the block."""
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()
