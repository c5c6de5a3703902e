"""Faked DNS and a connect path that reaches loopback only: image-fetch tests cannot leave this machine.

`guarded(monkeypatch, table)` makes `socket.getaddrinfo` answer from `table` (a name → a list of
answers, one per lookup, the last repeated: a rebinding name answers differently each time) and makes
every socket connect to a non-loopback address fail with ENETUNREACH, recording it, as inside a
private network namespace. Names are looked up as the socket module would encode them (IDNA 2003).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field

PUBLIC = "93.184.216.34"  # a global address: never connected to (the guard refuses it)


@dataclass
class Guard:
    lookups: list[str] = field(default_factory=list)
    refused_connects: list[tuple[str, int]] = field(default_factory=list)


def _loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def guarded(monkeypatch, table: dict[str, list[str]]) -> Guard:
    guard = Guard()
    real_getaddrinfo = socket.getaddrinfo
    asked: dict[str, int] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.isascii():
            name = name.encode("idna").decode("ascii")  # what the socket module sends to the resolver
        name = name.lower()
        guard.lookups.append(name)
        if name not in table:
            try:
                ipaddress.ip_address(name)
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            return real_getaddrinfo(host, port, *args, **kwargs)
        answers = table[name]
        answer = answers[min(asked.get(name, 0), len(answers) - 1)]
        asked[name] = asked.get(name, 0) + 1
        family = socket.AF_INET6 if ":" in answer else socket.AF_INET
        sockaddr = (answer, int(port or 0), 0, 0) if family == socket.AF_INET6 else (answer, int(port or 0))
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            guard.refused_connects.append((str(address[0]), int(address[1])))
            raise OSError(errno.ENETUNREACH, "Network is unreachable (test guard)")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            guard.refused_connects.append((str(address[0]), int(address[1])))
            return errno.ENETUNREACH
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return guard
