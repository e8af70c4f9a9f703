"""The llava adapter's vision-feature cache: each image encoded once, answers equal to the pixel path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_eval.models import llava as llava_module
from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.vision import image_key
from tests.models.conftest import record_new_tokens, record_prefills


def test_feature_cache_matches_pixel_path_and_counts_hits(tiny_llava_dir: Path) -> None:
    model = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=3))
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (36, 30 + 9 * i, 3), dtype=np.uint8)) for i in range(3)]
    requests = [MMRequest(f"Question {i}?", images[i % 3], image_key(images[i % 3]), max_new_tokens=5) for i in range(7)]
    requests.insert(3, MMRequest("Asked blind?", None, max_new_tokens=5))
    cached = model.generate(requests)
    assert model.feature_cache.misses == 3  # three distinct images, encoded once each
    assert model.feature_cache.hits == 4
    assert cached == model.generate(requests, use_feature_cache=False)
    assert model.generate(requests[:2]) == cached[:2]
    assert (model.feature_cache.misses, model.feature_cache.hits) == (3, 6)


def test_questions_of_one_image_share_the_prompt_prefix(tiny_llava_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        fresh_seed: int) -> None:
    """MME-shaped: two to three questions per image, of different lengths and sharing leading words,
    plus an image asked once; the token ids equal those of the path that runs every whole prompt."""
    model = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=8))
    rng = np.random.default_rng(fresh_seed)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    words = ["red", "blue", "green", "circle", "square", "small", "in", "the", "image"]
    questions = [" ".join(["Is", "there", "a", *rng.choice(words, size=rng.integers(1, 7))]) + "?" for _ in range(6)]
    layout = [0, 0, 1, 1, 1, 2]
    requests = [MMRequest(q, images[i], image_key(images[i]), max_new_tokens=6)
                for q, i in zip(questions, layout, strict=True)]
    prefills = record_prefills(monkeypatch, llava_module)
    tokens = record_new_tokens(monkeypatch, model.model)
    model.generate(requests)
    image_tokens = model.model.config.image_seq_length
    assert len(prefills) == 1 and prefills[0] > image_tokens  # one prefill: system prompt + image + "Is there a"
    model.share_prefixes = False
    model.generate(requests)
    shared, whole = tokens
    assert torch.equal(shared, whole)
    assert len({tuple(row.tolist()) for row in whole}) > 1  # the rows' answers differ


def test_shared_prefix_length_rules() -> None:
    from iaa_eval.models.generation import shared_prefix_length

    rows = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [7, 2, 3, 4, 6, 6], [7, 2, 3, 4, 1]]
    assert shared_prefix_length(rows, ["a", "a", "b", "b"], [2, 2, 2, 2]) == 3  # the shortest common prefix
    assert shared_prefix_length(rows, ["a", "a", "b", "b"], [2, 2, 4, 2]) is None  # an image would be cut
    assert shared_prefix_length(rows, ["a", "b", "c", "d"], [1, 1, 1, 1]) is None  # nothing shared
    assert shared_prefix_length(rows, ["a", "a", None, "b"], [1, 1, 1, 1]) is None  # a request without key
    assert shared_prefix_length([[1, 2], [1, 2]], ["a", "a"], [1, 1]) == 1  # each row keeps a token of its own


def test_prefill_rows_pick_each_keys_first_row_and_map_every_row_to_it() -> None:
    from iaa_eval.models.generation import prefill_rows

    assert prefill_rows(["b", "a", "b", "c", "a"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert prefill_rows(["x"]) == ([0], [0])
