"""A fixed-size image tower (CLIP): image bytes → preprocessor (decode, resize, crop, normalise) →
vision engine → `EMBEDDING`, in its own `<model>_image` ensemble. Images and texts share the space;
an item is one or the other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from contract import IMAGE, TOKEN_COUNT, FixedImageParams
from export.configs import Step, Tensor, ensemble, python_model, string, token_count
from export.errors import ExportError
from export.heads import DENSE
from export.towers.base import Samples, Tower, TritonModel
from export.towers.engines import engine_models
from export.validation import validation_images
from runtime.images import ClipImageSpec, clip_pixels

if TYPE_CHECKING:
    import torch

    from export.checkpoint import Plan
    from export.request import ExportRequest, Profile, Shapes


class FixedImageTower(Tower):
    name, role, default_head, hosted = "image", "vision", DENSE, False
    controls = ()

    def read(self, checkpoint: Path, config: dict, request: ExportRequest | None) -> ClipImageSpec:
        """Resize / crop / normalisation from `preprocessor_config.json` (CLIPImageProcessor's fields)."""
        path = checkpoint / "preprocessor_config.json"
        if not path.exists():
            raise ExportError(f"{checkpoint} has no preprocessor_config.json for its image tower")
        cfg = json.loads(path.read_text())
        size, crop = cfg.get("size", {}), cfg.get("crop_size", {})
        edge = size.get("shortest_edge") if isinstance(size, dict) else size
        crop_h, crop_w = (crop.get("height"), crop.get("width")) if isinstance(crop, dict) else (crop, crop)
        if not (edge and crop_h and crop_w):
            raise ExportError(f"unsupported image size settings in {path}: size={size}, crop_size={crop}")
        if not (cfg.get("do_resize", True) and cfg.get("do_center_crop", True) and cfg.get("do_normalize", True)):
            raise ExportError(
                f"{path} switches off resize, crop or normalisation, which the served path always applies"
            )
        return ClipImageSpec(
            int(edge),
            int(crop_h),
            int(crop_w),
            tuple(cfg["image_mean"]),
            tuple(cfg["image_std"]),
            int(cfg.get("resample", 3)),
        )

    @staticmethod
    def spec(p: Plan) -> ClipImageSpec:
        if not isinstance(p.image, ClipImageSpec):
            raise ExportError(f"{p.family.name}: the plan holds no fixed-size image settings")
        return p.image

    def _pixels(self, p: Plan, batched: bool) -> tuple[int, ...]:
        s = self.spec(p)
        return (-1, 3, s.crop_height, s.crop_width) if batched else (3, s.crop_height, s.crop_width)

    def samples(self, p: Plan) -> Samples:
        import torch

        s = self.spec(p)
        pixels = torch.zeros((2, 3, s.crop_height, s.crop_width))
        return {"pixel_values": pixels}, {"pixel_values": {0: torch.export.Dim("batch", max=4096)}}

    def feeds(self, p: Plan, graphs: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        return {"pixel_values": np.stack([clip_pixels(img, self.spec(p)) for img in validation_images()])}

    def engine_io(self, p: Plan) -> tuple[list[Tensor], list[Tensor]]:
        inputs = [Tensor("pixel_values", mc.TYPE_FP32, self._pixels(p, batched=True))]
        return inputs, self.head.engine(p)

    def tensorrt_shapes(self, p: Plan, profile: Profile, request: ExportRequest) -> Shapes:
        """The profile's batch range over fixed-size `pixel_values`."""
        dims = self._pixels(p, batched=False)
        return {"pixel_values": tuple((b, *dims) for b in (profile.min_batch, profile.opt_batch, profile.max_batch))}

    def models(self, p: Plan, request: ExportRequest) -> list[TritonModel]:
        name, serving, s = request.name, request.serving, self.spec(p)
        pixels = Tensor("pixel_values", mc.TYPE_FP32, self._pixels(p, batched=False))
        params = FixedImageParams(
            s.shortest_edge, s.crop_height, s.crop_width, s.mean, s.std, s.resample, serving.max_image_pixels
        )
        preprocess = python_model(
            f"{name}_image_preprocess", [string(IMAGE)], [pixels, token_count()], [params], serving
        )
        engines = engine_models(self, p, request, [pixels], self.head.served(p), "concatenate")
        steps = [
            Step(preprocess.name, (IMAGE,), ("pixel_values", TOKEN_COUNT)),
            Step(self.engine_model(request), ("pixel_values",), self.head.names),
        ]
        ens = ensemble(f"{name}_image", [string(IMAGE)], [*self.head.served(p), token_count()], steps, serving)
        return [TritonModel(ens), TritonModel(preprocess, "fixed_image_preprocess_model"), *engines]
