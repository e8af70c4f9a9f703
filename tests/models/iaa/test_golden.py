"""Official-code reference outputs (../shared/golden/iaa_tiny_a): logits and greedy tokens, all workflows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPImageProcessor

from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.iaa.preprocess import pixel_values
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def golden() -> dict:
    folder = shared_path("golden", "iaa_tiny_a")
    return {
        "folder": folder,
        "model": IAAForCausalLM.from_pretrained(folder, torch_dtype=torch.float32),
        "inputs": load_file(folder / "inputs.safetensors"),
        "expected": load_file(folder / "expected.safetensors"),
        "generate": json.loads((folder / "expected_generate.json").read_text()),
    }


@pytest.mark.parametrize(
    ("name", "ids", "workflow", "image"),
    [
        ("logits_text", "input_ids_text", "text", False),
        ("logits_mm", "input_ids_mm", "mm", True),
        ("logits_g", "input_ids_mm", "g", True),
        ("logits_mm_noimage", "input_ids_text", "mm", False),
        ("logits_g_noimage", "input_ids_text", "g", False),
    ],
)
def test_logits_match_the_official_code(golden: dict, name: str, ids: str, workflow: str, image: bool) -> None:
    inputs = golden["inputs"]
    pixels = inputs["pixel_values"] if image else None
    with torch.no_grad():
        out = golden["model"](inputs[ids], pixel_values=pixels, workflow=workflow).logits
    expected = golden["expected"][name]
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize(("case", "workflow"), [("text_a0", "text"), ("mm_b", "mm"), ("g_b", "g")])
def test_greedy_tokens_match_the_official_code(golden: dict, case: str, workflow: str) -> None:
    entry = golden["generate"][case]
    pixels = golden["inputs"]["pixel_values"] if entry["images"] else None
    out = golden["model"].generate(torch.tensor(entry["prompt_input_ids"]), pixel_values=pixels, workflow=workflow,
                                   max_new_tokens=entry["n_new_requested"], eos_token_id=entry["eos_token_id_in_config"])
    assert out.tolist() == entry["generate_output_ids"]


def test_vision_features_and_config_mapping(golden: dict) -> None:
    model, inter = golden["model"], load_file(golden["folder"] / "intermediates.safetensors")
    with torch.no_grad():
        features = model.model.vision_tower(golden["inputs"]["pixel_values"])
        torch.testing.assert_close(features, inter["vision_features"], rtol=0, atol=1e-5)
        torch.testing.assert_close(model.model.mm_projector_G(features), inter["proj_g"], rtol=0, atol=1e-5)
    assert model.config.insert_after_layers == [0, 1, 5, 6, 10, 11, 15, 16, 20, 21, 25, 26, 30, 31]


def test_preprocessing_matches_the_official_pad_to_square(golden: dict) -> None:
    extra = load_file(golden["folder"] / "preprocess.safetensors")
    processor = CLIPImageProcessor.from_pretrained(golden["folder"] / "vision_tower")
    for index in (0, 1):
        image = Image.fromarray(extra[f"image_raw_extra{index}"].numpy())
        ours = pixel_values([image], processor)
        # PIL bicubic paths may differ by a few 1/255 steps before normalisation (README §6)
        assert np.abs((ours - extra[f"pixel_values_extra{index}"]).numpy()).max() <= 6 / 255 / 0.26
    raw = Image.fromarray(golden["inputs"]["image_raw"].numpy())
    torch.testing.assert_close(pixel_values([raw], processor), golden["inputs"]["pixel_values"], rtol=0, atol=1e-5)
