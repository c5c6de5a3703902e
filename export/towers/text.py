"""The text tower: text → preprocessor (template, tokenizer, frame, bucket) → encoder → `EMBEDDING`.

With `image_features` (GME) the encoder also takes the image features its image ensemble scatters
over the `<|image_pad|>` tokens, so it sits behind a host that packs rows with their features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from contract import IMAGE_EMBEDS, TEXT, TEXT_CONTROLS, EncoderHostParams
from export.configs import Step, Tensor, ensemble, python_model, string, token_count
from export.errors import ExportError
from export.graph import torch_outputs
from export.heads import DENSE, Head
from export.towers.base import GraphBuilder, Samples, Tower, TritonModel
from export.towers.engines import engine_models
from export.validation import VALIDATION_TEXTS
from runtime.text import encode, frame_all, pad

if TYPE_CHECKING:
    import torch

    from export.checkpoint import Plan
    from export.request import ExportRequest, Profile, Shapes

TOKENS = ("input_ids", "attention_mask")


def text_inputs() -> list[Tensor]:
    """TEXT plus the optional per-request controls, the same on the ensemble and its preprocessor."""
    return [string(TEXT), *(string(n, optional=True) for n in TextTower.controls)]


def token_outputs() -> list[Tensor]:
    return [
        Tensor("input_ids", mc.TYPE_INT64, (-1,)),
        Tensor("attention_mask", mc.TYPE_INT64, (-1,)),
        token_count(),
    ]


class TextTower(Tower):
    name, role, default_head = "text", "encoder", DENSE
    controls = TEXT_CONTROLS

    def __init__(self, graph: GraphBuilder, image_features: bool = False, head: Head | None = None) -> None:
        super().__init__(graph, head)
        self.image_features = image_features

    @property
    def hosted(self) -> bool:  # type: ignore[override]
        """Behind a Python host on every target: to pack rows with image features, or to compact a
        vocabulary-wide output before it leaves."""
        return self.image_features or bool(self.head.sparse_source)

    def samples(self, p: Plan) -> Samples:
        import torch

        ids = torch.ones((2, min(16, p.layout.max_length)), dtype=torch.int64)
        batch, seq = torch.export.Dim("batch", max=4096), torch.export.Dim("seq", max=p.layout.max_length)
        samples = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        dynamic: dict[str, dict[int, object]] = {name: {0: batch, 1: seq} for name in TOKENS}
        if self.image_features:  # row 0 holds 4 image pads, whose features come as `image_embeds`
            ids[0, 2:6] = self._image_token(p)
            samples["image_embeds"] = torch.zeros((4, p.dimension))
            dynamic["image_embeds"] = {0: torch.export.Dim("image_tokens", max=1 << 20)}
        return samples, dynamic

    def _image_token(self, p: Plan) -> int:
        if p.image_token_id is None:
            raise ExportError(f"{p.family.name} takes image features, and config.json names no image_token_id")
        return p.image_token_id

    def feeds(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        """The validation texts, templated as documents; with image features, one more row holding an image."""
        texts = list(VALIDATION_TEXTS)
        template, instruction = p.prompts.document_template, p.prompts.default_instruction
        prompts = [template.format(instruction=instruction, text=t) if template else t for t in texts]
        if not self.image_features:
            batch = pad(frame_all(encode(p.tokenizer, prompts), p.layout, "END"), p.layout)
            return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        image = p.family.image_tower
        if image is None or "image" not in graphs:
            raise ExportError(f"{p.family.name}'s text tower takes image features, and it has no image tower")
        one, marker = image.one_image(p)
        features = torch_outputs(graphs["image"], image.head.names, one)[IMAGE_EMBEDS]
        prompts.append(template.format(instruction=instruction, text=marker + texts[0]) if template else marker)
        batch = pad(frame_all(encode(p.tokenizer, prompts), p.layout, "END"), p.layout)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "image_embeds": features}

    def timing_batches(self, p: Plan, texts: list[str], rows: int) -> list[dict[str, np.ndarray]]:
        template, instruction = p.prompts.document_template, p.prompts.default_instruction
        prompts = [template.format(instruction=instruction, text=t) if template else t for t in texts]
        framed = sorted(frame_all(encode(p.tokenizer, prompts), p.layout, "END"), key=len)
        batches = []
        for start in range(0, len(framed), rows):
            batch = pad(framed[start : start + rows], p.layout)
            width = int(batch.attention_mask.sum(axis=1).max())
            feed = {"input_ids": batch.input_ids[:, :width], "attention_mask": batch.attention_mask[:, :width]}
            if self.image_features:  # text items: no image features
                feed["image_embeds"] = np.zeros((0, p.dimension), dtype=np.float32)
            batches.append(feed)
        return batches

    def feed_sets(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> list[dict[str, np.ndarray]]:
        """With image features, also the text-only batch: serving sends it `image_embeds` with 0 rows,
        a shape TensorRT must take too (Triton's own zero-size tests skip plan models)."""
        feeds = self.feeds(p, graphs)
        if not self.image_features:
            return [feeds]
        rows = len(VALIDATION_TEXTS)
        text_only = {
            "input_ids": feeds["input_ids"][:rows],
            "attention_mask": feeds["attention_mask"][:rows],
            "image_embeds": feeds["image_embeds"][:0],
        }
        return [feeds, text_only]

    def engine_io(self, p: Plan) -> tuple[list[Tensor], list[Tensor]]:
        inputs = [Tensor(n, mc.TYPE_INT64, (-1, -1)) for n in TOKENS]
        if self.image_features:
            inputs.append(Tensor("image_embeds", mc.TYPE_FP32, (-1, p.dimension)))
        return inputs, self.head.engine(p)

    def tensorrt_shapes(self, p: Plan, profile: Profile, request: ExportRequest) -> Shapes:
        shapes = profile.shapes()
        if self.image_features:
            shapes["image_embeds"] = ((0, p.dimension), (256, p.dimension), (EncoderHostParams.max_tokens, p.dimension))
        return shapes

    def call_rows(self, p: Plan, request: ExportRequest) -> int:
        """Rows a host sends its engine in one call: a TensorRT engine takes no more than its profile's."""
        rows = EncoderHostParams.max_rows
        return min(rows, request.tensorrt_profile(p).max_batch) if request.target == "tensorrt" else rows

    def models(self, p: Plan, request: ExportRequest) -> list[TritonModel]:
        name, serving = request.name, request.serving
        preprocess = python_model(
            f"{name}_preprocess", text_inputs(), token_outputs(), [p.text_params(request)], serving
        )
        inputs = [Tensor(n, mc.TYPE_INT64, (-1,)) for n in TOKENS]
        if self.image_features:
            inputs.append(Tensor(IMAGE_EMBEDS, mc.TYPE_FP32, (-1, p.dimension), optional=True))
        rows = max(serving.encoder_max_batch_size, serving.max_batch_size)  # text rows are cheap to regroup
        outputs = self.head.served(p)
        engines = engine_models(
            self, p, request, inputs, outputs, "length_packed", rows, call_rows=self.call_rows(p, request)
        )
        steps = [
            Step(preprocess.name, tuple(t.name for t in text_inputs()), tuple(t.name for t in token_outputs())),
            Step(self.engine_model(request), TOKENS, tuple(t.name for t in outputs)),
        ]
        card = p.card(request)
        ens = ensemble(name, text_inputs(), [*outputs, token_count()], steps, serving, card)
        return [TritonModel(ens), TritonModel(preprocess, "preprocess_model", tokenizer=True), *engines]
