"""A fault-injecting HTTP/1.1 proxy for tests: latency, `503 SlowDown`, resets, "server gone".

It sits on 127.0.0.1 between a client (obstore, boto3, Icechunk, vcube in a child process) and
the local S3 server, and understands just enough HTTP to see request boundaries: per request it
records method, path, Range, status and response body bytes, waits the configured latency,
and either forwards the request or injects a fault. It runs its own asyncio loop in a
background thread, so it works from synchronous tests, and stops by itself after `lifetime`
seconds so a forgotten proxy cannot hang a test session.

Fault decisions are deterministic with a seed and independent of how concurrent requests
interleave: each is a hash of (seed, method, target, Range, how many times this same request
was seen before), so a retried request gets a fresh draw and two runs fault the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

_HEAD_LIMIT = 1 << 20
_RELAY_CHUNK = 1 << 16
_IO_TIMEOUT = 60.0

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>"
)

FAULT_503 = "503"
FAULT_RESET = "reset"  # connection reset before the request reaches the server
FAULT_RESET_AFTER = "reset_after"  # the server applied the request, the client sees a reset
FAULT_KINDS = (FAULT_503, FAULT_RESET, FAULT_RESET_AFTER)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as seen by the proxy (`status` 0 when the connection was reset)."""

    method: str
    target: str
    range: tuple[int, int | None] | None
    status: int
    body_bytes: int
    fault: str | None
    started: float
    finished: float


@dataclass
class ProxyStats:
    """Counters, updated from the proxy thread; read them after the requests you care about."""

    records: list[RequestRecord] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def by_method(self) -> Counter[str]:
        return Counter(r.method for r in self.records)

    @property
    def response_bytes(self) -> int:
        return sum(r.body_bytes for r in self.records)

    @property
    def faults(self) -> Counter[str]:
        return Counter(r.fault for r in self.records if r.fault)

    def matching(self, method: str | None = None, path_contains: str = "") -> list[RequestRecord]:
        return [
            r
            for r in self.records
            if (method is None or r.method == method) and path_contains in r.target
        ]


def _parse_range(value: str | None) -> tuple[int, int | None] | None:
    """`bytes=a-b` -> (a, b) inclusive; `bytes=a-` -> (a, None); anything else -> None."""
    if not value or not value.startswith("bytes="):
        return None
    first = value[6:].split(",")[0].strip()
    start, _, end = first.partition("-")
    if not start:
        return None
    return int(start), (int(end) if end else None)


