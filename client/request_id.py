"""The id of the request being served: taken from a sane `x-request-id` header or made, echoed on every response.

A 5xx tells the client only this id; the adapter's log line with the detail carries the same id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
current: ContextVar[str] = ContextVar("request_id", default="-")


def adopt(incoming: str | None) -> str:
    """The client's id when it is short and plain, else a new one; it becomes the current id."""
    rid = incoming if incoming is not None and _SANE.fullmatch(incoming) else uuid.uuid4().hex
    current.set(rid)
    return rid
