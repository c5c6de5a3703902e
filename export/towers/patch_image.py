"""A patch-sequence image tower (Qwen2-VL, as GME uses it): an image item (with optional text) →
preprocessor (the authors' resize, the processor's resize and patches, the prompt with its image
pads) → vision tower (patches of many images packed into one call) → the text tower's encoder, which
scatters the image features over the pads, → `EMBEDDING`, in the `<model>_image` ensemble."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from contract import EMBEDDING, FUSED_IMAGE_CONTROLS, IMAGE, IMAGE_EMBEDS, PatchImageParams
from export.configs import Step, Tensor, ensemble, python_model, string, token_count
from export.errors import ExportError
from export.heads import DENSE, IMAGE_FEATURES
from export.towers.base import GraphBuilder, Samples, Tower, TritonModel
from export.towers.engines import engine_models
from export.towers.text import token_outputs
from export.validation import validation_images
from runtime.onnx_encoder import VISION_PATCHES_PER_CALL
from runtime.qwen2vl import VisionSpec, image_mark, patches, vision_positions

if TYPE_CHECKING:
    import torch

    from export.checkpoint import Plan
    from export.request import ExportRequest, Profile, Shapes

PATCH = 1176  # 3 channels × temporal 2 × 14 × 14
PATCH_INPUTS = ("pixel_values", "position_ids", "segment_ids")


class PatchImageTower(Tower):
    name, role, default_head, hosted = "image", "vision", IMAGE_FEATURES, True
    controls = FUSED_IMAGE_CONTROLS  # the item's text is fused with its image
    fuses_text, items_per_call = True, 1  # one prompt per item: its image pads and its text together

    def __init__(self, graph: GraphBuilder, min_pixels: int, max_pixels: int) -> None:
        super().__init__(graph)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # the family's resize bounds

    def read(self, checkpoint: Path, config: dict, request: ExportRequest | None) -> VisionSpec:
        """The family's image bounds unless the export overrides them; mean/std and patching from the checkpoint."""
        path = checkpoint / "preprocessor_config.json"
        cfg = json.loads(path.read_text()) if path.exists() else {}
        vision = config.get("vision_config", {})
        return VisionSpec(
            min_pixels=(request.min_pixels if request else None) or self.min_pixels,
            max_pixels=(request.max_pixels if request else None) or self.max_pixels,
            mean=tuple(cfg.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
            patch_size=int(vision.get("patch_size", 14)),
            merge_size=int(vision.get("spatial_merge_size", 2)),
            temporal_patch_size=int(vision.get("temporal_patch_size", 2)),
        )

    @staticmethod
    def spec(p: Plan) -> VisionSpec:
        if not isinstance(p.image, VisionSpec):
            raise ExportError(f"{p.family.name}: the plan holds no patch-image settings")
        return p.image

    @staticmethod
    def patches_per_call(request: ExportRequest) -> int:
        """Patches the vision host packs into one engine call (runtime/onnx_encoder.py has the measurements)."""
        return VISION_PATCHES_PER_CALL["gpu" if request.on_gpu else "cpu"]

    def samples(self, p: Plan) -> Samples:
        """Two 4×4-patch images packed: 32 patches, dynamic patch axis."""
        import torch

        grid = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij"), dim=-1).reshape(16, 2)
        samples = {
            "pixel_values": torch.zeros((32, PATCH)),
            "position_ids": torch.cat([grid, grid]),
            "segment_ids": torch.cat([torch.zeros(16, dtype=torch.int64), torch.ones(16, dtype=torch.int64)]),
        }
        count = torch.export.Dim("patches", max=1 << 20)
        return samples, {name: {0: count} for name in samples}

    def _packed(self, p: Plan, images: list) -> dict[str, np.ndarray]:
        spec = self.spec(p)
        parts = [patches(img, spec) for img in images]
        return {
            "pixel_values": np.concatenate([x for x, _, _ in parts]),
            "position_ids": np.concatenate([vision_positions(gh, gw, spec.merge_size) for _, gh, gw in parts]),
            "segment_ids": np.concatenate([np.full(len(x), i, dtype=np.int64) for i, (x, _, _) in enumerate(parts)]),
        }

    def feeds(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        """The validation images packed as one call: patches, positions, and which image each patch belongs to."""
        return self._packed(p, validation_images())

    def one_image(self, p: Plan) -> tuple[dict[str, np.ndarray], str]:
        """The first validation image alone, and the prompt marker of its expanded image pads."""
        spec = self.spec(p)
        feed = self._packed(p, validation_images()[:1])
        return feed, image_mark(len(feed["pixel_values"]) // spec.merge_size**2)

    def engine_io(self, p: Plan) -> tuple[list[Tensor], list[Tensor]]:
        inputs = [
            Tensor("pixel_values", mc.TYPE_FP32, (-1, PATCH)),
            Tensor("position_ids", mc.TYPE_INT64, (-1, 2)),
            Tensor("segment_ids", mc.TYPE_INT64, (-1,)),
        ]
        return inputs, self.head.engine(p)

    def tensorrt_shapes(self, p: Plan, profile: Profile, request: ExportRequest) -> Shapes:
        """What the host packs: the patches of several images, up to its limit a call, or one larger image alone."""
        spec = self.spec(p)
        packed = self.patches_per_call(request)
        largest_image = spec.max_pixels // spec.patch_size**2
        lo, opt, hi = 4, packed, max(packed, largest_image)  # one 2×2 merge … a full call
        return {
            "pixel_values": ((lo, PATCH), (opt, PATCH), (hi, PATCH)),
            "position_ids": ((lo, 2), (opt, 2), (hi, 2)),
            "segment_ids": ((lo,), (opt,), (hi,)),
        }

    def models(self, p: Plan, request: ExportRequest) -> list[TritonModel]:
        name, serving, spec = request.name, request.serving, self.spec(p)
        produced = [
            *token_outputs(),
            Tensor("pixel_values", mc.TYPE_FP32, (-1, PATCH)),
            Tensor("position_ids", mc.TYPE_INT64, (-1, 2)),
            Tensor("segment_ids", mc.TYPE_INT64, (-1,)),
        ]
        inputs = [string(IMAGE), *(string(n, optional=True) for n in self.controls)]
        params = PatchImageParams(
            spec.min_pixels,
            spec.max_pixels,
            spec.mean,
            spec.std,
            spec.patch_size,
            spec.merge_size,
            spec.temporal_patch_size,
            serving.max_image_pixels,
        )
        preprocess = python_model(
            f"{name}_image_preprocess", inputs, produced, [p.text_params(request), params], serving
        )
        host_io = [t for t in produced if t.name in PATCH_INPUTS]
        features = [Tensor(IMAGE_EMBEDS, mc.TYPE_FP32, (-1, p.dimension))]  # rows per image: as many as its merges
        engines = engine_models(
            self, p, request, host_io, features, "vision_packed", max_patches=self.patches_per_call(request)
        )
        encoder = f"{name}_encoder"
        steps = [
            Step(preprocess.name, tuple(t.name for t in inputs), tuple(t.name for t in produced)),
            Step(self.engine_model(request), PATCH_INPUTS, (IMAGE_EMBEDS,)),
            Step(encoder, ("input_ids", "attention_mask", IMAGE_EMBEDS), (EMBEDDING,)),
        ]
        ens = ensemble(f"{name}_image", inputs, [*DENSE.served(p), token_count()], steps, serving)
        return [TritonModel(ens), TritonModel(preprocess, "patch_image_preprocess_model", tokenizer=True), *engines]
