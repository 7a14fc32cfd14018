"""Test-only helpers: a local S3 server (moto) and a fault-injecting TCP proxy in front of it.

Nothing here is imported by vcube itself; both servers bind to 127.0.0.1 only.

- `s3server.S3Server`: moto's server mode in a child process on a free port; helpers to create
  buckets, upload a directory, list keys, and boto3/obstore clients with dummy credentials.
  Integration tests get it as the session fixture `s3_server` (tests/integration/conftest.py),
  which also puts the dummy credentials into the session's environment (and only there).
- `faultproxy.FaultProxy`: HTTP/1.1-aware asyncio proxy: added latency, seeded `503 SlowDown`
  / reset faults, request records (method, path, Range, status, bytes), `kill()` / `revive()`,
  and a `lifetime` after which it stops by itself (default 600 s: raise it for long runs).
- `measure_remote`: `python -m tests.support.measure_remote DIR` prints requests, bytes,
  sequential round trips and wall time per file of an h5py walk through `vcube.remote`.
"""
