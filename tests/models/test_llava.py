"""The llava adapter's vision-feature cache: each image encoded once, answers equal to the pixel path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.vision import image_key


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
