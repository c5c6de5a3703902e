"""What every tower provides to the generic export: its graph, inputs, shapes and Triton models."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from export.configs import Tensor
from export.heads import Head
from export.request import HOSTED_TARGETS
from graphs import GraphBuilder

if TYPE_CHECKING:
    import torch
    from tritonclient.grpc import model_config_pb2 as mc

    from export.checkpoint import Plan
    from export.request import ExportRequest, Profile, Shapes

Samples = tuple[dict[str, "torch.Tensor"], dict[str, dict[int, object]]]


@dataclass(frozen=True)
class TritonModel:
    """One model a tower adds to the repository, and what its version folder holds besides the config."""

    config: mc.ModelConfig
    shell: str = ""  # the runtime/ module whose TritonPythonModel a Python model runs ("": a native engine)
    tokenizer: bool = False  # tokenizer.json beside it
    graph_code: bool = False  # a `torch` host: graphs/ beside runtime/ (it builds the graph), and the weights


class Tower(ABC):
    """A family's text or image tower: one exported graph and the Triton models that serve it."""

    name: ClassVar[str]  # "text" or "image"
    role: ClassVar[str]  # the engine model's role: `<model>_encoder`, `<model>_vision`
    default_head: ClassVar[Head]  # the outputs its graph returns unless the family names another head
    hosted: ClassVar[bool]  # on a native target, the engine sits behind a Python host that packs ragged batches
    controls: ClassVar[tuple[str, ...]]  # its ensemble's optional inputs besides the items (contract/__init__.py)
    fuses_text: ClassVar[bool] = False  # an image item may carry text, embedded with it in one prompt
    items_per_call: ClassVar[int] = 0  # image items its preprocessor takes per request (0: up to the batch)

    def __init__(self, graph: GraphBuilder, head: Head | None = None) -> None:
        self.graph = graph
        self.head = head or self.default_head

    def read(self, checkpoint: Path, config: dict, request: ExportRequest | None) -> Any:
        """What the tower needs from the checkpoint's files (image settings); None for text."""
        return None

    @abstractmethod
    def samples(self, p: Plan) -> Samples:
        """Sample inputs to trace the graph with, and their dynamic axes."""

    @abstractmethod
    def feeds(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        """The fixed validation inputs of the exported graph."""

    def feed_sets(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> list[dict[str, np.ndarray]]:
        """Every batch the engine is validated with: `feeds`, and any other shape serving sends it."""
        return [self.feeds(p, graphs)]

    @abstractmethod
    def engine_io(self, p: Plan) -> tuple[list[Tensor], list[Tensor]]:
        """The exported graph's inputs and outputs, batch axis included (the export checks the ONNX file)."""

    @abstractmethod
    def tensorrt_shapes(self, p: Plan, profile: Profile, request: ExportRequest) -> Shapes:
        """The optimisation profile of its TensorRT plan."""

    @abstractmethod
    def models(self, p: Plan, request: ExportRequest) -> list[TritonModel]:
        """The Triton models this tower adds (engine, preprocessor, ensemble)."""

    def timing_batches(self, p: Plan, texts: list[str], rows: int) -> list[dict[str, np.ndarray]]:
        """`texts` as this tower's graph takes them, in batches of `rows` sorted by length (what
        `--target auto` times each engine on); only text towers have them."""
        from export.errors import ExportError

        raise ExportError(f"{p.family.name}'s {self.name} tower is not timed on texts")

    def one_image(self, p: Plan) -> tuple[dict[str, np.ndarray], str]:
        """One validation image's graph inputs, and the prompt text that marks its features (towers whose
        features go into the text encoder)."""
        from export.errors import ExportError

        raise ExportError(f"{p.family.name}'s {self.name} tower gives the text encoder no image features")

    def problems(self, p: Plan, request: ExportRequest) -> list[str]:
        """What makes `request` impossible for this tower, found before any long work."""
        return []

    def engine_model(self, request: ExportRequest) -> str:
        """`<name>_encoder` / `<name>_vision`: the model its ensemble calls (a host, or the engine itself)."""
        return f"{request.name}_{self.role}"

    def behind_host(self, request: ExportRequest) -> bool:
        return self.hosted and request.target not in HOSTED_TARGETS

    def engine_dir(self, request: ExportRequest) -> Path:
        """Where the exported engine lives: `<name>_<role>/1`, or `…_engine/1` behind a host."""
        model = self.engine_model(request)
        return request.repository / (f"{model}_engine" if self.behind_host(request) else model) / "1"
