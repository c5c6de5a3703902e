"""Typed API errors and the one OpenAI error envelope they all leave in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class APIError(Exception):
    """An error with its HTTP status, rendered as `{"error": {...}}`."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    exposed: bool = False  # a 5xx whose message is the adapter's own words, safe to show as it is

    def headers(self) -> dict[str, str]:
        """Headers the status asks for: a 503 or 429 says when to retry."""
        return {"Retry-After": "1"} if self.status in (429, 503) else {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def model_not_found(name: str, served: list[tuple[str, ...]]) -> APIError:
    """`served`: each model's names, its id first (`all-MiniLM-L6-v2 (also sentence-transformers/…)`)."""
    listing = "; ".join(f"{names[0]} (also {', '.join(names[1:])})" if names[1:] else names[0] for names in served)
    listing = listing or "none"
    return APIError(
        404,
        f"The model {name!r} does not exist; served models: {listing}",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, "invalid_request_error", param, "request_too_large")


def body_too_large(size: int, limit: int) -> APIError | None:
    """The body-size rule, for a declared Content-Length and for a body read without one."""
    if size <= limit:
        return None
    return too_large(f"request body has {size} bytes; the maximum is {limit}")


def invalid_fields(errors: list[dict[str, Any]]) -> APIError:
    """A 400 for the first validation error (pydantic's or FastAPI's), naming the field it concerns."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return bad_request("request body is not valid JSON")
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return bad_request(message if param and message.startswith(param) else f"{param or 'body'}: {message}", param)


def unavailable(message: str) -> APIError:
    return APIError(503, message, "service_unavailable", None, "triton_unavailable")


def internal(message: str) -> APIError:
    return APIError(500, message, "internal_error", None, "internal_error")
