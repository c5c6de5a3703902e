"""Which `Host` names the adapter answers to: the defence against DNS rebinding.

Without an API key on loopback (the `make serve` default), any web page can make its own name
resolve to 127.0.0.1 and then call the API same-origin: a JSON POST needs no CORS preflight then,
and the browser sends the page's own name as `Host`. So the adapter answers only to the names it is
known by (Ollama's fix for CVE-2024-28224): `localhost`, the configured host and published address,
and `allowed_hosts` (`.example.com` also allows every subdomain, `*` any name). An IP literal is
always allowed: a rebinding page cannot make its browser send one, and probes and scrapers use them.
A request without `Host` (HTTP/1.0) is no browser's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from client.settings import Settings

LOCAL_NAMES = ("localhost",)


def host_name(header: str) -> str:
    """`Host` without its port, lower case, without a trailing dot (`[::1]:80` → `::1`)."""
    header = header.strip()
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    name, colon, port = header.rpartition(":")
    if not colon or not port.isdigit():
        name = header
    return name.lower().rstrip(".")


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostNames:
    names: frozenset[str]
    suffixes: tuple[str, ...] = ()
    any_name: bool = False

    @classmethod
    def of(cls, settings: Settings) -> HostNames:
        entries = [*LOCAL_NAMES, settings.host, settings.published_address or "", *settings.allowed_hosts]
        names = {host_name(e) for e in entries if e and not e.startswith(".")}
        suffixes = tuple(e.lower().rstrip(".") for e in entries if e.startswith("."))
        return cls(frozenset(n for n in names if n), suffixes, "*" in settings.allowed_hosts)

    def allows(self, header: str | None) -> bool:
        if header is None or self.any_name:
            return True
        name = host_name(header)
        if is_ip_literal(name) or name in self.names:
            return True
        return any(name == s[1:] or name.endswith(s) for s in self.suffixes)

    def __str__(self) -> str:
        return "any" if self.any_name else ", ".join(sorted(self.names) + [f"*{s}" for s in self.suffixes])