def _headers(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    out = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        out.append((name.strip(), value.strip()))
    return lines[0], out


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _render(first: str, headers: Iterable[tuple[str, str]]) -> bytes:
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode(
        "latin-1"
    )


async def _relay_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    headers: list[tuple[str, str]],
    *,
    until_eof: bool,
) -> int:
    """Copy one message body from reader to writer (None: discard); return its payload size."""
    total = 0
    te = (_get(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if writer:
                writer.write(size_line)
            if size == 0:
                # trailers, then the empty line
                while True:
                    line = await reader.readuntil(b"\r\n")
                    if writer:
                        writer.write(line)
                    if line == b"\r\n":
                        break
                break
            data = await reader.readexactly(size + 2)
            total += size
            if writer:
                writer.write(data)
                await writer.drain()
        return total
    length = _get(headers, "content-length")
    if length is None and not until_eof:
        return total
    remaining = int(length) if length is not None else None
    while remaining is None or remaining:
        data = await reader.read(min(remaining or _RELAY_CHUNK, _RELAY_CHUNK))
        if not data:
            if remaining is None:  # the body ends with the connection
                break
            raise ConnectionError("peer closed mid-body")
        if remaining is not None:
            remaining -= len(data)
        total += len(data)
        if writer:
            writer.write(data)
            await writer.drain()
    return total


class _HoldLast:
    """A writer that keeps the last piece back until `flush()`.

    The proxy records a request before the client can see the end of its response, so a
    test that reads the counters right after a response always finds that request counted.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pending = b""

    def write(self, data: bytes) -> None:
        if self._pending:
            self._writer.write(self._pending)
        self._pending = bytes(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def flush(self) -> None:
        if self._pending:
            self._writer.write(self._pending)
            self._pending = b""


def _cut(conn: socket.socket) -> None:
    """Reset a raw accepted socket (its transport, if any, sees the connection die)."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), which clients see as "connection reset by peer"."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Proxy 127.0.0.1:<free port> -> upstream, with injected latency and faults.

    latency: seconds added before each request is forwarded (or answered with a fault).
    fault_rate: fraction of requests (0..1) that get a fault, drawn among `fault_kinds`.
    fault_methods: only requests with these methods are eligible (None: all).
    lifetime: the proxy shuts itself down after this many seconds.
    All of latency / fault_rate / fault_kinds / fault_methods may be changed while running.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = (FAULT_503, FAULT_RESET),
        fault_methods: Iterable[str] | None = None,
        seed: int = 0,
        lifetime: float = 600.0,
        port: int = 0,
    ) -> None:
        if upstream_host not in ("127.0.0.1", "localhost"):
            raise ValueError("the fault proxy only forwards to 127.0.0.1")
        self.upstream = (upstream_host, upstream_port)
        self.latency = latency
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; use {FAULT_KINDS}")
        self.fault_methods = set(fault_methods) if fault_methods is not None else None
        self.seed = seed
        self.lifetime = lifetime
        self.port = port
        self.stats = ProxyStats()
        self._seen: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lsock: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: set[socket.socket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._killed = False

    # -- control (called from the test's thread) ----------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._killed

    def start(self) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            loop.call_later(self.lifetime, self._shutdown)
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection and end the thread."""
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(10)
        self._thread = None

    def kill(self) -> None:
        """Simulate the server gone: refuse new connections and reset the open ones."""
        self._call(self._kill())

    def revive(self) -> None:
        """Listen again on the same port after `kill()`."""
        self._call(self._revive())

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = ProxyStats()

    def __enter__(self) -> FaultProxy:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            raise RuntimeError("the proxy is not running")
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- inside the loop ---------------------------------------------------------------------

    # Our own accept loop rather than asyncio.start_server: Server.close() can strand a
    # connection accepted just before it (CPython 3.12: the transport is never attached, the
    # socket never read or closed), and a client waiting on it without a read timeout hangs.
    # Here every accepted socket is tracked from accept() on, so kill() cuts them all.

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._lsock = sock
        self._killed = False
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except (OSError, asyncio.CancelledError):
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(conn)
            if self._killed:
                _cut(conn)
                continue
            task = loop.create_task(self._serve(conn))
            self._tasks.add(task)  # a reference, so the task is not collected mid-flight
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=_HEAD_LIMIT)
        except OSError:
            self._conns.discard(conn)
            conn.close()
            return
        try:
            await self._handle(reader, writer)
        finally:
            self._conns.discard(conn)

    def _close_all(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            self._accept_task = None
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None
        for w in list(self._writers):
            _abort(w)
        self._writers.clear()
        for c in list(self._conns):
            _cut(c)

    async def _kill(self) -> None:
        self._killed = True
        self._close_all()

    async def _revive(self) -> None:
        if self._lsock is None:
            await self._listen()

    def _shutdown(self) -> None:
        assert self._loop is not None
        self._killed = True
        self._close_all()
        self._loop.stop()

    def _decide(self, method: str, target: str, rng: str) -> str | None:
        if self.fault_rate <= 0 or not self.fault_kinds:
            return None
        if self.fault_methods is not None and method not in self.fault_methods:
            return None
        key = (method, target, rng)
        with self._lock:
            n = self._seen[key]
            self._seen[key] = n + 1
        digest = hashlib.sha256(f"{self.seed}|{method}|{target}|{rng}|{n}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= self.fault_rate:
            return None
        return self.fault_kinds[int.from_bytes(digest[8:12], "big") % len(self.fault_kinds)]

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.stats.records.append(rec)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        if self._killed:  # accepted just before kill(): the server is gone for this one too
            _abort(cwriter)
            return
        self._writers.add(cwriter)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                upstream = await self._one_request(head, creader, cwriter, upstream)
                if upstream is None and cwriter.transport.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            return
        finally:
            self._writers.discard(cwriter)
            if upstream is not None:
                upstream[1].transport.abort()
            if not cwriter.transport.is_closing():
                cwriter.close()

    async def _one_request(
        self,
        head: bytes,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Handle one request; return the upstream connection to reuse (None: closed)."""
        started = time.monotonic()
        first, headers = _headers(head)
        method, target = first.split(" ")[:2]
        rng_header = _get(headers, "range") or ""
        rng = _parse_range(rng_header)
        # Answer `Expect: 100-continue` ourselves so the body arrives before we decide.
        if (_get(headers, "expect") or "").lower() == "100-continue":
            headers = [(k, v) for k, v in headers if k.lower() != "expect"]
            cwriter.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await cwriter.drain()
        body = bytearray()

        class _Sink:
            def write(self, data: bytes) -> None:
                body.extend(data)

            async def drain(self) -> None:
                return None

        await asyncio.wait_for(
            _relay_body(creader, _Sink(), headers, until_eof=False),  # type: ignore[arg-type]
            _IO_TIMEOUT,
        )
        fault = self._decide(method, target, rng_header)
        if self.latency > 0:
            await asyncio.sleep(self.latency)

        def record(status: int, nbytes: int) -> None:
            self._record(
                RequestRecord(method, target, rng, status, nbytes, fault, started, time.monotonic())
            )

        if fault == FAULT_RESET:
            record(0, 0)
            _abort(cwriter)
            return None
        if fault == FAULT_503:
            record(503, 0 if method == "HEAD" else len(SLOWDOWN_BODY))
            cwriter.write(
                _render(
                    "HTTP/1.1 503 Slow Down",
                    [
                        ("Content-Type", "application/xml"),
                        ("Content-Length", str(len(SLOWDOWN_BODY))),
                        ("x-amz-request-id", "faultproxy"),
                    ],
                )
                + (b"" if method == "HEAD" else SLOWDOWN_BODY)
            )
            await cwriter.drain()
            return upstream

        if self._killed:
            _abort(cwriter)
            return None
        request = _render(first, headers) + bytes(body)
        for attempt in range(2):
            reused = upstream is not None and not upstream[1].transport.is_closing()
            if not reused:
                upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream, limit=_HEAD_LIMIT), _IO_TIMEOUT
                )
            assert upstream is not None
            ureader, uwriter = upstream
            self._writers.add(uwriter)
            try:
                uwriter.write(request)
                await uwriter.drain()
                # Response head (skip interim 1xx responses).
                while True:
                    rhead = await asyncio.wait_for(ureader.readuntil(b"\r\n\r\n"), _IO_TIMEOUT)
                    rfirst, rheaders = _headers(rhead)
                    status = int(rfirst.split(" ")[1])
                    if not 100 <= status < 200:
                        break
                break
            except (asyncio.IncompleteReadError, ConnectionError):
                # A kept-alive upstream connection the server had closed: retry once, fresh.
                self._writers.discard(uwriter)
                uwriter.transport.abort()
                upstream = None
                if not reused or attempt:
                    raise
        if fault == FAULT_RESET_AFTER:
            # Let the server finish (it has applied the request), then reset the client.
            await _relay_body(ureader, None, rheaders, until_eof=False)
            record(0, 0)
            _abort(cwriter)
            return None
        out = _HoldLast(cwriter)
        out.write(rhead)
        no_body = method == "HEAD" or status in (204, 304)
        nbytes = 0
        length_known = (
            _get(rheaders, "content-length") is not None
            or "chunked" in (_get(rheaders, "transfer-encoding") or "").lower()
        )
        if not no_body:
            nbytes = await asyncio.wait_for(
                _relay_body(ureader, out, rheaders, until_eof=True),  # type: ignore[arg-type]
                _IO_TIMEOUT,
            )
        record(status, nbytes)
        out.flush()
        await cwriter.drain()
        conn = (_get(rheaders, "connection") or "").lower()
        http10 = rfirst.startswith("HTTP/1.0") and conn != "keep-alive"
        if conn == "close" or http10 or (not no_body and not length_known):
            self._writers.discard(uwriter)
            uwriter.close()
            cwriter.close()
            return None
        return upstream
