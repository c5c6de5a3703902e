"""Hostile inputs, round two (issue 32): every finding as an explicit case, each failing before its fix.

Work must be bounded by the input's bytes, before it is done. Loopback only: the DNS and connect
paths are faked (tests/netguard.py) wherever a name is resolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bench import costs
from client.app import create_app
from client.bodies import check_value_counts
from client.egress import is_public
from client.errors import APIError
from client.hosts import HostNames, host_name
from client.images import ImageLoader
from client.registry import ModelRegistry
from client.settings import Settings
from client.triton import CHANNEL_OPTIONS, request_inputs
from contract import QUERY, TEXT, collapse_repeats, expand_repeats
from runtime.errors import InputError
from runtime.images import ClipImageSpec, clip_pixels, decode_image, resized_crop, shortest_edge_size
from runtime.resample import resized_window
from tests.test_adapter import MODEL, RERANKER, FakeTriton, ScoringTriton
from tests.test_gate import raw, served
from tests.test_images import load, load_all

CLIP = ClipImageSpec(224, 224, 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
CLIP_336 = ClipImageSpec(336, 336, 336, CLIP.mean, CLIP.std)


def seconds(run, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# --- 1. a thin image and CLIP's resize --------------------------------------------------------------


def _pixels(width: int, height: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# Ordinary photos, squares, every enlarging aspect the crop sees, and the findings' extremes.
SHAPES = [
    (640, 480), (480, 640), (224, 224), (336, 335), (225, 224), (224, 500), (500, 224), (1000, 999),
    (1, 1), (2, 2), (3, 7), (7, 3), (37, 199), (199, 37), (100, 7), (7, 100), (161, 600), (600, 161),
    (1024, 1), (1, 1024), (5000, 3), (3, 5000), (2000, 17), (17, 2000), (223, 222), (222, 3000),
]  # fmt: skip


@pytest.mark.parametrize(("width", "height"), SHAPES)
def test_the_crop_equals_pillows_whole_resize_then_crop(width: int, height: int) -> None:
    """What CLIPImageProcessor computes (Pillow's bicubic resize of the whole image, then the centre crop),
    pixel for pixel, at both CLIP sizes, from the window alone."""
    pixels = _pixels(width, height, width * 7919 + height)
    image = Image.fromarray(pixels)
    for spec in (CLIP, CLIP_336):
        new_w, new_h = shortest_edge_size(width, height, spec.shortest_edge)
        whole = np.asarray(image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC))
        top, left = max(0, (new_h - spec.crop_height) // 2), max(0, (new_w - spec.crop_width) // 2)
        expected = whole[top : top + spec.crop_height, left : left + spec.crop_width]
        assert np.array_equal(resized_crop(image, spec), expected), (width, height, spec.shortest_edge)
        box = (left, top, left + expected.shape[1], top + expected.shape[0])
        if new_w >= width and new_h >= height:  # the windowed path itself, even where Pillow's is used
            assert np.array_equal(resized_window(pixels, (new_w, new_h), box), expected)


@pytest.mark.parametrize(("width", "height"), [(640, 480), (3, 700), (700, 3), (1024, 1), (50, 51)])
def test_pixel_values_equal_the_hugging_face_processor(width: int, height: int) -> None:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(CLIP.mean),
        image_std=list(CLIP.std),
        resample=Image.Resampling.BICUBIC,
    )
    image = Image.fromarray(_pixels(width, height, 3))
    theirs = processor([image], return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(clip_pixels(image, CLIP), theirs, atol=1e-5)


def test_a_thin_image_costs_its_crop_not_its_resize() -> None:
    """A 1024×1 PNG (74 bytes) became 229,376×224 (0.47 s, +369 MiB); 65,536×1 took the preprocessor past
    23 GB. Now both cost about the crop, and a 16× longer image costs about the same."""
    short = costs.png(4096, 1)
    long = costs.png(65536, 1)
    assert len(short) < 200
    t_short = seconds(lambda: clip_pixels(decode_image(short, 4096 * 4096), CLIP))
    t_long = seconds(lambda: clip_pixels(decode_image(long, 4096 * 4096), CLIP))
    assert t_long < 0.25 and t_long < 4 * max(t_short, 0.005), (t_short, t_long)


# --- 2. the JSON value counter ----------------------------------------------------------------------


def test_the_value_counter_is_linear_in_adversarial_bodies() -> None:
    """`"` + `\\"`×N + `[`×2200 made the string pattern rescan from every escaped quote: 6 KB 0.13 s, 34 KB
    4.2 s, hours for 2 MiB. Now one pass: 4× the bytes cost about 4× the time, and 2 MiB well under 0.5 s."""

    def cost(size: int) -> float:
        body = costs.escaped_quotes(size)

        def run() -> None:
            try:
                check_value_counts(body, 2048)
            except APIError:
                pass

        return seconds(run)

    small, large = cost(512 << 10), cost(2 << 20)
    assert large < 0.5 and large < 5 * max(small, 0.002), (small, large)


@pytest.mark.parametrize(
    "body",
    [
        b'"' + b'\\"' * 10_000 + b"[" * 2200,  # unterminated: its brackets are inside the string
        b'"a\\\n"' + b"[" * 3000,  # a backslash before a newline
        b'"' + b'\\"' * 5000 + b"\\",  # ends on a backslash
    ],
    ids=["unterminated", "backslash-newline", "trailing-backslash"],
)
def test_the_value_counter_sees_strings_a_failing_pattern_missed(body: bytes) -> None:
    try:
        check_value_counts(body, 2048)
    except APIError as exc:
        assert exc.status == 413


# --- 3. decode work -----------------------------------------------------------------------------------


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    """4096², 3,000 scans, 150 KB decoded in 5.7 s (Pillow's draft does not reduce entropy decoding)."""
    data = costs.many_scans_jpeg(4096, 3000)
    assert len(data) < 200_000
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"input\[2\]: the JPEG has more than 16 scans for its 16777216 pixels"):
        decode_image(data, 4096 * 4096, 2)
    assert time.perf_counter() - start < 0.05


def test_ordinary_progressive_jpegs_still_decode() -> None:
    for side in (64, 4096):
        data = costs.many_scans_jpeg(side, 0)  # the encoder's own 10 scans
        assert decode_image(data, 4096 * 4096).size == (side, side)
    assert decode_image(costs.many_scans_jpeg(256, 200), 4096 * 4096).size == (256, 256)  # small: many allowed


def test_a_png_with_many_empty_chunks_is_refused_before_opening() -> None:
    """125k empty ancillary chunks (1.43 MiB) cost 0.37 s just to open."""
    data = costs.many_chunks_png(1_500_000)
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"the PNG has more than \d+ chunks"):
        decode_image(data, 4096 * 4096)
    assert time.perf_counter() - start < 0.05
    assert decode_image(costs.many_chunks_png(1200), 4096 * 4096).size == (8, 8)  # 100 chunks: fine


