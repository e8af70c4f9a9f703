"""The hf and llava adapters on tiny locally built models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_eval.errors import ModelError
from iaa_eval.models import load_model
from iaa_eval.models.base import EvalModel, MMRequest, ModelSpec


def test_hf_adapter_text_view_and_blind_generate(tiny_llama_dir: Path) -> None:
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir)))
    assert isinstance(model, EvalModel)
    view = model.text_view()
    ids = view.tokenizer("The capital", return_tensors="pt")["input_ids"]
    assert view.model(input_ids=ids).logits.shape[-1] == len(view.tokenizer)
    answers = model.generate([MMRequest("Is it red?", max_new_tokens=3), MMRequest("Why?", max_new_tokens=3)])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert model.fingerprint("text") == load_model(ModelSpec("b2", "hf", str(tiny_llama_dir))).fingerprint("text")


def test_llava_adapter_text_view_shares_language_model(tiny_llava_dir: Path) -> None:
    model = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir)))
    view = model.text_view()
    ids = torch.tensor([[5, 6, 7, 8]])
    ref = model.model(input_ids=ids).logits
    assert torch.equal(view.model(input_ids=ids).logits, ref)
    assert view.model.lm_head.weight.data_ptr() == model.model.lm_head.weight.data_ptr()
    assert model.fingerprint("text") != model.fingerprint("mm")


def test_llava_adapter_generates_with_and_without_image(tiny_llava_dir: Path) -> None:
    model = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=2))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8))
    requests = [
        MMRequest("What colour?", image, max_new_tokens=4),
        MMRequest("What shape?", None, max_new_tokens=4),
        MMRequest("Is it big?", image, max_new_tokens=4),
    ]
    batched = model.generate(requests)
    single = [model.generate([r])[0] for r in requests]
    assert batched == single


def test_missing_local_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such directory"):
        load_model(ModelSpec("base", "hf", str(tmp_path / "nope")))


def test_unknown_kind_lists_close_matches() -> None:
    with pytest.raises(Exception, match="Did you mean: llava"):
        load_model(ModelSpec("x", "lava", "whatever"))
