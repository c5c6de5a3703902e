"""The adapter's image loading policy, without a server: data URIs, base64, local paths under the allowed folder."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest

from client.errors import APIError
from client.images import ImageLoader
from client.settings import Settings


def load(settings: Settings, source: str) -> bytes:
    async def run() -> bytes:
        loader = ImageLoader(settings)
        try:
            return await loader.load(source, 3)
        finally:
            await loader.close()

    return asyncio.run(run())


def test_local_paths_only_under_the_allowed_folder(tmp_path) -> None:
    allowed = tmp_path / "images"
    allowed.mkdir()
    (allowed / "cat.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    settings = Settings(image_local_dir=allowed)
    assert load(settings, str(allowed / "cat.png")) == b"\x89PNG fake"
    assert load(settings, "cat.png") == b"\x89PNG fake"  # relative to the folder
    for escape in (str(tmp_path / "secret.txt"), "../secret.txt"):
        with pytest.raises(APIError, match=r"input\[3\]\.image is neither"):
            load(settings, escape)
    with pytest.raises(APIError, match="is neither"):
        load(Settings(), str(allowed / "cat.png"))  # no folder configured: paths are not read at all


def test_data_uris_and_base64() -> None:
    payload = base64.b64encode(b"abc").decode()
    assert load(Settings(), f"data:image/png;base64,{payload}") == b"abc"
    assert load(Settings(), payload) == b"abc"
    with pytest.raises(APIError, match="only base64 data URIs"):
        load(Settings(), "data:image/png,abc")
    with pytest.raises(APIError, match="unsupported URL scheme 'file'"):
        load(Settings(), "file:///etc/passwd")
    with pytest.raises(APIError, match="has 4 bytes; the maximum is 3"):
        load(Settings(image_max_bytes=3), base64.b64encode(b"abcd").decode())


# Every way an image fetch can fail is a 400 for that item (a refused connection was a 500).
# The servers below listen on 127.0.0.1 only; DNS is faked, no lookup leaves the machine.


@contextmanager
def raw_server(handle):
    """A TCP server on a free loopback port that runs `handle(conn)` for each connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()


def _reset(conn: socket.socket) -> None:
    conn.recv(1024)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    conn.close()


def _silent(conn: socket.socket) -> None:
    time.sleep(3)
    conn.close()


def _http(status: str, headers: str, body: bytes):
    def handle(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        conn.close()

    return handle


def _garbage(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"this is not HTTP at all\r\n\r\n")
    conn.close()


LOCAL = Settings(image_allowed_hosts=["127.0.0.1", "no-such-host.test"], image_timeout_s=1.0, image_max_redirects=2)


@pytest.mark.parametrize(
    ("handler", "scheme", "expected"),
    [
        (_reset, "http", r"input\[3\]\.image: cannot fetch the image"),
        (_silent, "http", r"input\[3\]\.image: fetching the image took longer than 1\.0 s"),
        (_garbage, "http", r"input\[3\]\.image: cannot fetch the image"),
        (_http("200 OK", "", b"x" * 64), "https", r"input\[3\]\.image: cannot fetch the image"),  # TLS to plain HTTP
        (_http("302 Found", "Location: /again\r\n", b""), "http", r"input\[3\]\.image: more than 2 redirects"),
        (_http("404 Not Found", "", b""), "http", r"input\[3\]\.image: the server answered 404"),
    ],
    ids=["reset", "timeout", "not-http", "tls", "redirect-loop", "404"],
)
def test_fetch_failures_are_400_for_the_item(handler, scheme: str, expected: str) -> None:
    with raw_server(handler) as port:
        with pytest.raises(APIError, match=expected) as caught:
            load(LOCAL, f"{scheme}://127.0.0.1:{port}/cat.png")
    assert caught.value.status == 400 and caught.value.param == "input"


def test_refused_connection_is_400() -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(APIError, match=r"input\[3\]\.image: cannot fetch the image \(.*Connect call failed") as caught:
        load(LOCAL, f"http://127.0.0.1:{port}/cat.png")
    assert caught.value.status == 400


def test_too_large_is_400() -> None:
    with raw_server(_http("200 OK", "", b"x" * 5000)) as port:
        with pytest.raises(APIError, match=r"input\[3\]\.image is larger than 1000 bytes"):
            load(Settings(image_allowed_hosts=["127.0.0.1"], image_max_bytes=1000), f"http://127.0.0.1:{port}/a")


def test_dns_failure_is_400_allowed_host_or_not(monkeypatch) -> None:
    real = socket.getaddrinfo

    def fake(host, *args, **kwargs):
        if host in ("no-such-host.test", "unknown.test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(APIError, match=r"input\[3\]\.image: cannot fetch the image") as allowed:
        load(LOCAL, "http://no-such-host.test/cat.png")  # allowed: resolved by the HTTP client
    with pytest.raises(APIError, match=r"input\[3\]\.image: cannot resolve 'unknown.test'") as checked:
        load(LOCAL, "http://unknown.test/cat.png")  # checked against private ranges first
    assert allowed.value.status == checked.value.status == 400


def test_slow_dns_does_not_block_the_event_loop(monkeypatch) -> None:
    """A resolver that hangs stalls only its own item, which fails at the fetch deadline."""

    def slow(*_args, **_kwargs):
        time.sleep(2)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", slow)

    async def run() -> tuple[int, BaseException | bytes]:
        loader = ImageLoader(Settings(image_timeout_s=0.5))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        try:
            (outcome,) = await asyncio.gather(loader.load("http://slow.test/cat.png", 0), return_exceptions=True)
        finally:
            tick.cancel()
            await loader.close()
        return ticks, outcome

    ticks, outcome = asyncio.run(run())
    assert isinstance(outcome, APIError) and "took longer than 0.5 s" in outcome.message
    assert ticks >= 20, f"the event loop was blocked: {ticks} ticks in 0.5 s"
