"""`python -m client [--port 30000] [--triton-url host:8001] …`: run the adapter with uvicorn."""

from __future__ import annotations

import argparse
import logging.config

import uvicorn

from client.http_protocol import HeadDeadline
from client.logs import log_config
from client.settings import Settings


def settings_from_cli(argv: list[str] | None = None) -> Settings:
    """Settings from `EMBED_*` variables, overridden by flags named after the fields."""
    ap = argparse.ArgumentParser(prog="python -m client", description="OpenAI-compatible embeddings adapter for Triton")
    for name, field in Settings.model_fields.items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=field.description)
    given = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    return Settings(**given)


def main(argv: list[str] | None = None) -> None:
    settings = settings_from_cli(argv)
    problem = settings.exposure_problem()
    if problem is not None:
        raise SystemExit(f"python -m client: {problem}")
    logging.config.dictConfig(log_config(settings.log_level))  # before the app logs its first line
    HeadDeadline.seconds = settings.header_timeout_s
    server = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": log_config(settings.log_level),
        "http": HeadDeadline,
        "timeout_keep_alive": int(max(settings.keep_alive_timeout_s, 1)),
        "server_header": False,
    }
    if settings.workers > 1:
        from client.workers import run_workers

        run_workers(settings, **server)
        return
    from client.app import create_app

    uvicorn.run(create_app(settings), **server)


if __name__ == "__main__":
    main()
