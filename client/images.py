"""Turn an item's `image` field into encoded bytes, under one safety policy.

Accepted: `data:` URIs and raw base64 always; http(s) URLs with a timeout, a byte cap,
at most `image_max_redirects` redirects (each re-checked) and no loopback, private,
link-local or metadata addresses unless the operator allows them; local paths only
under `image_local_dir`. Decoding (with a pixel cap) happens in Triton's preprocessor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx

from client.errors import bad_request
from client.settings import Settings


def _root_cause(exc: BaseException) -> str:
    """The innermost error's text ("Connection refused", "CERTIFICATE_VERIFY_FAILED"), not the wrapper's."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc) or type(exc).__name__


class ImageLoader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(follow_redirects=False, timeout=settings.image_timeout_s)

    async def close(self) -> None:
        await self.client.aclose()

    async def load_all(self, sources: list[str], positions: list[int]) -> list[bytes]:
        """Bytes of every source, fetched concurrently; the first failure names its item."""
        return list(await asyncio.gather(*(self.load(s, i) for s, i in zip(sources, positions, strict=True))))

    async def load(self, source: str, index: int) -> bytes:
        where = f"input[{index}].image"
        if source.startswith("data:"):
            header, _, payload = source.partition(",")
            if ";base64" not in header:
                raise bad_request(f"{where}: only base64 data URIs are supported", "input")
            return self._cap(self._b64(payload, where), where)
        scheme = urlparse(source).scheme.lower()
        if scheme in ("http", "https"):
            try:
                return await asyncio.wait_for(self._fetch(source, where), self.settings.image_timeout_s)
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise bad_request(
                    f"{where}: fetching the image took longer than {self.settings.image_timeout_s} s", "input"
                ) from exc
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, UnicodeError, ValueError) as exc:
                # refused, reset, TLS, DNS, protocol errors: the URL's fault, never the server's
                raise bad_request(f"{where}: cannot fetch the image ({_root_cause(exc)})", "input") from exc
        if scheme and len(scheme) > 1:
            raise bad_request(f"{where}: unsupported URL scheme {scheme!r} (use http, https or data)", "input")
        local = self._local(source)
        if local is not None:
            return self._cap(local.read_bytes(), where)
        return self._cap(self._b64(source, where), where)

    def _b64(self, payload: str, where: str) -> bytes:
        try:
            return base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(
                f"{where} is neither an http(s) URL, a data URI, an allowed local path nor base64", "input"
            ) from exc

    def _cap(self, data: bytes, where: str) -> bytes:
        if len(data) > self.settings.image_max_bytes:
            raise bad_request(f"{where} has {len(data)} bytes; the maximum is {self.settings.image_max_bytes}", "input")
        if not data:
            raise bad_request(f"{where} is empty", "input")
        return data

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

    async def _check_host(self, url: str, where: str) -> None:
        """Refuse hosts that resolve to non-public addresses; resolved off the event loop (a slow DNS
        answer must not stall other requests), under the caller's fetch deadline."""
        host = urlparse(url).hostname or ""
        if host in self.settings.image_allowed_hosts:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        except (OSError, UnicodeError) as exc:
            raise bad_request(f"{where}: cannot resolve {host!r}", "input") from exc
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global or address.is_multicast:
                raise bad_request(
                    f"{where}: {host} resolves to {address}, a non-public address, which is refused", "input"
                )

    async def _fetch(self, url: str, where: str) -> bytes:
        for _ in range(self.settings.image_max_redirects + 1):
            await self._check_host(url, where)
            async with self.client.stream("GET", url) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise bad_request(f"{where}: the server answered {response.status_code}", "input")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.settings.image_max_bytes:
                        raise bad_request(f"{where} is larger than {self.settings.image_max_bytes} bytes", "input")
                return self._cap(bytes(data), where)
        raise bad_request(f"{where}: more than {self.settings.image_max_redirects} redirects", "input")
