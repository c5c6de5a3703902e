"""Where image fetches may connect: the URL policy, and the network backend that enforces it.

A host is resolved once, in the component that connects, on the exact ASCII name the HTTP client
uses (IDNA 2008, as `httpx.URL` encodes it); the addresses are judged, and the connection goes to an
address that was judged. No second lookup can answer differently (DNS rebinding), no other encoding
of the name can resolve elsewhere (IDNA 2003 vs 2008), and every redirect hop, a new connection,
passes the same gate. TLS keeps the name for SNI and the certificate check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

import httpcore
import httpx

UrlMode = Literal["off", "allowlist", "public"]
URL_MODES: tuple[str, ...] = ("off", "allowlist", "public")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses (::a.b.c.d)
# Ranges Python's `is_global` calls global that no public image host uses: site-local (deprecated,
# routed like private space where still configured), IPv4-mapped and IPv4-translated addresses.
_NEVER_PUBLIC = (
    ipaddress.IPv6Network("fec0::/10"),
    ipaddress.IPv6Network("::ffff:0:0/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries: mapped, 6to4, NAT64, IPv4-compatible, Teredo's client."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64) or address in _COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: Address) -> bool:
    """A global unicast address; an IPv6 address that embeds an IPv4 one is judged by that one."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in _NEVER_PUBLIC):
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast


def normalise_entry(entry: str) -> tuple[str, int | None]:
    """An allow-list entry (`host` or `host:port`, IPv6 in brackets) as the fetcher will see it: lower
    case, IDNA 2008, no trailing dot. Raises ValueError for anything that is not a bare host[:port]."""
    try:
        url = httpx.URL(f"http://{entry.strip()}")
    except httpx.InvalidURL as exc:
        raise ValueError(f"image allow-list entry {entry!r} is not a host or host:port") from exc
    if not url.raw_host or url.raw_path not in (b"/", b"") or url.userinfo:
        raise ValueError(f"image allow-list entry {entry!r} is not a host or host:port")
    return url.raw_host.decode("ascii").lower().rstrip("."), url.port


class Refused(httpcore.ConnectError):
    """The policy refused this host, port or address; the message is for the log, not the client."""


@dataclass(frozen=True)
class UrlPolicy:
    """`off`: no URL is fetched. `allowlist`: only listed hosts (any address: the operator vouches
    for them). `public`: listed hosts, and any host whose every address is public. An entry without a
    port allows every port of its host; `host:port` allows that port only."""

    mode: UrlMode = "public"
    allowed: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def of(cls, mode: UrlMode, entries: list[str]) -> UrlPolicy:
        return cls(mode, frozenset(normalise_entry(e) for e in entries))

    def listed(self, host: str, port: int) -> bool:
        name = host.lower().rstrip(".")
        return (name, None) in self.allowed or (name, port) in self.allowed

    def check_name(self, host: str, port: int) -> None:
        """Before resolving: is this host:port fetchable at all under the mode?"""
        if self.mode == "off":
            raise Refused("image URLs are turned off (EMBED_IMAGE_URL_MODE=off)")
        if self.mode == "allowlist" and not self.listed(host, port):
            raise Refused(f"{host}:{port} is not in EMBED_IMAGE_ALLOWED_HOSTS")

    def check_addresses(self, host: str, port: int, addresses: list[Address]) -> None:
        if self.listed(host, port):
            return
        private = [str(a) for a in addresses if not is_public(a)]
        if private:
            raise Refused(f"{host} resolves to non-public {', '.join(private)}")


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy in `connect_tcp`: resolve once, judge, connect to
    the judged address."""

    def __init__(self, policy: UrlPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int) -> list[Address]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        # a link-local IPv6 answer may carry a zone ("fe80::1%eth0"): judged without it, and refused anyway
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.policy.check_name(host, port)
        addresses = await self.resolve(host, port)
        self.policy.check_addresses(host, port, addresses)
        last: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise Refused("unix sockets are never image sources")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
