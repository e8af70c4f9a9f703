"""Image splicing, the vision tower's feature selection and cache ownership."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel

from iaa_eval.models.iaa.multimodal import VisionTower, build_projector, splice_images
from tests.conftest import tiny_clip_config


def test_splice_places_features_and_left_pads_rows_of_different_length() -> None:
    embed = torch.nn.Embedding(20, 4)
    ids = torch.tensor([[3, -200, 4, 5], [6, 7, 8, 9]])
    labels = torch.tensor([[-100, -100, 4, 5], [-100, 7, 8, 9]])
    images = torch.arange(3 * 4, dtype=torch.float).reshape(1, 3, 4)
    out, mask, new_labels = splice_images(ids, None, labels, embed, images)
    assert out.shape == (2, 6, 4)
    assert torch.equal(out[0, 1:4], images[0]) and torch.equal(out[0, 0], embed.weight[3])
    assert torch.equal(out[1, 2:], embed(ids[1])) and torch.equal(out[1, :2], torch.zeros(2, 4))
    assert mask.tolist() == [[1] * 6, [0, 0, 1, 1, 1, 1]]
    assert new_labels.tolist() == [[-100, -100, -100, -100, 4, 5], [-100, -100, -100, 7, 8, 9]]


def test_splice_without_images_is_a_plain_lookup() -> None:
    embed = torch.nn.Embedding(20, 4)
    ids = torch.tensor([[3, 4, 5]])
    out, mask, labels = splice_images(ids, None, None, embed, None)
    assert torch.equal(out, embed(ids)) and mask is None and labels is None


@pytest.mark.parametrize(("select", "tokens"), [("patch", 16), ("cls_patch", 17)])
def test_vision_tower_feature_selection(select: str, tokens: int) -> None:
    torch.manual_seed(0)
    clip = CLIPVisionModel(tiny_clip_config()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    features = VisionTower(clip, -2, select)(pixels)
    assert features.shape == (2, tokens, 32)
    assert torch.equal(features[:, -16:], clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:])


def test_projector_layouts() -> None:
    assert [k for k in build_projector("mlp2x_gelu", 8, 16).state_dict()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert isinstance(build_projector("linear", 8, 16), torch.nn.Linear)