# --- 5. rerank: documents × query -------------------------------------------------------------------


def test_a_query_crosses_grpc_once_per_call() -> None:
    """An 8,192-emoji query beside 1,000 one-letter documents built 32.8 MB of gRPC input."""
    query = "🚀" * 8192
    inputs = {i.name(): len(i._get_content()) for i in request_inputs({TEXT: ["a"] * 1000, QUERY: [query] * 1000}, {})}
    assert inputs[QUERY] < len(query.encode()) + 8 * 1000
    assert collapse_repeats(["q", "q", "r", "r", "q"]) == ["q", "", "r", "", "q"]
    assert expand_repeats(["q", "", "r", "", "q"], "query") == ["q", "q", "r", "r", "q"]
    with pytest.raises(ValueError, match="the first row's query is empty"):
        expand_repeats(["", "q"], "query")


class CountingScorer(ScoringTriton):
    async def call(self, name, rows, options, outputs=None, priority=0):
        self.calls.append(len(rows[TEXT]))
        return await super().call(name, rows, options, outputs)


def test_query_bytes_times_documents_are_bounded_before_any_call() -> None:
    fake = CountingScorer([RERANKER])
    with TestClient(create_app(Settings(), triton=fake)) as c:
        r = c.post("/v1/rerank", json={"query": "🚀" * 8192, "documents": ["a"] * 1000})
        assert r.status_code == 413, r.text
        assert r.json()["error"]["param"] == "query"
        assert "32768 bytes) beside each of 1000 documents" in r.json()["error"]["message"]
        assert fake.calls == []
        fits = c.post("/v1/rerank", json={"query": "🚀" * 524, "documents": ["a"] * 1000})
        assert fits.status_code == 200, fits.text
        assert sum(fake.calls) == 1000


