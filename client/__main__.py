"""`python -m client [--port 30000] [--triton-url host:8001] …`: run the adapter with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from client.app import create_app
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
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
