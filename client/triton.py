"""The async gRPC connection to Triton: model discovery and inference calls, whose outputs come back
by name (the task table, contract/__init__.py, says which a task's ensembles return).

Triton errors are translated here, once: INVALID_ARGUMENT from a preprocessor
becomes a 400, an unreachable server a 503, anything else a 500.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from client.errors import APIError, bad_request, internal, unavailable
from contract import (
    GRPC_ADMIN_HEADER,
    QUERY,
    REPEATED_ROWS,
    TASK_TABLE,
    TEXT,
    TOKEN_COUNT,
    ContractError,
    EnsembleCard,
    collapse_repeats,
    parameters,
)

log = logging.getLogger("client.triton")

_UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
_RETRIED = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED")  # the call never ran: safe to send again
RETRY_DELAY_S = 0.05
# A Python-backend stub that died (killed, out of memory) fails every call of its model until the
# model is reloaded (launcher/supervisor.py does that): a 503, and worth one retry on another replica.
_DEAD_STUB = re.compile(r"Stub process '[^']*' is not healthy")
# While such a model is reloaded (or Triton loads a new version), its ensemble briefly has no version.
_RELOADING = re.compile(r"Request for unknown model: '[^']*' (has no available versions|is not found)|is not ready")
_INPUT_INDEX = re.compile(r"input\[(\d+)\]")
_ENSEMBLE_PREFIX = re.compile(r"^(in ensemble '[^']*', )+")
Outputs = dict[str, np.ndarray]  # a call's outputs by name, each with one row per input row


@dataclass(frozen=True)
class ServedModel:
    """An embedding ensemble: its name, its batch limit, and what its card (`contract/__init__.py`) says."""

    name: str
    max_batch_size: int
    card: EnsembleCard

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for n in (self.name, self.card.hf_id, *self.card.aliases) if n))

    @property
    def image_batch(self) -> int:
        """Image items per call into the image ensemble."""
        return self.card.image_batch or self.max_batch_size

    def allows_dimensions(self, dimensions: int) -> bool:
        """The full size, a listed Matryoshka size, or one within the Matryoshka range."""
        card = self.card
        listed = dimensions == card.dimension or dimensions in card.matryoshka_dimensions
        return listed or 0 < card.matryoshka_min_dimension <= dimensions <= card.dimension


def translate(exc: InferenceServerException, positions: list[int] | None = None, field: str = "input") -> APIError:
    """Map a Triton error to an API error; `input[i]` in messages becomes the request's item `positions[i]`,
    named `field[…]` (`documents[…]` for a reranker's)."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in _UNAVAILABLE or "failed to connect" in message.lower() or _replica_state(message):
        return unavailable(f"Triton is unavailable: {message}")
    if status == "StatusCode.INVALID_ARGUMENT":
        message = _ENSEMBLE_PREFIX.sub("", message)
        if positions is not None:
            message = _INPUT_INDEX.sub(lambda m: f"{field}[{positions[int(m.group(1))]}]", message)
        return bad_request(message, param=field)
    return internal(f"Triton failed: {message}")


def refused_row(exc: InferenceServerException) -> int | None:
    """The row of the call that an INVALID_ARGUMENT names (`input[i]`), if it names one."""
    if str(exc.status() or "") != "StatusCode.INVALID_ARGUMENT":
        return None
    match = _INPUT_INDEX.search(exc.message() or str(exc))
    return int(match.group(1)) if match else None


def retriable(exc: InferenceServerException) -> bool:
    """The call failed for that server's state, not the input's: a lost replica, a dead stub, or a model
    that replica is unloading (a stopping Triton unloads its models before it closes its port)."""
    return str(exc.status() or "") in _RETRIED or _replica_state(exc.message() or str(exc))


def _replica_state(message: str) -> bool:
    """Triton says this replica cannot run the model now (a dead stub, a model it is reloading or unloading)."""
    return bool(_DEAD_STUB.search(message) or _RELOADING.search(message))


CHANNEL_OPTIONS = [
    # tritonclient's own message limits: channel_args replaces its defaults, and gRPC's 4 MiB receive
    # limit would fail a /tokenize of 64 long texts on an 8k-token model.
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
    # Reconnect quickly after Triton restarts (gRPC's default backoff grows to two minutes), and
    # spread calls over every address of the target: per call, not per connection, across replicas.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.lb_policy_name", "round_robin"),
    # Never through a proxy named in the environment (http_proxy, grpc_proxy): the calls carry Triton's
    # admin key, and Triton is the stack's own.
    ("grpc.enable_http_proxy", 0),
]


async def uncancelled(call):
    """Await `call`, which runs to its end even if the caller is cancelled (a request that failed
    elsewhere, or went away): the adapter never cancels an inference in flight. Triton 2.51 once died
    with a segfault (signal 11 in pthread_mutex_lock) within a second of such a cancellation, in one
    of nine runs of the CLIP suite; its own deadline still bounds the call."""
    task = asyncio.ensure_future(call)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved when nobody awaits it
    return await asyncio.shield(task)


def dns_target(url: str) -> tuple[str, int] | None:
    """(host, port) of a `dns:///host:port` target, else None."""
    if not url.startswith("dns:///"):
        return None
    host, _, port = url.removeprefix("dns:///").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def address_target(addresses: list[str], port: int) -> str:
    """`ipv4:a:port,b:port` (or ipv6) for gRPC, from resolved addresses."""
    if all(":" not in a for a in addresses):
        return "ipv4:" + ",".join(f"{a}:{port}" for a in addresses)
    return "ipv6:" + ",".join(f"[{a}]:{port}" for a in addresses)


def request_inputs(rows: dict[str, list], options: dict[str, str]) -> list[grpcclient.InferInput]:
    """One call's BYTES inputs: `rows` per row, `options` per request. A per-request control is read from
    the first row (contract/__init__.py) and the others travel empty, so an instruction is not copied once
    per row; a repeated row input (a rerank query) travels once per run of equal rows."""
    inputs = []
    n = len(next(iter(rows.values())))
    controls = ((k, [v] + [b""] * (n - 1)) for k, v in options.items())
    for input_name, column in (*rows.items(), *controls):
        if input_name in REPEATED_ROWS:
            column = collapse_repeats(column)
        data = np.array([[v if isinstance(v, bytes) else v.encode("utf-8")] for v in column], dtype=np.object_)
        inputs.append(grpcclient.InferInput(input_name, list(data.shape), "BYTES"))
        inputs[-1].set_data_from_numpy(data)
    return inputs


def join_rows(parts: list[Outputs]) -> Outputs:
    """Calls' outputs joined row-wise by name; a per-token output (`[rows, tokens, …]`), whose calls were
    padded to different widths, is right-padded with zeros to the widest."""
    joined = {}
    for name in parts[0]:
        arrays = [p[name] for p in parts]
        if len(arrays) > 1 and arrays[0].ndim > 1:
            width = max(a.shape[1] for a in arrays)
            arrays = [np.pad(a, ((0, 0), (0, width - a.shape[1]), *((0, 0),) * (a.ndim - 2))) for a in arrays]
        joined[name] = np.concatenate(arrays)
    return joined


class TritonClient:
    """One gRPC channel, created and closed by the app's lifespan.

    A `dns:///name:port` target (a compose service, a headless Kubernetes Service) is resolved again
    at every model-list refresh: gRPC itself re-resolves only when a connection fails, so replicas
    added later (`docker compose up --scale triton=2`) would never get a call. When the addresses
    change, calls move to a channel over exactly those, and the old one closes once its calls are done.
    """

    def __init__(self, url: str, timeout_s: float, connect_timeout_s: float, admin_key: str | None = None) -> None:
        self.url = url
        self.admin_headers = {GRPC_ADMIN_HEADER: admin_key} if admin_key else None
        self.client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_OPTIONS)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.addresses: list[str] = []
        self._retired: set[asyncio.Task] = set()

    async def follow_dns(self) -> bool:
        """Re-resolve a `dns:///` target; move to a new channel when its addresses changed."""
        target = dns_target(self.url)
        if target is None:
            return False
        host, port = target
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return False  # keep the channel we have; gRPC still resolves by itself on failures
        addresses = sorted({info[4][0] for info in infos})
        if not addresses or addresses == self.addresses:
            return False
        first = not self.addresses
        self.addresses = addresses
        if first:
            return False  # the channel made from the name already resolved these
        old, self.client = (
            self.client,
            grpcclient.InferenceServerClient(address_target(addresses, port), channel_args=CHANNEL_OPTIONS),
        )
        task = asyncio.create_task(self._close_later(old))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)
        return True

    async def _close_later(self, client) -> None:
        try:
            await asyncio.sleep(self.timeout_s)  # the longest a call on the old channel can still take
        finally:
            await client.close()

    async def close(self) -> None:
        for task in list(self._retired):
            task.cancel()
        await asyncio.gather(*self._retired, return_exceptions=True)
        await self.client.close()

    async def models(self) -> list[ServedModel]:
        """The ready embedding ensembles (models whose config says `embedding_model`); like an inference,
        a listing lost with its replica is asked again once."""
        await self.follow_dns()
        try:
            return await self._models()
        except InferenceServerException as exc:
            if not retriable(exc):
                raise translate(exc) from exc
        await asyncio.sleep(RETRY_DELAY_S)
        try:
            return await self._models()
        except InferenceServerException as exc:
            raise translate(exc) from exc

    async def _models(self) -> list[ServedModel]:
        index = await self.client.get_model_repository_index(
            headers=self.admin_headers, as_json=True, client_timeout=self.connect_timeout_s
        )
        served = []
        for entry in index.get("models", []):
            if entry.get("state") != "READY":
                continue
            cfg = (
                await self.client.get_model_config(entry["name"], as_json=True, client_timeout=self.connect_timeout_s)
            )["config"]
            params = parameters(cfg)
            if params.get(EnsembleCard.MARK) != "true":
                continue
            try:
                card = EnsembleCard.from_parameters(params)
            except ContractError as exc:  # one model exported wrongly must not hide the others
                log.error("model %s: %s; not served", cfg["name"], exc)
                continue
            served.append(ServedModel(cfg["name"], int(cfg.get("max_batch_size", 0)) or 1, card))
        return served

    async def probe(self, model: ServedModel) -> None:
        """One short text (a reranker: one pair) through the model's ensemble, its error translated (the
        readiness check)."""
        rows = {TEXT: ["readiness probe"], **({QUERY: ["probe"]} if model.card.task == "rerank" else {})}
        await self._infer(model.name, rows, {}, [0], TASK_TABLE[model.card.task].output_names)

    async def tokenize(
        self, preprocess: str, texts: list[str], max_batch: int, options: dict[str, str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids `[n, width]` and counts `[n]` from a model's preprocess step (no encoder)."""
        spans = [(i, min(i + max_batch, len(texts))) for i in range(0, len(texts), max_batch)]
        outputs = ("input_ids", TOKEN_COUNT)
        parts = await asyncio.gather(
            *(self._infer(preprocess, {TEXT: texts[a:b]}, options, list(range(a, b)), outputs) for a, b in spans)
        )
        joined = join_rows(parts)
        return joined["input_ids"], joined[TOKEN_COUNT].reshape(-1)

    async def _infer(
        self,
        name: str,
        rows: dict[str, list],
        options: dict[str, str],
        positions: list[int],
        outputs: tuple[str, ...],
    ) -> Outputs:
        """One call, its Triton error translated; `positions` name the rows in error messages."""
        try:
            return await self.call(name, rows, options, outputs)
        except InferenceServerException as exc:
            raise translate(exc, positions) from exc

    async def call(
        self, name: str, rows: dict[str, list], options: dict[str, str], outputs: tuple[str, ...], priority: int = 0
    ) -> Outputs:
        """One call: `rows` are per-row inputs (equal lengths), `options` the same value for every row;
        the `outputs` asked for, by name, as Triton returns them (one row per input row).

        Raises Triton's own error (after the one retry of a call lost with its replica), untranslated:
        the coalescer reads which row an INVALID_ARGUMENT names.
        """
        inputs = request_inputs(rows, options)
        requested = [grpcclient.InferRequestedOutput(o) for o in outputs]
        deadline = {"client_timeout": self.timeout_s, "timeout": int(self.timeout_s * 1_000_000), "priority": priority}
        try:
            result = await uncancelled(self.client.infer(name, inputs, outputs=requested, **deadline))
        except InferenceServerException as exc:
            # Embedding is idempotent: a call that failed because its replica was gone goes once more
            # (round robin picks the next replica). A refused input is never retried.
            if not retriable(exc):
                raise
            # A moment for the channel to mark a lost replica's connection failed, so round robin
            # sends the retry to another one (without it, 1 of 1,800 calls at concurrency 64 was lost).
            await asyncio.sleep(RETRY_DELAY_S)
            result = await uncancelled(self.client.infer(name, inputs, outputs=requested, **deadline))
        return {name: result.as_numpy(name) for name in outputs}
