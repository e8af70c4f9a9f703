"""IAAConfig: presets, validation rules (one test per rule, message asserted), round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import MistralConfig

from iaa_eval.models.iaa import IAAConfig
from iaa_eval.models.iaa.configuration import IAA14_POSITIONS
from tests.conftest import tiny_clip_config, tiny_llama_config


def make(**overrides: object) -> IAAConfig:
    values = {"text_config": tiny_llama_config(100, num_hidden_layers=4), "vision_config": tiny_clip_config(),
              "insert_after_layers": [0, 3]}
    values.update(overrides)
    return IAAConfig(**values)


def test_iaa14_preset_on_a_32_layer_base() -> None:
    config = make(text_config=tiny_llama_config(100, num_hidden_layers=32), insert_after_layers="iaa-14")
    assert config.insert_after_layers == list(IAA14_POSITIONS) == [0, 1, 5, 6, 10, 11, 15, 16, 20, 21, 25, 26, 30, 31]
    assert config.mm_hidden_size == 32 and config.workflows == ["mm"]


def test_round_trip(tmp_path: Path) -> None:
    config = make(workflows=["mm", "g"], image_token_id=7)
    config.save_pretrained(tmp_path)
    again = IAAConfig.from_pretrained(tmp_path)
    assert again.insert_after_layers == [0, 3] and again.workflows == ["mm", "g"] and again.image_token_id == 7
    assert again.text_config.num_hidden_layers == 4 and again.vision_config.patch_size == 8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"insert_after_layers": [0, 4]}, r"insert_after_layers\[1\]=4 is out of range for num_hidden_layers=4"),
        ({"insert_after_layers": [-1]}, r"insert_after_layers\[0\]=-1 is out of range"),
        ({"insert_after_layers": [2, 1]}, r"insert_after_layers\[1\]=1 must be greater than insert_after_layers\[0\]=2"),
        ({"insert_after_layers": [1, 1]}, "sorted and distinct"),
        ({"insert_after_layers": "iaa-14"}, r"insert_after_layers\[2\]=5 is out of range for num_hidden_layers=4"),
        ({"insert_after_layers": "iaa-8"}, "IAA-8 layer list is not published"),
        ({"insert_after_layers": "iaa-99"}, "unknown preset; known: iaa-14"),
        ({"workflows": ["g"]}, r"workflows=\['g'\]: expected \['mm'\] or \['mm', 'g'\]"),
        ({"workflows": ["mm", "x"]}, "workflows="),
        ({"projector_type": "qformer"}, "projector_type='qformer': expected one of mlp2x_gelu, linear"),
        ({"vision_feature_select": "cls"}, "vision_feature_select='cls'"),
        ({"mm_hidden_size": 64}, "mm_hidden_size=64 does not match vision_config.hidden_size=32"),
        ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio='anyres'"),
        ({"text_config": {"model_type": "gpt2", "num_hidden_layers": 4}}, "text_config.model_type='gpt2' is not a base"),
        ({"text_config": MistralConfig(num_hidden_layers=4, sliding_window=16)}, "sliding_window=16"),
    ],
)
def test_validation_rules(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**overrides)
