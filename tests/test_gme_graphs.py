"""GME building blocks against Hugging Face: image patches, the exportable vision tower, the authors' LM forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from export.families.gme import FAMILY as GME
from graphs.gme import LanguageGraph, VisionGraph
from graphs.settings import GraphSettings
from runtime.errors import InputError
from runtime.qwen2vl import VisionSpec, image_mark, patches, smart_resize, vision_positions
from runtime.text import Prompt, apply_prompt
from tests import tiny

SPEC = VisionSpec(4 * 28 * 28, 16 * 28 * 28, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
SIZES = [(100, 150), (30, 400), (500, 90), (56, 56), (1, 1)]


def image(seed: int, hw: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    path = tiny.qwen2_vl(tmp_path_factory.mktemp("gme") / "gme-Qwen2-VL-2B-Instruct")
    return Qwen2VLForConditionalGeneration.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


@pytest.mark.parametrize("hw", SIZES)
def test_patches_and_positions_equal_the_hugging_face_processor(hw) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.vision_utils import get_vision_position_ids

    processor = Qwen2VLImageProcessorPil(min_pixels=SPEC.min_pixels, max_pixels=SPEC.max_pixels)
    reference = processor([image(0, hw)], return_tensors="np")
    ours, gh, gw = patches(image(0, hw), SPEC)
    assert reference["image_grid_thw"].tolist() == [[1, gh, gw]]
    np.testing.assert_array_equal(ours, reference["pixel_values"])
    expected = get_vision_position_ids(torch.tensor([[1, gh, gw]]), 2).numpy()
    np.testing.assert_array_equal(vision_positions(gh, gw, 2), expected)


def test_extreme_aspect_ratio_is_an_input_error() -> None:
    with pytest.raises(InputError, match="aspect ratio 300 exceeds 200"):
        smart_resize(10, 3000, 28, SPEC.min_pixels, SPEC.max_pixels)


def test_vision_graph_equals_the_stock_tower_on_packed_images(model) -> None:
    m, _ = model
    parts = [patches(image(i, hw), SPEC) for i, hw in enumerate(SIZES[:3])]
    pixels = torch.from_numpy(np.concatenate([p for p, _, _ in parts]))
    positions = torch.from_numpy(np.concatenate([vision_positions(gh, gw, 2) for _, gh, gw in parts]))
    segments = torch.from_numpy(np.concatenate([np.full(len(p), i) for i, (p, _, _) in enumerate(parts)]))
    grid = torch.tensor([[1, gh, gw] for _, gh, gw in parts])
    with torch.no_grad():
        stock = m.model.get_image_features(pixels, grid, return_dict=True).pooler_output
        stock = torch.cat(list(stock)) if isinstance(stock, list | tuple) else stock
        ours = VisionGraph(m.model)(pixels, positions, segments)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)


def test_language_graph_equals_the_authors_forward(model) -> None:
    m, tok = model
    pixels, gh, gw = patches(image(0, (100, 150)), SPEC)
    prompt = Prompt(GME.prompts.query_template, GME.prompts.default_instruction, GME.prompts.document_template)
    # The prompts production builds: a text document, and an image item (marker, then text) as a query.
    texts = [
        *apply_prompt(["hello world"], "document", None, prompt),
        *apply_prompt(
            [image_mark(gh * gw // 4) + "a cat"], "query", "Find an image that matches the given text.", prompt
        ),
    ]
    assert texts[0] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n"
        "<|im_start|>assistant\n<|endoftext|>"
    )
    enc = tok(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        feats = m.model.get_image_features(
            torch.from_numpy(pixels), torch.tensor([[1, gh, gw]]), return_dict=True
        ).pooler_output
        feats = torch.cat(list(feats)) if isinstance(feats, list | tuple) else feats
        # gme_inference.py: embed, scatter the image features, base model with no position ids, last token, L2.
        embeds = m.model.get_input_embeddings()(ids)
        embeds = embeds.masked_scatter((ids == m.config.image_token_id).unsqueeze(-1).expand_as(embeds), feats)
        hidden = m.model(input_ids=None, inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        reference = torch.nn.functional.normalize(hidden[torch.arange(2), mask.sum(1) - 1], dim=-1)
        ours = LanguageGraph(m.model, GraphSettings("lasttoken", True, m.config.image_token_id))(ids, mask, feats)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
