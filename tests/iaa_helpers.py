"""Tiny IAA builders shared by the IAA model and training tests (hidden 32, 2-4 layers)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaForCausalLM

from iaa_eval.models.iaa import IAAForCausalLM
from tests.conftest import build_tokenizer, tiny_clip_config, tiny_llama_config

IMAGE_TOKEN = "<image>"


def tiny_parts(seed: int = 0, layers: int = 3):  # noqa: ANN201
    """(tokenizer with an image token, random base Llama, random CLIP tower, image processor)."""
    tokenizer = build_tokenizer(extra_special=[IMAGE_TOKEN])
    torch.manual_seed(seed)
    base = LlamaForCausalLM(tiny_llama_config(len(tokenizer), num_hidden_layers=layers)).eval()
    clip = CLIPVisionModel(tiny_clip_config()).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return tokenizer, base, clip, processor


def tiny_iaa(seed: int = 0, layers: int = 3, positions: tuple[int, ...] = (0, 2), workflows=("mm", "g")):  # noqa: ANN201
    """A copy-initialised IAA over a random base, with the branches perturbed so that MM != G."""
    tokenizer, base, clip, processor = tiny_parts(seed, layers)
    model = IAAForCausalLM.from_base(base, clip, positions=list(positions), workflows=workflows,
                                     image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "condition" in name or "mm_projector" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return tokenizer, base, clip, processor, model.eval()


def random_image(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    """A random RGB image of ``size`` (W, H)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def solid_image(colour: tuple[int, int, int], size: int = 32) -> Image.Image:
    """A one-colour square image."""
    return Image.new("RGB", (size, size), colour)
