"""The vlm adapter's image paths: each image encoded once (the feature cache), and questions of one
image sharing their prompt's head, run once (``prefill_shared``), with the token ids of the path
that runs every whole prompt, for every family where the head's K/V depend on its tokens and image
alone; off, with a reason, elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_eval.models import load_model
from iaa_eval.models import vlm as vlm_module
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.vision import image_key
from iaa_eval.models.vlm import VLMModel
from iaa_eval.models.vlm_families import FAMILIES
from tests.models.conftest import record_new_tokens, record_prefills
from tests.vlm_checkpoints import generation_blocker, save_family

SHARED = [t for t, f in FAMILIES.items() if not f.no_shared_prefix and not f.no_feature_cache]
NOT_SHARED = [t for t in FAMILIES if t not in SHARED]


def _image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _mme_shaped(seed: int) -> list[MMRequest]:
    """Two to three questions per image, of different lengths and sharing leading words, plus an
    image asked once. Each image has its own random shape, as MME's do: anyres tiles, crops and
    grids give each its own token count, so each image's head has its own length."""
    rng = np.random.default_rng(seed)
    images = [_image(rng, *rng.integers(24, 72, size=2)) for _ in range(3)]
    words = ["red", "blue", "green", "circle", "square", "small", "in", "the", "image"]
    questions = [
        " ".join(["Is", "there", "a", *rng.choice(words, size=rng.integers(1, 7))]) + "?"
        for _ in range(6)
    ]
    layout = [0, 0, 1, 1, 1, 2]
    return [
        MMRequest(q, images[i], image_key(images[i]), max_new_tokens=6)
        for q, i in zip(questions, layout, strict=True)
    ]


def _sharpened(model: VLMModel, seed: int) -> VLMModel:
    """Every weight redrawn from N(0, 0.6): at their default scale some tiny families answer every
    question alike, which would leave a copied row unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for weight in model.model.parameters():
            weight.copy_(torch.randn(weight.shape, generator=gen) * 0.6)
    return model


def _shared_and_whole(
    model: VLMModel, requests: list[MMRequest], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The prefills' lengths and the new token ids with shared heads, then with whole prompts."""
    prefills = record_prefills(monkeypatch, vlm_module)
    tokens = record_new_tokens(monkeypatch, model.model)
    model.generate(requests)
    model.share_prefixes = False
    model.generate(requests)
    shared, whole = tokens
    return prefills, shared, whole


@pytest.mark.parametrize("model_type", SHARED)
def test_questions_of_one_image_share_the_prompt_head(
    model_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """One prefill for the batch, past every row's image tokens; the token ids equal those of the
    whole prompts, on fresh random weights, images and questions whose answers differ."""
    if blocker := generation_blocker(model_type):
        pytest.skip(blocker)
    folder = save_family(model_type, tmp_path / model_type)
    model = _sharpened(load_model(ModelSpec("v", "vlm", str(folder), batch_size=8)), fresh_seed)
    requests = _mme_shaped(fresh_seed)
    prefills, shared, whole = _shared_and_whole(model, requests, monkeypatch)
    enc = model._encode([model.render_prompt(r) for r in requests], [r.image for r in requests])
    pairs = zip(enc["input_ids"], enc["attention_mask"], strict=True)
    rows = [ids[mask.bool()].tolist() for ids, mask in pairs]
    image_id = model.model.config.image_token_id
    covers = [max(j for j, token in enumerate(row) if token == image_id) + 1 for row in rows]
    keys = [r.image_key for r in requests]
    assert len(prefills) == 1  # no row's image is left out of its head
    assert all(prefills[0][key] >= cover for key, cover in zip(keys, covers, strict=True))
    assert torch.equal(shared, whole)
    assert len({tuple(row.tolist()) for row in whole}) > 1  # the rows' answers differ


@pytest.mark.parametrize("model_type", NOT_SHARED)
def test_families_whose_head_cannot_be_shared_say_why_and_run_whole_prompts(
    model_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    family = FAMILIES[model_type]
    assert family.no_shared_prefix or family.no_feature_cache
    folder = save_family(model_type, tmp_path / model_type)
    model = _sharpened(load_model(ModelSpec("v", "vlm", str(folder), batch_size=8)), fresh_seed)
    prefills, shared, whole = _shared_and_whole(model, _mme_shaped(fresh_seed), monkeypatch)
    assert prefills == [] and torch.equal(shared, whole)


def test_a_batch_that_would_reach_the_sliding_window_runs_whole_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """Mistral's window counts cache positions, so the padding between a shared head and a
    question's own tokens would push the head out of it sooner: such a batch is not shared."""
    folder = save_family("mistral3", tmp_path / "mistral3")
    model = load_model(ModelSpec("v", "vlm", str(folder), batch_size=8))
    requests = _mme_shaped(fresh_seed)
    width = model._encode([model.render_prompt(r) for r in requests], [r.image for r in requests])
    model.model.config.get_text_config().sliding_window = width["input_ids"].shape[1] + 6
    prefills = record_prefills(monkeypatch, vlm_module)
    model.generate(requests)
    assert prefills == []


def test_llava_kind_is_the_vlm_adapter_and_encodes_each_image_once(tiny_llava_dir: Path) -> None:
    """The ``llava`` kind (an alias of ``vlm``): three distinct images encoded once each, a blind
    request among them, answers equal to the processor's pixel path."""
    model = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=3))
    assert isinstance(model, VLMModel)
    rng = np.random.default_rng(1)
    images = [_image(rng, 36, 30 + 9 * i) for i in range(3)]
    requests = [
        MMRequest(f"Question {i}?", images[i % 3], image_key(images[i % 3]), max_new_tokens=5)
        for i in range(7)
    ]
    requests.insert(3, MMRequest("Asked blind?", None, max_new_tokens=5))
    cached = model.generate(requests)
    assert model.feature_cache.misses == 3  # three distinct images, encoded once each
    assert model.feature_cache.hits == 4
    assert cached == model.generate(requests, use_feature_cache=False)
    assert model.generate(requests[:2]) == cached[:2]
    assert (model.feature_cache.misses, model.feature_cache.hits) == (3, 6)


def test_llava_kind_shares_the_prompt_head_on_the_llava_hf_layout(
    tiny_llava_dir: Path, monkeypatch: pytest.MonkeyPatch, fresh_seed: int
) -> None:
    """The llava-hf processor's own checkpoint (as the ``llava`` kind always ran): one prefill,
    covering system prompt, image and "Is there a"; token ids equal to the whole prompts'."""
    model = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=8))
    model = _sharpened(model, fresh_seed)
    prefills, shared, whole = _shared_and_whole(model, _mme_shaped(fresh_seed), monkeypatch)
    assert len(prefills) == 1 and min(prefills[0].values()) > model.model.config.image_seq_length
    assert torch.equal(shared, whole)
    assert len({tuple(row.tolist()) for row in whole}) > 1  # the rows' answers differ
