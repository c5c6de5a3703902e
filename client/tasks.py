"""Concurrency helpers of the adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def all_or_cancel(*aws: Awaitable[Any]) -> list[Any]:
    """Results of `aws` run concurrently, in order; the first failure, or the caller's cancellation,
    cancels the others (their work must not outlive the request that asked for it)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        # A failure's traceback holds this frame, and a failed task holds the failure: without this the
        # cycle keeps every fetched image of the request alive until the cyclic collector runs, which
        # large buffers never prompt (measured: +100 MiB per round of four image requests).
        del tasks, pending
