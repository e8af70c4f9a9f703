"""Prompt ids with the -200 placeholder, and pad-to-square image preprocessing."""

from __future__ import annotations

import pytest
import torch

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa.preprocess import image_token_text, pixel_values, prompt_text, to_model_ids
from tests.iaa_helpers import IMAGE_TOKEN, random_image, tiny_parts


def test_prompt_carries_the_image_token_once_and_becomes_minus_200() -> None:
    tokenizer = tiny_parts()[0]
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = prompt_text(tokenizer, "What colour?", token_id, has_image=True)
    assert text.count(IMAGE_TOKEN) == 1 and f"{IMAGE_TOKEN}\nWhat colour?" in text
    ids = to_model_ids(tokenizer(text, add_special_tokens=False)["input_ids"], token_id, True)
    assert ids.count(-200) == 1 and token_id not in ids
    assert IMAGE_TOKEN not in prompt_text(tokenizer, "What colour?", token_id, has_image=False)


def test_image_token_errors() -> None:
    tokenizer = tiny_parts()[0]
    with pytest.raises(ModelError, match="config.image_token_id is not set"):
        image_token_text(tokenizer, None)
    with pytest.raises(ModelError, match="config.image_token_id=99999 is not a token of this tokenizer"):
        image_token_text(tokenizer, 99999)
    with pytest.raises(ModelError, match="lost its image token 7"):
        to_model_ids([1, 2, 3], 7, True)


def test_pad_to_square_then_processor() -> None:
    processor = tiny_parts()[3]
    wide = random_image(4, (44, 28))
    pixels = pixel_values([wide], processor)
    assert pixels.shape == (1, 3, 32, 32)
    # the padded band (top rows) holds the CLIP mean colour, i.e. ~0 after normalisation
    assert torch.allclose(pixels[0, :, 0, :], torch.zeros(3, 32), atol=0.03)
