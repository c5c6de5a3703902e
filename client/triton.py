"""The async gRPC connection to Triton: model discovery and embedding calls.

Triton errors are translated here, once: INVALID_ARGUMENT from a preprocessor
becomes a 400, an unreachable server a 503, anything else a 500.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from client.errors import APIError, bad_request, internal, unavailable

_UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
_INPUT_INDEX = re.compile(r"input\[(\d+)\]")


@dataclass(frozen=True)
class ServedModel:
    """An embedding ensemble as its `config.pbtxt` parameters describe it."""

    name: str
    hf_id: str
    aliases: tuple[str, ...]
    dimension: int
    max_tokens: int
    modalities: tuple[str, ...]
    max_batch_size: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for n in (self.name, self.hf_id, *self.aliases) if n))


def translate(exc: InferenceServerException, offset: int = 0) -> APIError:
    """Map a Triton error to an API error; `input[i]` in messages is shifted by `offset`."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status in _UNAVAILABLE or "failed to connect" in message.lower():
        return unavailable(f"Triton is unavailable: {message}")
    if status == "StatusCode.INVALID_ARGUMENT":
        message = _INPUT_INDEX.sub(lambda m: f"input[{int(m.group(1)) + offset}]", message)
        return bad_request(message, param="input")
    return internal(f"Triton failed: {message}")


class TritonClient:
    """One gRPC channel, created and closed by the app's lifespan."""

    def __init__(self, url: str, timeout_s: float, connect_timeout_s: float) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s

    async def close(self) -> None:
        await self.client.close()

    async def models(self) -> list[ServedModel]:
        """The ready embedding ensembles (models whose config says `embedding_model`)."""
        try:
            index = await self.client.get_model_repository_index(
                as_json=True, client_timeout=self.connect_timeout_s
            )
            served = []
            for entry in index.get("models", []):
                if entry.get("state") != "READY":
                    continue
                cfg = (await self.client.get_model_config(
                    entry["name"], as_json=True, client_timeout=self.connect_timeout_s
                ))["config"]
                params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
                if params.get("embedding_model") != "true":
                    continue
                served.append(ServedModel(
                    name=cfg["name"],
                    hf_id=params.get("hf_id", ""),
                    aliases=tuple(a for a in params.get("aliases", "").split(",") if a),
                    dimension=int(params["dimension"]),
                    max_tokens=int(params["max_tokens"]),
                    modalities=tuple(params.get("modalities", "text").split(",")),
                    max_batch_size=int(cfg.get("max_batch_size", 0)) or 1,
                ))
            return served
        except InferenceServerException as exc:
            raise translate(exc) from exc

    async def embed(self, model: ServedModel, texts: list[str], options: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings `[n, dim]` and token counts `[n]`, chunked by the model's max batch, in order.

        `options` fills the ensemble's optional per-request inputs (TRUNCATE, INPUT_TYPE, INSTRUCTION).
        """
        size = model.max_batch_size
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        parts = await asyncio.gather(*(self._infer(model.name, c, options or {}, i * size) for i, c in enumerate(chunks)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    async def _infer(self, name: str, texts: list[str], options: dict[str, str], offset: int) -> tuple[np.ndarray, np.ndarray]:
        inputs = []
        for tensor, values in (("TEXT", texts), *((k, [v] * len(texts)) for k, v in options.items())):
            data = np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)
            inputs.append(grpcclient.InferInput(tensor, list(data.shape), "BYTES"))
            inputs[-1].set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput("EMBEDDING"), grpcclient.InferRequestedOutput("TOKEN_COUNT")]
        try:
            result = await self.client.infer(name, inputs, outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise translate(exc, offset) from exc
        return result.as_numpy("EMBEDDING"), result.as_numpy("TOKEN_COUNT").reshape(-1)