def test_an_unsettled_long_query_is_tokenised_whole_once(monkeypatch) -> None:
    """With an odd room, a query and documents both long left the query 'unsettled' and it was tokenised
    whole again for every document (1,000 documents, 8,192 characters: 5.77 s vs 0.36 s)."""
    from launcher import default_model
    from runtime import pairs
    from runtime.text import load_tokenizer, make_buckets

    tok = load_tokenizer(str(default_model.checkpoint() / "tokenizer.json"))
    layout = pairs.PairLayout((101,), (102,), (102,), 1, 512, 0, make_buckets(512))  # room 509
    whole_calls = []
    real = pairs.encode
    monkeypatch.setattr(pairs, "encode", lambda t, texts: whole_calls.append(len(texts)) or real(t, texts))
    query = "retrieval of long passages " * 300
    rows = pairs.encode_pairs(tok, [query] * 50, ["a long document " * 400] * 50, layout, "END")
    assert len(rows) == 50 and all(len(ids) == 512 for ids, _ in rows)
    assert whole_calls == [1]


# --- 6. the memory budget and idle declarations ---------------------------------------------------


def test_declared_lengths_reserve_nothing() -> None:
    """32 connections declaring 2 MiB and sending nothing made every other POST a 503 for body_timeout_s."""
    settings = Settings(max_buffered_bytes=8 << 20, body_timeout_s=5)
    with served(settings) as url:
        idle = []
        for _ in range(32):
            conn = raw(url)
            conn.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n")
            conn.sendall(b"Content-Length: 2097152\r\n\r\n")
            idle.append(conn)
        time.sleep(0.2)
        honest = [httpx.post(f"{url}/v1/embeddings", json={"input": ["a", "bb"]}, timeout=10) for _ in range(5)]
        assert [r.status_code for r in honest] == [200] * 5
        for conn in idle:
            conn.close()


# --- 7, 9, 10, 11, 13: image URLs -------------------------------------------------------------------


def test_a_port_above_65535_is_that_items_400() -> None:
    """It was a 500 with an 89-line traceback (ExceptionGroup(OverflowError) from the connect)."""
    for url in ("http://127.0.0.1:70000/x.png", "http://127.0.0.1:0/x.png"):
        with pytest.raises(APIError, match=r"input\[3\]\.image is not a valid URL") as caught:
            load(Settings(image_allowed_hosts=["127.0.0.1"]), url)
        assert caught.value.status == 400


def test_a_local_file_over_the_cap_is_refused_unread(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(5 << 20)  # sparse: 5 MiB that no read should touch
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    settings = Settings(image_local_dir=tmp_path, image_max_bytes=1 << 20)
    with pytest.raises(APIError, match="is larger than 1048576 bytes"):
        load(settings, str(big))
    (tmp_path / "one.png").write_bytes(costs.png(4, 4))
    assert load(settings, "one.png") == costs.png(4, 4)
    assert reads == []


def test_one_deadline_for_all_of_a_requests_fetches(monkeypatch) -> None:
    """Fetches ran in rounds, each image with its own deadline and none while queueing for a slot: ~80 s
    per request by default. Now one deadline covers them all."""

    async def slow(self, url, where, held):
        await asyncio.sleep(0.6)
        return b"x"

    monkeypatch.setattr(ImageLoader, "_fetch", slow)
    settings = Settings(
        image_allowed_hosts=["127.0.0.1"], image_fetch_concurrency=1, image_timeout_s=1, image_request_timeout_s=1.5
    )
    start = time.perf_counter()
    with pytest.raises(APIError, match=r"images were not all fetched within 1.5 s"):
        load_all(settings, [f"http://127.0.0.1:9/{i}.png" for i in range(6)])
    assert time.perf_counter() - start < 2.5


@pytest.mark.parametrize("address", ["fec0::1", "::ffff:0:808:808", "::ffff:8.8.8.8", "fec0:1::a"])
def test_site_local_and_ipv4_translated_ipv6_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


# --- 8. unknown model names ---------------------------------------------------------------------------


def test_unknown_model_names_share_one_refresh_a_second() -> None:
    """200 requests naming unknown models caused 201 full refreshes under one lock."""

    class Counting(FakeTriton):
        listings = 0

        async def models(self):
            Counting.listings += 1
            await asyncio.sleep(0.01)
            return self._models

    async def run() -> list[int]:
        registry = ModelRegistry(Counting([MODEL]), refresh_s=10, min_refresh_s=1.0)
        await registry.refresh()

        async def one(i: int) -> int:
            try:
                await registry.resolve(f"unknown-{i}")
            except APIError as exc:
                return exc.status
            return 200

        return await asyncio.gather(*(one(i) for i in range(200)))

    statuses = asyncio.run(run())
    assert set(statuses) == {404}
    assert Counting.listings <= 2


# --- 12. the admin key and proxies --------------------------------------------------------------------


def test_internal_clients_never_use_a_proxy(monkeypatch) -> None:
    """The supervisor's urllib sent Triton-Admin-Key to a proxy from http_proxy; the gRPC channel issued CONNECT."""
    from launcher.direct import DIRECT

    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    seen = []

    def accept() -> None:
        proxy.settimeout(3)
        try:
            conn, _ = proxy.accept()
            seen.append(conn.recv(4096))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    target = socket.socket()
    target.bind(("127.0.0.1", 0))  # nothing listens: a direct call is refused at once
    with pytest.raises(OSError):
        DIRECT.open(f"http://127.0.0.1:{target.getsockname()[1]}/v2/repository/index", timeout=2)
    thread.join(4)
    proxy.close()
    target.close()
    assert seen == []
    assert ("grpc.enable_http_proxy", 0) in CHANNEL_OPTIONS


# --- 14. DNS rebinding against the adapter itself --------------------------------------------------------


def test_only_known_host_names_are_answered() -> None:
    """With no key on loopback, a page that rebinds its own name to 127.0.0.1 called the API (200)."""
    with served(Settings(allowed_hosts=[])) as url:
        port = url.rsplit(":", 1)[1]
        body = {"input": "a"}
        for host in ("rebind.evil.example", f"rebind.evil.example:{port}", "localhost.evil.example"):
            r = httpx.post(f"{url}/v1/embeddings", json=body, headers={"Host": host})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", (host, r.text)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST.", f"[::1]:{port}", "10.1.2.3"):
            assert httpx.post(f"{url}/v1/embeddings", json=body, headers={"Host": host}).status_code == 200, host
        assert httpx.get(f"{url}/health", headers={"Host": "rebind.evil.example"}).status_code == 400


