"""The fault proxy against a tiny in-process HTTP/1.1 server (no S3 needed)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.faultproxy import (
    FAULT_503,
    FAULT_RESET,
    FAULT_RESET_AFTER,
    FaultProxy,
)

DATA = bytes(range(256)) * 64  # 16 KiB


class _Store(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects: dict[str, bytes] = {"/obj": DATA}
        self.hits: list[str] = []

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # connections the proxy resets on purpose are not errors here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Store

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits.append(f"GET {self.path}")
        data = self.server.objects.get(self.path)
        if data is None:
            self._send(404, b"missing")
            return
        rng = self.headers.get("Range")
        if rng:
            a, b = rng.removeprefix("bytes=").split("-")
            self._send(206, data[int(a) : int(b) + 1])
        else:
            self._send(200, data)

    def do_HEAD(self) -> None:
        self.server.hits.append(f"HEAD {self.path}")
        self._send(200, self.server.objects.get(self.path, b""), head=True)

    def do_PUT(self) -> None:
        self.server.hits.append(f"PUT {self.path}")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body.extend(self.rfile.read(size))
                self.rfile.readline()
        else:
            body = bytearray(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.objects[self.path] = bytes(body)
        self._send(200, b"")


@pytest.fixture
def origin() -> Iterator[_Store]:
    server = _Store()
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def _proxy(origin: _Store, **kw: object) -> FaultProxy:
    return FaultProxy("127.0.0.1", origin.server_address[1], lifetime=60, **kw).start()  # type: ignore[arg-type]


def _conn(proxy: FaultProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)


def _roundtrip(c: http.client.HTTPConnection) -> bytes:
    c.request("GET", "/obj")
    return c.getresponse().read()


def test_forwards_and_counts_on_one_keepalive_connection(origin: _Store) -> None:
    with _proxy(origin) as proxy:
        c = _conn(proxy)
        c.request("GET", "/obj")
        assert c.getresponse().read() == DATA
        c.request("GET", "/obj", headers={"Range": "bytes=100-199"})
        r = c.getresponse()
        assert r.status == 206
        assert r.read() == DATA[100:200]
        c.request("HEAD", "/obj")
        r = c.getresponse()
        assert r.read() == b""
        assert r.headers["Content-Length"] == str(len(DATA))
        c.request("PUT", "/new", body=b"x" * 1000)
        assert c.getresponse().read() == b""
        c.request("GET", "/nope")
        r = c.getresponse()
        assert r.status == 404
        r.read()
        c.close()
        stats = proxy.stats
    assert stats.by_method == {"GET": 3, "HEAD": 1, "PUT": 1}
    assert stats.response_bytes == len(DATA) + 100 + len(b"missing")
    assert [r.range for r in stats.matching("GET")] == [None, (100, 199), None]
    assert [r.status for r in stats.records] == [200, 206, 200, 200, 404]
    assert origin.objects["/new"] == b"x" * 1000
    assert stats.faults == {}


def test_chunked_body_and_expect_continue(origin: _Store) -> None:
    with _proxy(origin) as proxy:
        c = _conn(proxy)
        c.request(
            "PUT",
            "/chunked",
            body=iter([b"abc", b"defgh", b""]),
            headers={"Transfer-Encoding": "chunked", "Expect": "100-continue"},
            encode_chunked=True,
        )
        r = c.getresponse()
        assert r.status == 200
        r.read()
        c.close()
    assert origin.objects["/chunked"] == b"abcdefgh"


def test_latency_is_added_per_request(origin: _Store) -> None:
    with _proxy(origin, latency=0.05) as proxy:
        c = _conn(proxy)
        t0 = time.monotonic()
        for _ in range(4):
            c.request("GET", "/obj", headers={"Range": "bytes=0-9"})
            c.getresponse().read()
        elapsed = time.monotonic() - t0
        c.close()
    assert elapsed >= 4 * 0.05  # a lower bound: sleeping never takes less


def test_503_slowdown_is_an_s3_error_and_never_reaches_the_server(origin: _Store) -> None:
    with _proxy(origin, fault_rate=1.0, fault_kinds=[FAULT_503]) as proxy:
        c = _conn(proxy)
        for _ in range(3):  # the connection stays usable after a 503
            c.request("GET", "/obj")
            r = c.getresponse()
            body = r.read()
            assert r.status == 503
            assert b"<Code>SlowDown</Code>" in body
            assert r.headers["Content-Type"] == "application/xml"
        c.close()
        assert proxy.stats.faults == {FAULT_503: 3}
    assert origin.hits == []


def test_reset_before_and_after_the_server(origin: _Store) -> None:
    with _proxy(origin, fault_rate=1.0, fault_kinds=[FAULT_RESET]) as proxy:
        c = _conn(proxy)
        c.request("PUT", "/a", body=b"1")
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            c.getresponse()
        assert origin.hits == []
        proxy.fault_kinds = (FAULT_RESET_AFTER,)
        c = _conn(proxy)
        c.request("PUT", "/b", body=b"2")
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            c.getresponse()
        assert proxy.stats.faults == {FAULT_RESET: 1, FAULT_RESET_AFTER: 1}
        assert [r.status for r in proxy.stats.records] == [0, 0]
    assert origin.hits == ["PUT /b"]
    assert origin.objects["/b"] == b"2"


def _fault_pattern(origin: _Store, seed: int, n: int = 200) -> list[int]:
    with _proxy(origin, fault_rate=0.2, fault_kinds=[FAULT_503], seed=seed) as proxy:
        c = _conn(proxy)
        statuses = []
        for i in range(n):
            c.request("GET", "/obj", headers={"Range": f"bytes={i}-{i}"})
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
        c.close()
    return statuses


def test_faults_are_deterministic_with_a_seed(origin: _Store) -> None:
    a = _fault_pattern(origin, seed=1)
    b = _fault_pattern(origin, seed=1)
    c = _fault_pattern(origin, seed=2)
    assert a == b
    assert a != c
    assert 15 <= a.count(503) <= 70  # 20% of 200, loosely
    assert set(a) == {206, 503}


def test_a_retry_of_the_same_request_gets_a_fresh_draw(origin: _Store) -> None:
    with _proxy(origin, fault_rate=0.5, fault_kinds=[FAULT_503], seed=3) as proxy:
        c = _conn(proxy)
        statuses = []
        for _ in range(40):
            c.request("GET", "/obj", headers={"Range": "bytes=0-0"})
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
        c.close()
    assert set(statuses) == {206, 503}


def test_fault_methods_limit_what_can_fail(origin: _Store) -> None:
    with _proxy(origin, fault_rate=1.0, fault_kinds=[FAULT_503], fault_methods=["PUT"]) as proxy:
        c = _conn(proxy)
        c.request("GET", "/obj")
        r = c.getresponse()
        r.read()
        assert r.status == 200
        c.request("PUT", "/x", body=b"1")
        r = c.getresponse()
        r.read()
        assert r.status == 503
        c.close()


def test_kill_refuses_connections_and_revive_restores_them(origin: _Store) -> None:
    with _proxy(origin) as proxy:
        open_conn = _conn(proxy)
        open_conn.request("GET", "/obj")
        open_conn.getresponse().read()
        proxy.kill()
        assert not proxy.alive
        # The open connection is reset, and new ones are refused.
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
            _roundtrip(open_conn)
        with pytest.raises(ConnectionRefusedError):
            _conn(proxy).request("GET", "/obj")
        proxy.revive()
        c = _conn(proxy)
        c.request("GET", "/obj")
        assert c.getresponse().read() == DATA
        c.close()


def test_stops_by_itself_after_its_lifetime(origin: _Store) -> None:
    proxy = FaultProxy("127.0.0.1", origin.server_address[1], lifetime=0.3).start()
    c = _conn(proxy)
    c.request("GET", "/obj")
    assert c.getresponse().read() == DATA
    c.close()
    deadline = time.monotonic() + 5
    while proxy.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not proxy.alive
    with pytest.raises(ConnectionRefusedError):
        _conn(proxy).request("GET", "/obj")
    proxy.stop()


def test_refuses_to_forward_anywhere_but_localhost() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        FaultProxy("example.com", 80)
