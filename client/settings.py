"""The adapter's one settings object: environment variables (`EMBED_*`) and CLI flags."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from client.egress import UrlMode, normalise_entry
from contract import Truncate


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every knob of the adapter, typed, defaulted and described."""

    model_config = SettingsConfigDict(env_prefix="EMBED_", extra="ignore")

    host: str = Field("127.0.0.1", description="address the adapter listens on (the image sets 0.0.0.0)")
    port: int = Field(30000, description="port of the OpenAI-compatible API")
    triton_url: str = Field(
        "127.0.0.1:8001",
        description="Triton's gRPC endpoint host:port; several replicas: dns:///headless-service:8001 or "
        "ipv4:host1:8001,host2:8001 (calls are spread round-robin)",
    )
    triton_admin_key: str | None = Field(
        None,
        description="the key Triton's admin protocols are restricted to (its model listing is one); "
        "the header is triton-admin-key",
    )
    triton_admin_key_file: Path | None = Field(
        None,
        description="a file holding triton_admin_key, read at start when that is unset (compose's generated key)",
    )
    triton_timeout_s: float = Field(60.0, description="deadline of one Triton inference call")
    connect_timeout_s: float = Field(2.0, description="deadline of Triton health and metadata calls")
    model_refresh_s: float = Field(10.0, description="how often the list of served models is re-read from Triton")
    model_refresh_min_s: float = Field(
        1.0,
        ge=0,
        description="the shortest time between two re-reads that requests naming an unknown model cause "
        "(one at a time, shared by every request waiting for it)",
    )
    max_items_per_request: int = Field(2048, ge=1, description="most inputs in one request (413 beyond)")
    max_body_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="largest request body (413 beyond; TEI's default is 2 MB): 2,048 texts of 1 KiB, or a "
        "1.5 MiB image inline (larger images by URL); JSON values are counted against max_items_per_request "
        "before the body is parsed",
    )
    max_buffered_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="bytes that all requests together may hold at once, request bodies and fetched images "
        "(503 with Retry-After beyond)",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="deadline to receive a request body (408 beyond)")
    header_timeout_s: float = Field(10.0, gt=0, description="deadline to receive a request's headers")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_token_ids_per_item: int = Field(
        32768, ge=1, description="longest token-id list of one item (413 beyond), counted before validation"
    )
    max_instruction_chars: int = Field(2048, ge=1, description="longest `instruction` (413 beyond)")
    max_documents_per_request: int = Field(1000, ge=1, description="most documents in one rerank request (413 beyond)")
    max_query_chars: int = Field(
        8192, ge=1, description="longest rerank `query` (413 beyond): it travels beside every document"
    )
    max_query_document_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="a rerank query's UTF-8 bytes times its number of documents (413 beyond): every pair "
        "repeats the query, so this bounds what a request costs the tokenizer and the model beyond its body",
    )
    max_token_vectors_per_request: int = Field(
        16384,
        ge=1,
        description="most per-token vectors a request may ask for (`/pooling` token_embed, MaxSim reranking; "
        "413 beyond), counted before inference from its texts' UTF-8 bytes, each capped at the model's limit: "
        "a 1,024-wide vector a token makes a 2 MiB body worth gigabytes otherwise",
    )
    default_truncate: Truncate | None = Field(
        None, description="truncation when the request names none (unset: each model's export default)"
    )
    image_timeout_s: float = Field(10.0, description="deadline to fetch one image URL")
    image_request_timeout_s: float = Field(
        15.0, gt=0, description="deadline for all of one request's images, waits for a fetch slot included (400 beyond)"
    )
    image_max_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest image accepted, encoded")
    image_max_per_request: int = Field(64, ge=1, description="most image items in one request (413 beyond)")
    image_max_total_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="most image bytes in one request, all items together (413 beyond)"
    )
    image_fetch_concurrency: int = Field(8, ge=1, description="image URLs one request fetches at once")
    image_fetch_global: int = Field(32, ge=1, description="image URLs all requests together fetch at once")
    image_max_redirects: int = Field(3, ge=0, description="redirects followed per image URL, each re-checked")
    image_url_mode: UrlMode = Field(
        "public",
        description="which image URLs are fetched: off (none; data URIs and base64 only), allowlist (only "
        "hosts in image_allowed_hosts) or public (those hosts, and any host whose addresses are all public)",
    )
    image_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="host or host:port entries fetched whatever their addresses (loopback, private); "
        "a host without a port is allowed on every port",
    )
    image_local_dir: Path | None = Field(None, description="local image paths are read only under this folder")
    api_key: str | None = Field(
        None, description="when set, /v1/*, /tokenize and the API docs need 'Authorization: Bearer <key>'"
    )
    allow_unauthenticated: bool = Field(
        False,
        description="listen on a non-loopback address without api_key (refused otherwise: say it on purpose)",
    )
    published_address: str | None = Field(
        None,
        description="the address clients reach the API on, when it is not `host` (a container's published "
        "port): the key rule judges this one",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API answers to besides localhost, any IP address, host and "
        "published_address (400 otherwise: DNS rebinding); `.example.com` allows its subdomains, `*` any name",
    )
    api_docs: bool = Field(True, description="serve /docs and /openapi.json (behind the API key when one is set)")
    max_in_flight: int = Field(256, ge=1, description="requests processed at once; more are refused with 429")
    coalesce: bool = Field(
        True,
        description="join concurrent requests for one model and the same options into one Triton call "
        "(false: each request is its own call)",
    )
    calls_in_flight: int = Field(
        2, ge=1, description="Triton calls in flight per model and options; requests arriving meanwhile join the next"
    )
    ready_ttl_s: float = Field(30.0, description="a model counts as ready if it answered an inference this recently")
    ready_cache_s: float = Field(
        1.0, ge=0, description="/health/ready answers from its last probe this long; concurrent calls share one"
    )
    allow_any_dimensions: bool = Field(
        False, description="accept any `dimensions` (truncate + re-normalise), lossy for models not Matryoshka-trained"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="adapter processes sharing the port, each with its own event loop and coalescer; every "
        "bound above holds per worker",
    )

    @field_validator("api_key", "triton_admin_key", "published_address", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`EMBED_API_KEY=` (compose passes an unset variable as empty) means no key, not the empty key."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        if self.triton_admin_key is None and self.triton_admin_key_file is not None:
            try:
                self.triton_admin_key = self.triton_admin_key_file.read_text().strip() or None
            except OSError as exc:
                raise ValueError(f"cannot read triton_admin_key_file {self.triton_admin_key_file}: {exc}") from exc
        return self

    def exposure_problem(self) -> str | None:
        """Why the adapter must not start: reachable beyond loopback with no API key, not said on purpose."""
        where = self.published_address or self.host
        if self.api_key is not None or self.allow_unauthenticated or is_loopback(where):
            return None
        return (
            f"the API would be reachable on {where} without a key: set EMBED_API_KEY, or "
            "EMBED_ALLOW_UNAUTHENTICATED=true if that is what you want"
        )

    @field_validator("image_allowed_hosts", "allowed_hosts", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """`EMBED_IMAGE_ALLOWED_HOSTS=a,b` and `--image-allowed-hosts a,b` alike."""
        return [h.strip() for h in value.split(",") if h.strip()] if isinstance(value, str) else value

    @field_validator("image_allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        """Each entry a host or host:port, refused at start otherwise (a typo must not silently allow nothing)."""
        for entry in value:
            normalise_entry(entry)
        return value