def test_allowed_host_names_are_configured() -> None:
    hosts = HostNames.of(Settings(host="0.0.0.0", allowed_hosts=["embed.example.com", ".svc.cluster.local"]))
    assert hosts.allows("embed.example.com:443") and hosts.allows("EMBED.example.com.")
    assert hosts.allows("te-adapter.ns.svc.cluster.local:30000") and hosts.allows("svc.cluster.local")
    assert not hosts.allows("evil.example") and not hosts.allows("cluster.local")
    assert hosts.allows(None)  # HTTP/1.0 without Host: no browser's
    assert HostNames.of(Settings(allowed_hosts=["*"])).allows("anything.example")
    assert HostNames.of(Settings(host="embed.internal")).allows("embed.internal:30000")
    assert host_name("[::1]:8080") == "::1" and host_name("Example.COM.:80") == "example.com"


# --- the principle: every path linear, within a budget at the caps ----------------------------------------------------


@pytest.fixture(scope="module")
def cost_table() -> dict:
    from launcher import default_model

    return costs.run(costs.SMALL_SIZES, str(default_model.checkpoint() / "tokenizer.json"))


def test_every_input_path_grows_linearly(cost_table: dict) -> None:
    """The ratio between the largest input and a 4× smaller one stays under 5× for every path."""
    for (path, name), rows in cost_table.items():
        assert costs.growth(rows) < 5, (path, name, [(r.size, r.seconds) for r in rows])


def test_every_input_path_stays_within_its_budget(cost_table: dict) -> None:
    """At 256 KiB every path costs under a second and under 256 MiB (the README's budget at the caps is
    measured by `python -m bench.costs`)."""
    for (path, name), rows in cost_table.items():
        largest = rows[-1]
        assert largest.seconds < 1.0 and largest.peak_mib < 256, (path, name, largest)


def test_a_json_body_is_parsed_after_its_count() -> None:
    check_value_counts(orjson.dumps({"input": ["[{" * 20_000]}), 2048)


def test_the_admin_key_is_erased_from_a_command_line() -> None:
    """`tritonserver` takes the key as a flag only; `ps` and /proc/<pid>/cmdline showed it to every user."""
    import subprocess
    import sys

    from launcher.hidden_key import hide_when_parsed

    python = str(Path(sys.executable).resolve())
    code = "import threading, time; time.sleep(0.2); threading.Thread(target=time.sleep, args=(5,)).start()"

    process = subprocess.Popen([python, "-c", code, "--key=s3cr3t-value", "--again=s3cr3t-value"])
    try:
        hide_when_parsed(process.pid, python, "s3cr3t-value").join(5)
        line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"s3cr3t-value" not in line and line.endswith(b"--key=************\0--again=************\0")
    finally:
        process.kill()
        process.wait()
