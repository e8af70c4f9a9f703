"""Prompt and image preprocessing of IAA, shared by the adapter (evaluation) and training.

The tokenizer's image token (``config.image_token_id``; ``<|reserved_special_token_44|>`` = 128049
for Llama-3) is written in the prompt and then replaced by the placeholder -200 the model
consumes, as the official ``get_input`` does. Images are padded to a square with the CLIP mean
colour and then go through the checkpoint's CLIP image processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa.configuration import IMAGE_PLACEHOLDER_ID
from iaa_eval.models.templates import build_prompt
from iaa_eval.models.vision import expand_to_square, pad_colour

if TYPE_CHECKING:
    from PIL.Image import Image


def image_token_text(tokenizer: Any, image_token_id: int | None) -> str:
    """The text form of the image token, checked to exist in this tokenizer."""
    if image_token_id is None:
        raise ModelError("config.image_token_id is not set: cannot place an image in the prompt")
    token = tokenizer.convert_ids_to_tokens(image_token_id)
    if token is None or tokenizer.convert_tokens_to_ids(token) != image_token_id:
        raise ModelError(f"config.image_token_id={image_token_id} is not a token of this tokenizer")
    return token


def prompt_text(tokenizer: Any, text: str, image_token_id: int | None, has_image: bool) -> str:
    """The full prompt (system + user turn + assistant header) with the image token if any."""
    placeholder = image_token_text(tokenizer, image_token_id) if has_image else None
    return build_prompt(tokenizer, text, placeholder)


def to_model_ids(ids: Sequence[int], image_token_id: int | None, has_image: bool) -> list[int]:
    """Replace the image token by -200 (exactly one per image, the first occurrence)."""
    ids = list(ids)
    if has_image:
        if image_token_id not in ids:
            raise ModelError(f"the prompt lost its image token {image_token_id} in tokenization")
        ids[ids.index(image_token_id)] = IMAGE_PLACEHOLDER_ID
    return ids


def pixel_values(images: Sequence[Image], image_processor: Any,
                 aspect: str = "pad") -> torch.Tensor:
    """``(n, 3, H, W)``: pad to square (CLIP mean fill, centred) then the CLIP image processor."""
    if aspect == "pad":
        fill = pad_colour(image_processor.image_mean)
        images = [expand_to_square(img, fill) for img in images]
    else:
        images = [img.convert("RGB") for img in images]
    return image_processor(images=list(images), return_tensors="pt")["pixel_values"]
