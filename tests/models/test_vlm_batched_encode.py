"""The vlm adapter encodes the images a batch lacks in few ``get_image_features`` calls (one per
group of same-shaped pixel inputs), with the features one-image calls give, for every family with
a feature cache; one image a call, with the reason, where the split back is not certain."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_eval.errors import ModelError
from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.vlm import VLMModel, encode_groups
from iaa_eval.models.vlm_families import FAMILIES
from tests.vlm_checkpoints import generation_blocker, save_family

CACHED = [t for t, f in FAMILIES.items() if not f.no_feature_cache]
BATCHED = [t for t in CACHED if not FAMILIES[t].no_batched_encode]
ONE_BY_ONE = [t for t in CACHED if FAMILIES[t].no_batched_encode]


def _images(seed: int) -> list[Image.Image]:
    """Eleven random images: nine of three random shapes (so that families whose pixel inputs
    follow the image's shape still form groups) and two of shapes of their own."""
    rng = np.random.default_rng(seed)
    shapes = [rng.integers(20, 80, size=2) for _ in range(3)]
    shapes += [shapes[i % 3] for i in range(6)] + [rng.integers(20, 80, size=2) for _ in range(2)]
    return [Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)) for hw in shapes]


def _count_encodes(model: VLMModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap the model's ``get_image_features`` (its signature kept: the adapter reads it); the
    list fills with a 1 per call."""
    base = model.model.base_model
    real = base.get_image_features

    @functools.wraps(real)
    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    calls: list[int] = []
    monkeypatch.setattr(base, "get_image_features", counting)
    return calls


def _no_zero_weights(model: VLMModel, seed: int) -> VLMModel:
    """Weights initialised to zero redrawn at the scale of the others (Gemma 3's projector starts
    at zero: every image's features would be alike). The rest keep their small default scale, at
    which fp32 batched and one-image matmuls agree to the default tolerances."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in model.model.parameters():
            if not weight.any():
                weight.copy_(torch.randn(weight.shape, generator=gen) * 0.02)
    return model


def _load(model_type: str, tmp_path: Path) -> VLMModel:
    if blocker := generation_blocker(model_type):
        pytest.skip(blocker)
    folder = save_family(model_type, tmp_path / model_type)
    return load_model(ModelSpec("v", "vlm", str(folder), batch_size=16))


@pytest.mark.parametrize("model_type", BATCHED)
def test_images_encoded_in_groups_have_the_features_of_one_image_calls(
    model_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """Random images of different shapes: fewer encoder calls than images,
    each image's features equal to its one-image call's (fp32), and the answers through the cache
    equal the pixel path's."""
    model = _no_zero_weights(_load(model_type, tmp_path), fresh_seed)
    images = _images(fresh_seed)
    requests = [MMRequest(f"What is {i}?", im, max_new_tokens=4) for i, im in enumerate(images)]
    rows = model._encode_rows([model.render_prompt(r) for r in requests], images)
    calls = _count_encodes(model, monkeypatch)
    batched = model._encode_images(rows)
    grouped, pooled_list = len(calls), model._pooled_list
    assert 1 <= grouped < len(images)
    alone = [model._encode_images([row])[0] for row in rows]
    assert len(calls) == grouped + len(images) and model._pooled_list == pooled_list
    for got, want in zip(batched, alone, strict=True):
        torch.testing.assert_close(got, want)
    assert len({f.sum().item() for f in alone}) == len(images)  # no two images' features alike
    calls.clear()
    answers = model.generate(requests)
    assert 1 <= len(calls) < len(images)
    assert answers == model.generate(requests, use_feature_cache=False)


@pytest.mark.parametrize("model_type", ONE_BY_ONE)
def test_families_that_cannot_split_a_batch_encode_one_image_a_call_and_say_why(
    model_type: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_seed: int,
) -> None:
    with caplog.at_level(logging.INFO, logger="iaa_eval.models.vlm"):
        model = _load(model_type, tmp_path)
    assert f"batched image encoding off: {FAMILIES[model_type].no_batched_encode}" in caplog.text
    images = _images(fresh_seed)
    requests = [MMRequest(f"What is {i}?", im, max_new_tokens=4) for i, im in enumerate(images)]
    calls = _count_encodes(model, monkeypatch)
    answers = model.generate(requests)
    assert len(calls) == len(images)
    assert answers == model.generate(requests, use_feature_cache=False)


@pytest.mark.parametrize(("model_type", "batchable"), [("idefics3", True), ("smolvlm", False)])
def test_a_blank_image_batches_only_where_crops_are_dropped_per_image(
    model_type: str, batchable: bool, tmp_path: Path, fresh_seed: int
) -> None:
    """Both drop all-zero crops as padding; Idefics3 counts the crops kept per image, SmolVLM
    keeps one where a call has nothing else: a blank image's features then depend on its
    batch, the reason it encodes one image a call."""
    model = _load(model_type, tmp_path)
    image = _images(fresh_seed)[0]
    (row,) = model._encode_rows([model.render_prompt(MMRequest("?", image))], [image])
    blank = {**row, "pixel_values": torch.zeros_like(row["pixel_values"])}
    encoder = model.model.base_model.get_image_features
    keys = ("pixel_values", "pixel_attention_mask")
    with torch.inference_mode():
        pair = encoder(**{k: torch.cat([row[k], blank[k]]) for k in keys}).pooler_output
        if batchable:  # alone, no crop is left: the call fails (never a wrong feature)
            assert pair[1].numel() == 0
            with pytest.raises(RuntimeError):
                encoder(**{k: blank[k] for k in keys})
        else:
            alone = encoder(**{k: blank[k] for k in keys}).pooler_output
            assert alone[0].shape[0] > pair[1].shape[0]


@pytest.mark.parametrize("model_type", ["deepseek_vl", "llava"])
def test_an_output_that_does_not_split_per_image_is_refused(
    model_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """One entry (a tensor's row, a list's item) too many for the images encoded: an error naming
    the checkpoint, not features shifted between images."""
    model = _load(model_type, tmp_path)
    images = _images(fresh_seed)[:3]
    rows = model._encode_rows([model.render_prompt(MMRequest("?", im)) for im in images], images)
    base = model.model.base_model
    real = base.get_image_features

    @functools.wraps(real)
    def one_too_many(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        pooled = out.pooler_output
        out.pooler_output = ([*pooled, pooled[0]] if isinstance(pooled, (list, tuple))
                             else torch.cat([pooled, pooled[:1]]))
        return out

    monkeypatch.setattr(base, "get_image_features", one_too_many)
    with pytest.raises(ModelError, match="get_image_features gave 4 entries for 3 images"):
        model._encode_images(rows)


def test_groups_are_bounded_same_shaped_and_in_order() -> None:
    """Shapes apart from dim 0, dtypes and key sets tell groups apart; a full group starts a new
    one; a non-tensor input stays alone."""
    def enc(rows: int, width: int, grid: bool = True, dtype: torch.dtype = torch.float32) -> Any:
        out: dict[str, Any] = {"pixel_values": torch.zeros(rows, width, dtype=dtype)}
        if grid:
            out["image_grid_thw"] = torch.ones(1, 3, dtype=torch.long)
        return out

    inputs = [enc(4, 8), enc(16, 8), enc(4, 6), enc(2, 8), enc(4, 8, grid=False),
              enc(4, 8, dtype=torch.float16), {"pixel_values": [1]}, enc(1, 8), enc(4, 6)]
    assert encode_groups(inputs, 2) == [[0, 1], [2, 8], [3, 7], [4], [5], [6]]
    assert encode_groups(inputs, 1) == [[i] for i in range(len(inputs))]
