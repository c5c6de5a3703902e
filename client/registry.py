"""Which models are served and under which names, refreshed from Triton."""

from __future__ import annotations

import asyncio
import time

from client.errors import APIError, bad_request, model_not_found
from client.triton import ServedModel, TritonClient


class ModelRegistry:
    """Resolves request model names (ids, Hugging Face ids, aliases) to ensembles."""

    def __init__(self, triton: TritonClient, refresh_s: float) -> None:
        self.triton = triton
        self.refresh_s = refresh_s
        self._models: list[ServedModel] = []
        self._by_name: dict[str, ServedModel] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._seen: set[str] = set()  # every name ever served: one missing now is reloading, not unknown

    async def refresh(self) -> list[ServedModel]:
        async with self._lock:
            models = await self.triton.models()
            self._models = models
            self._by_name = {name: m for m in models for name in m.names}
            self._seen.update(self._by_name)
            self._loaded_at = time.monotonic()
            return models

    async def models(self) -> list[ServedModel]:
        if time.monotonic() - self._loaded_at > self.refresh_s or not self._models:
            await self.refresh()
        return self._models

    def known(self, name: object) -> str | None:
        """The served name a request's `model` field stands for, if it is served now (no Triton call)."""
        model = self._by_name.get(name) if isinstance(name, str) else None
        return model.name if model is not None else None

    async def resolve(self, name: str | None) -> ServedModel:
        """The model a request names; with no name, the only served model."""
        models = await self.models()  # refreshed when empty
        if name is None or name == "":
            if len(models) == 1:
                return models[0]
            if not models:
                raise not_ready("no embedding model is ready in Triton; retry shortly")
            raise bad_request("model is required when several models are served", param="model")
        if name not in self._by_name:
            models = await self.refresh()
        if name not in self._by_name:
            if name in self._seen:
                raise not_ready(f"model {name!r} is not ready in Triton (it may be reloading); retry shortly")
            raise model_not_found(name, sorted(n for m in models for n in m.names))
        return self._by_name[name]


def not_ready(message: str) -> APIError:
    return APIError(503, message, "service_unavailable", "model", "model_not_ready", exposed=True)
