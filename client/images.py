"""Turn a request's `image` fields into encoded bytes, under one safety policy.

Accepted: `data:` URIs and raw base64 always; http(s) URLs as `image_url_mode` and the allow-list
say (`client/egress.py` judges every connection, redirects included); local paths only under
`image_local_dir`. Every size is bounded before the bytes arrive: items per request, bytes per image
(a declared Content-Length above the cap is refused unread), bytes per request, and the bytes all
requests hold at once; fetches per request and in all are bounded too, and a failed or cancelled
request cancels its other fetches. Bodies are read raw (`Accept-Encoding: identity`, any other
encoding refused), so no decompression can outgrow the cap. A client learns that an item was
refused or could not be fetched; why goes to the log under the request id. Decoding (with a pixel
cap) happens in Triton's preprocessor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpcore
import httpx

from client import request_id
from client.bodies import Held, MemoryBudget
from client.egress import CheckedBackend, Refused, UrlPolicy
from client.errors import APIError, bad_request, too_large
from client.settings import Settings
from client.tasks import all_or_cancel

log = logging.getLogger("client.images")

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_REDIRECTS = (301, 302, 303, 307, 308)
_HEADERS = [(b"Accept", b"image/*"), (b"Accept-Encoding", b"identity"), (b"User-Agent", b"triton-embeddings")]


class Unfetchable(Exception):
    """A fetch failed for a reason the log may know and the client may not."""


class ImageLoader:
    def __init__(self, settings: Settings, budget: MemoryBudget | None = None) -> None:
        self.settings = settings
        self.policy = UrlPolicy.of(settings.image_url_mode, settings.image_allowed_hosts)
        # httpcore directly: no proxy from the environment, no content decoding, one network backend
        self.pool = httpcore.AsyncConnectionPool(
            network_backend=CheckedBackend(self.policy),
            max_connections=settings.image_fetch_global,
            keepalive_expiry=5.0,
            retries=0,
        )
        self.fetching = asyncio.Semaphore(settings.image_fetch_global)
        self.budget = budget or MemoryBudget(settings.max_buffered_bytes)

    async def close(self) -> None:
        await self.pool.aclose()

    @asynccontextmanager
    async def fetched(self, sources: list[str], positions: list[int]) -> AsyncIterator[list[bytes]]:
        """Bytes of every source, fetched concurrently, held against the memory budget until the block ends."""
        self.check_count(len(sources))
        held = Held(self.budget)
        per_request = asyncio.Semaphore(self.settings.image_fetch_concurrency)

        async def one(source: str, index: int) -> bytes:
            async with per_request:
                return await self.load(source, index, held)

        deadline = self.settings.image_request_timeout_s
        try:
            fetches = all_or_cancel(*(one(s, i) for s, i in zip(sources, positions, strict=True)))
            try:
                images = await asyncio.wait_for(fetches, deadline)  # queueing for a fetch slot included
            except TimeoutError:
                raise bad_request(
                    f"input: the request's images were not all fetched within {deadline:g} s", "input"
                ) from None
            yield images
        finally:
            held.release()

    def check_count(self, count: int) -> None:
        """The per-request image bound (413), before any image is fetched."""
        if count > self.settings.image_max_per_request:
            raise too_large(
                f"input has {count} image items; the maximum is {self.settings.image_max_per_request}", "input"
            )

    async def load(self, source: str, index: int, held: Held | None = None) -> bytes:
        """One source's bytes; `held` is its request's share of the budget (alone: a budget of its own,
        so that nothing is left counted against the shared one)."""
        held = held if held is not None else Held(MemoryBudget(self.settings.max_buffered_bytes))
        where = f"input[{index}].image"
        if source.startswith("data:"):
            header, _, payload = source.partition(",")
            if ";base64" not in header:
                raise bad_request(f"{where}: only base64 data URIs are supported", "input")
            return self._inline(self._b64(payload, where), where, held)
        match = _SCHEME.match(source)
        scheme = match.group(1).lower() if match else ""
        if scheme in ("http", "https"):
            return await self._fetch_url(source, where, held)
        if len(scheme) > 1:  # one letter: a Windows drive
            raise bad_request(f"{where}: unsupported URL scheme {scheme!r} (use http, https or data)", "input")
        local = self._local(source)
        if local is not None:
            return await self._read_local(local, where, held)
        return self._inline(self._b64(source, where), where, held)

    async def _fetch_url(self, source: str, where: str, held: Held) -> bytes:
        if self.settings.image_url_mode == "off":
            raise bad_request(f"{where}: image URLs are turned off on this server; send a data URI or base64", "input")
        try:
            url = httpx.URL(source)
        except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
            raise bad_request(f"{where} is not a valid URL", "input") from exc
        if not valid_port(url):
            raise bad_request(f"{where} is not a valid URL (its port is outside 1-65535)", "input")
        try:
            async with self.fetching:
                return await asyncio.wait_for(self._fetch(url, where, held), self.settings.image_timeout_s)
        except APIError:
            raise
        except Refused as exc:  # the same words as a failed fetch: a refusal must not say what a name resolves to
            self._log(where, source, f"refused: {exc}")
            raise bad_request(f"{where}: the image could not be fetched", "input") from exc
        except (
            TimeoutError,
            Unfetchable,
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            httpx.InvalidURL,
            ssl.SSLError,
            OSError,
            UnicodeError,
            ValueError,
        ) as exc:  # reset, TLS, DNS, protocol, status: the URL's fault, never the server's
            self._log(where, source, f"{type(exc).__name__}: {_root_cause(exc)}")
            raise bad_request(f"{where}: the image could not be fetched", "input") from exc

    @staticmethod
    def _log(where: str, source: str, detail: str) -> None:
        log.warning("request %s: %s from %.200r: %s", request_id.current.get(), where, source, detail)

    async def _fetch(self, url: httpx.URL, where: str, held: Held) -> bytes:
        cap = self.settings.image_max_bytes
        for _ in range(self.settings.image_max_redirects + 1):
            if url.scheme not in ("http", "https") or not url.raw_host or not valid_port(url):
                raise Unfetchable(f"redirected to a non-http(s) URL or a bad port {str(url)[:200]!r}")
            target = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
            timeout = self.settings.image_timeout_s
            extensions = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}
            async with self.pool.stream(
                "GET", target, headers=[(b"Host", url.netloc), *_HEADERS], extensions=extensions
            ) as response:
                headers = httpx.Headers(response.headers)
                if response.status in _REDIRECTS and "location" in headers:
                    url = url.join(headers["location"])
                    continue
                if response.status != 200:
                    raise Unfetchable(f"the server answered {response.status}")
                encoding = headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise Unfetchable(f"Content-Encoding {encoding[:40]!r} (only identity is accepted)")
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > cap:
                    raise image_too_large(where, cap)
                chunks: list[bytes] = []
                size = 0
                try:
                    async for chunk in response.aiter_stream():
                        if size + len(chunk) > cap:
                            raise image_too_large(where, cap)
                        self._hold(held, len(chunk), where)
                        chunks.append(chunk)
                        size += len(chunk)
                except BaseException:
                    # a failure's traceback keeps this frame alive as long as the failure (longer, in a
                    # reference cycle): it must not keep the bytes read so far
                    chunks.clear()
                    chunk = b""  # noqa: F841 -- the last chunk, dropped from the frame
                    raise
                if not size:
                    raise bad_request(f"{where} is empty", "input")
                return b"".join(chunks)
        raise Unfetchable(f"more than {self.settings.image_max_redirects} redirects")

    def _hold(self, held: Held, size: int, where: str) -> None:
        if held.size + size > self.settings.image_max_total_bytes:
            raise too_large(
                f"{where}: the request's images exceed {self.settings.image_max_total_bytes} bytes in all", "input"
            )
        held.take(size)

    def _inline(self, data: bytes, where: str, held: Held) -> bytes:
        if len(data) > self.settings.image_max_bytes:
            raise bad_request(f"{where} has {len(data)} bytes; the maximum is {self.settings.image_max_bytes}", "input")
        if not data:
            raise bad_request(f"{where} is empty", "input")
        self._hold(held, len(data), where)
        return data

    async def _read_local(self, path: Path, where: str, held: Held) -> bytes:
        """A local file's bytes: its size checked first, at most the cap read, off the event loop, and
        held against the budget before it is read."""
        cap = self.settings.image_max_bytes
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise bad_request(f"{where}: the image could not be read", "input") from exc
        if size > cap:
            raise image_too_large(where, cap)
        if not size:
            raise bad_request(f"{where} is empty", "input")
        self._hold(held, size, where)
        data = await asyncio.to_thread(_read_at_most, path, size)
        if not data:
            raise bad_request(f"{where} is empty", "input")
        return data

    def _b64(self, payload: str, where: str) -> bytes:
        try:
            return base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(
                f"{where} is neither an http(s) URL, a data URI, an allowed local path nor base64", "input"
            ) from exc

    def _local(self, source: str) -> Path | None:
        root = self.settings.image_local_dir
        if root is None or len(source) > 4096 or "\n" in source:
            return None
        path = Path(source)
        try:
            resolved = (path if path.is_absolute() else root / path).resolve()
        except (OSError, ValueError):
            return None
        if resolved.is_relative_to(root.resolve()) and resolved.is_file():
            return resolved
        return None


def valid_port(url: httpx.URL) -> bool:
    return url.port is None or 0 < url.port <= 65535


def image_too_large(where: str, cap: int) -> APIError:
    return bad_request(f"{where} is larger than {cap} bytes", "input")


def _read_at_most(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)  # a file that grew since its stat is cut there: never more than was held


def _root_cause(exc: BaseException) -> str:
    """The innermost error's text, for the log."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc)[:300] or type(exc).__name__
