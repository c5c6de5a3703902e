"""Which models are served and under which names, refreshed from Triton."""

from __future__ import annotations

import asyncio
import time

from client.errors import APIError, bad_request, model_not_found
from client.triton import ServedModel, TritonClient
from contract import TASK_TABLE


class ModelRegistry:
    """Resolves request model names (ids, Hugging Face ids, aliases) to ensembles."""

    def __init__(self, triton: TritonClient, refresh_s: float, min_refresh_s: float = 1.0) -> None:
        self.triton = triton
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s  # unknown names refresh at most this often, for all requests
        self._models: list[ServedModel] = []
        self._by_name: dict[str, ServedModel] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()
        self._seen: set[str] = set()  # every name ever served: one missing now is reloading, not unknown

    async def refresh(self, max_age: float = 0.0) -> list[ServedModel]:
        """Re-read the served models from Triton, one refresh at a time; callers that waited for one in
        flight share its result when it is at most `max_age` seconds old."""
        async with self._lock:
            if time.monotonic() - self._loaded_at <= max_age:
                return self._models
            models = await self.triton.models()
            self._models = models
            self._by_name = {name: m for m in models for name in m.names}
            self._seen.update(self._by_name)
            self._loaded_at = time.monotonic()
            return models

    async def models(self) -> list[ServedModel]:
        max_age = self.refresh_s if self._models else self.min_refresh_s  # none yet: look again soon
        if time.monotonic() - self._loaded_at > max_age:
            await self.refresh(max_age)
        return self._models

    def known(self, name: object) -> str | None:
        """The served name a request's `model` field stands for, if it is served now (no Triton call)."""
        model = self._by_name.get(name) if isinstance(name, str) else None
        return model.name if model is not None else None

    async def resolve(self, name: str | None, task: str | None = None) -> ServedModel:
        """The model a request names, which must serve `task` (embed, rerank; None: any); with no name,
        the only served model of that task."""
        models = await self.models()  # refreshed when empty
        if name is None or name == "":
            fitting = [m for m in models if task is None or m.card.serves(task)]
            if len(fitting) == 1:
                return fitting[0]
            if not models:
                raise not_ready("no embedding model is ready in Triton; retry shortly")
            if not fitting:
                raise bad_request(f"no served model serves {task} (GET /v1/models lists each one's tasks)", "model")
            raise bad_request("model is required when several models are served", param="model")
        model = await self._named(name, models)
        if task is not None and not model.card.serves(task):
            raise bad_request(wrong_task(model, task), param="model")
        return model

    async def _named(self, name: str, models: list[ServedModel]) -> ServedModel:
        if name not in self._by_name:  # a new model, or an unknown name: at most one refresh a second for all
            models = await self.refresh(self.min_refresh_s)
        if name not in self._by_name:
            if name in self._seen:
                raise not_ready(f"model {name!r} is not ready in Triton (it may be reloading); retry shortly")
            raise model_not_found(name, sorted(m.names for m in models))
        return self._by_name[name]


def wrong_task(model: ServedModel, task: str) -> str:
    """What a request for a task its model lacks is told: the model's own task, and the route serving it."""
    own = model.card.task
    return f"model {model.name!r} serves {own}, not {task}: send it to {TASK_TABLE[own].routes[0]}"


def not_ready(message: str) -> APIError:
    return APIError(503, message, "service_unavailable", "model", "model_not_ready", exposed=True)
