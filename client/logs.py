"""One log format for the adapter and uvicorn: time, level, the request id, the logger, the message.

Every line a request causes, uvicorn's access line included, carries its id (the one echoed in the
`x-request-id` header and in a 5xx's message), so `grep <id>` finds all of them; lines outside a
request carry `-`.
"""

from __future__ import annotations

import logging
from typing import Any

from client import request_id

FORMAT = "%(asctime)s %(levelname)s %(request_id)s %(name)s: %(message)s"


class RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.current.get()
        return True


def log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn's `log_config`: the root logger and uvicorn's own."""
    handler = {"class": "logging.StreamHandler", "formatter": "line", "filters": ["request_id"]}
    quiet = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestId}},
        "formatters": {"line": {"format": FORMAT}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {name: quiet for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
