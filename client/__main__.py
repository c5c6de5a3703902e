"""`python -m client [--port 30000] [--triton-url host:8001] …`: run the adapter with uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import logging.config

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from client.app import create_app
from client.logs import log_config
from client.settings import Settings


def settings_from_cli(argv: list[str] | None = None) -> Settings:
    """Settings from `EMBED_*` variables, overridden by flags named after the fields."""
    ap = argparse.ArgumentParser(prog="python -m client", description="OpenAI-compatible embeddings adapter for Triton")
    for name, field in Settings.model_fields.items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description)
    given = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    return Settings(**given)


def head_deadline(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a deadline on each request's head: a connection that has not sent
    complete headers within `seconds` of opening (or of its previous response) is closed. uvicorn
    bounds idle keep-alive connections, but not a client sending its headers a byte at a time."""

    class HeadDeadline(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expired(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadDeadline


def main(argv: list[str] | None = None) -> None:
    settings = settings_from_cli(argv)
    problem = settings.exposure_problem()
    if problem is not None:
        raise SystemExit(f"python -m client: {problem}")
    logging.config.dictConfig(log_config(settings.log_level))  # before the app logs its first line
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        http=head_deadline(settings.header_timeout_s),
        timeout_keep_alive=int(max(settings.keep_alive_timeout_s, 1)),
        server_header=False,
    )


if __name__ == "__main__":
    main()
