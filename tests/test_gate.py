"""The adapter under abuse, served by uvicorn as `python -m client` serves it, over a fake Triton:
slow bodies and headers, floods of values, readiness storms, the browser surface (issue 22, items 10-16, 20, 21).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from client.app import create_app
from client.bodies import BodyParser, check_value_counts
from client.errors import APIError
from client.http_protocol import head_deadline
from client.protocol import EmbeddingRequest, field_names
from client.settings import Settings
from client.triton import CHANNEL_OPTIONS, ServedModel, TritonClient
from contract import EnsembleCard
from launcher.processes import free_port
from tests.test_adapter import MODEL, FakeTriton, flaky_client

JSON = {"Content-Type": "application/json"}
QWEN = ServedModel("q", 8, EnsembleCard(4, 16, query_template=True))


@contextmanager
def served(settings: Settings, triton: TritonClient | None = None) -> Iterator[str]:
    """The app under uvicorn with the adapter's own protocol settings, on a free loopback port."""
    app = create_app(settings, triton=triton or FakeTriton([MODEL]))
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=head_deadline(settings.header_timeout_s),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        server_header=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    return conn


def response_of(conn: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and b'"}}' in data:
            break
    return data


def test_slow_bodies_hold_connections_not_slots() -> None:
    """Four clients trickling their bodies held all four slots (every other request got 429) and were
    never cut: now a slot is taken once the body is in, and a body not in within the deadline is a 408."""
    settings = Settings(max_in_flight=4, body_timeout_s=1.5)
    with served(settings) as url:
        trickles = []
        for _ in range(4):
            conn = raw(url)
            conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Content-Length: 200\r\n\r\n{")
            trickles.append(conn)
        start = time.monotonic()
        honest = [httpx.post(f"{url}/v1/embeddings", json={"input": ["a", "bb"]}, timeout=10) for _ in range(8)]
        assert [r.status_code for r in honest] == [200] * 8
        for conn in trickles:
            conn.sendall(b" ")  # a byte now and then keeps a read alive, never the deadline
        answers = [response_of(conn) for conn in trickles]
        elapsed = time.monotonic() - start
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 1.5 s" in answer and b"connection: close" in answer.lower()
    assert elapsed < 5


def test_unfinished_headers_are_cut(caplog) -> None:
    with served(Settings(header_timeout_s=0.5)) as url:
        conn = raw(url)
        conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        start = time.monotonic()
        assert conn.recv(1024) == b""  # closed by the server
        assert time.monotonic() - start < 3
        idle = raw(url)  # a connection that never sends anything is closed as well
        assert idle.recv(1024) == b""


def test_a_client_that_goes_away_is_one_log_line(caplog) -> None:
    with caplog.at_level(logging.INFO), served(Settings()) as url:
        conn = raw(url)
        conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
        conn.sendall(b'Content-Length: 100\r\n\r\n{"input": ')
        time.sleep(0.2)
        conn.close()
        time.sleep(0.5)
        assert httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=10).status_code == 200
    assert "the client went away before its body was in" in caplog.text
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text


def test_a_chunked_body_is_not_read_past_the_cap() -> None:
    """32 MiB were read before a 413; now the reading stops at the cap and the answer comes at once."""
    with served(Settings(max_body_bytes=1024 * 1024)) as url:
        conn = raw(url)
        conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
        conn.sendall(b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        sent = 0
        conn.settimeout(5)
        try:
            while sent < 64 * 1024 * 1024:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed while we were still sending
        answer = response_of(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 16 * 1024 * 1024  # what socket buffers absorb, not the whole stream


def test_no_server_header_and_415_for_other_media() -> None:
    with served(Settings()) as url:
        ok = httpx.post(f"{url}/v1/embeddings", json={"input": "a"}, timeout=10)
        assert ok.status_code == 200 and "server" not in ok.headers
        plain = httpx.post(f"{url}/v1/embeddings", content=b'{"input": "a"}', headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["error"]["code"] == "unsupported_media_type"


def test_api_docs_need_the_key_or_are_off() -> None:
    with TestClient(create_app(Settings(api_key="k"), triton=FakeTriton([MODEL]))) as c:
        for path in ("/docs", "/openapi.json"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer k"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200
    with TestClient(create_app(Settings(api_docs=False), triton=FakeTriton([MODEL]))) as c:
        assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 404


class CountingTriton(FakeTriton):
    def __init__(self, models: list[ServedModel]) -> None:
        super().__init__(models)
        self.listings = 0

    async def models(self) -> list[ServedModel]:
        self.listings += 1
        await asyncio.sleep(0.05)
        return self._models


def test_readiness_storms_share_one_probe() -> None:
    """Each /health/ready listed the models (1 + N gRPC calls) and could probe: now one probe serves
    every caller for `ready_cache_s`."""
    fake = CountingTriton([MODEL])
    with served(Settings(ready_cache_s=2.0), triton=fake) as url:
        start = fake.listings

        async def storm() -> list[int]:
            async with httpx.AsyncClient(timeout=10) as client:
                answers = await asyncio.gather(*(client.get(f"{url}/health/ready") for _ in range(50)))
            return [r.status_code for r in answers]

        assert asyncio.run(storm()) == [200] * 50
        assert fake.listings - start <= 1  # at most one (the start-up listing may still be cached)
        fake._models = []
        assert httpx.get(f"{url}/health/ready").status_code == 200  # cached within the window
        time.sleep(2.1)
        assert httpx.get(f"{url}/health/ready").status_code == 503  # a new probe after it


def test_items_are_counted_before_they_are_validated(monkeypatch) -> None:
    """524,283 tiny items took 1.66 s of validation on the event loop before the 2,048 cap: now a 413 first."""
    calls = []
    real = EmbeddingRequest.model_validate

    def spy(data, *args, **kwargs):
        calls.append(1)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(EmbeddingRequest, "model_validate", spy)
    with TestClient(create_app(Settings(), triton=FakeTriton([MODEL]))) as c:
        for items in (["a"] * 2049, [[1]] * 3000, [{"text": "a"}] * 2500):
            r = c.post("/v1/embeddings", content=orjson.dumps({"input": items}), headers=JSON)
            assert r.status_code == 413 and r.json()["error"]["param"] == "input", r.text
        assert calls == []
        one_long_id_list = c.post("/v1/embeddings", json={"input": list(range(1, 3000))})
        assert one_long_id_list.status_code == 200 and calls == [1]  # one item of 2,999 ids, not 2,999 items
    with TestClient(create_app(Settings(max_token_ids_per_item=100), triton=FakeTriton([MODEL]))) as c:
        for body, where in (([7] * 101, "input has 101"), ([[7], [7] * 101], "input[1] has 101")):
            r = c.post("/v1/embeddings", json={"input": body})
            assert r.status_code == 413 and r.json()["error"]["message"].startswith(where), r.text
        assert calls == [1]


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (b'{"input": [' + b'"",' * 600_000 + b'""]}', True),  # half a million strings
        (b'{"input": [' + b"[1]," * 300_000 + b"[1]]}", True),  # containers
        (b'{"input": [' + b"{}," * 300_000 + b"{}]}", True),
        (orjson.dumps({"input": ["[{" * 20_000]}), False),  # brackets inside a text are not containers
        (orjson.dumps({"input": ['say \\"hi\\" ' * 5000] * 2048}), False),  # escaped quotes are not strings
        (orjson.dumps({"input": [list(range(100, 600))] * 2048}), False),  # 2,048 id lists of 500 ids
        (orjson.dumps({"input": [{"text": "a", "image": "b"}] * 2048, "model": "m", "user": "u"}), False),
    ],
    ids=["strings", "lists", "objects", "brackets-in-text", "escaped-quotes", "id-lists", "items"],
)
def test_value_counts_before_parsing(body: bytes, refused: bool) -> None:
    if refused:
        with pytest.raises(APIError, match="more than 2048 items") as caught:
            check_value_counts(body, 2048)
        assert caught.value.status == 413
    else:
        check_value_counts(body, 2048)


def test_large_bodies_are_parsed_off_the_event_loop() -> None:
    threads = []

    def validate(data):
        threads.append(threading.get_ident())
        return data

    async def run() -> None:
        parser = BodyParser()
        await parser.parse(b'{"input": "small"}', 2048, validate)
        await parser.parse(orjson.dumps({"input": ["x" * 1000] * 400}), 2048, validate)

    asyncio.run(run())
    assert threads[0] == threading.get_ident() and threads[1] != threading.get_ident()


def test_instruction_is_capped_and_sent_once_per_call() -> None:
    fake = FakeTriton([QWEN])
    seen = []

    async def call(name, rows, options, outputs=None):
        seen.append(options)
        n = len(next(iter(rows.values())))
        return np.ones((n, 4), np.float32), np.ones(n, np.int32)

    fake.call = call
    with TestClient(create_app(Settings(max_instruction_chars=100), triton=fake)) as c:
        r = c.post("/v1/embeddings", json={"input": "a", "input_type": "query", "instruction": "x" * 101})
        assert r.status_code == 413 and r.json()["error"]["param"] == "instruction"
        assert "instruction has 101 characters; the maximum is 100" in r.json()["error"]["message"]
        assert seen == []
    triton = flaky_client([])
    asyncio.run(triton.call("m", {"TEXT": ["a"] * 64}, {"INSTRUCTION": "i" * 1000, "TRUNCATE": "END"}, ("EMBEDDING",)))
    sent = {i.name(): i for i in triton.client.sent}
    assert sent["INSTRUCTION"].shape() == [64, 1]
    assert sent["INSTRUCTION"]._get_content().count(b"i" * 1000) == 1  # one copy, not 64
    assert triton.client.deadlines == [(5.0, 5_000_000)]  # Triton drops the call from its queues past it


@pytest.mark.parametrize("field", ["instruction", "input_type"])
def test_token_ids_with_a_prompt_option_are_400(field: str) -> None:
    value = "query" if field == "input_type" else "Given a query"
    with TestClient(create_app(Settings(), triton=FakeTriton([QWEN]))) as c:
        r = c.post("/v1/embeddings", json={"input": [[1, 2, 3]], field: value, "input_type": "query"})
    assert r.status_code == 400 and r.json()["error"]["param"] in ("instruction", "input_type")
    assert "token ids" in r.json()["error"]["message"]


def test_grpc_keeps_large_message_limits() -> None:
    options = dict(CHANNEL_OPTIONS)
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 2**31 - 1


def test_unknown_field_names_are_escaped_and_cut() -> None:
    extra = {f"k{i}\n\x1b[31m" + "z" * 100: 1 for i in range(12)}
    logged = field_names(extra)
    assert "\n" not in logged and "\x1b" not in logged and "and 4 more" in logged
    assert max(len(part) for part in logged.split(", ")) < 60
