"""The ``vlm`` kind on a tiny random checkpoint of every family: load, text view equal to the whole
VLM (plain and through the packed prefix-reuse scorer), MME / MMBench / VQA-style generation."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.loglik.scorer import FastScorer
from iaa_eval.models.templates import build_prompt
from iaa_eval.models.vlm import PIXEL_INPUTS
from iaa_eval.models.vlm_text import DecoderLM
from tests.vlm_checkpoints import FAMILIES, build_model, generation_blocker, save_family

log = logging.getLogger(__name__)
ALL = list(FAMILIES)


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``vlm_dir(model_type)``: that family's tiny checkpoint, built once per session."""
    built: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = save_family(model_type, tmp_path_factory.mktemp(model_type))
        return built[model_type]

    return get


def _reference_logprob(vlm: torch.nn.Module, context: list[int], continuation: list[int]) -> float:
    """log p(continuation | context) from the whole VLM, one unpadded forward."""
    ids = torch.tensor([context + continuation])
    with torch.inference_mode():
        logits = vlm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float()
    logprobs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
    return logprobs.gather(1, torch.tensor(continuation)[:, None]).sum().item()


@pytest.mark.parametrize("model_type", ALL)
def test_text_view_is_the_whole_vlm_on_text(
    model_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Logits of the decoder + head equal the whole VLM's on text-only input (right-padded batch),
    the packed prefix-reuse scorer on the text view equals the VLM pair by pair, and left-padded
    greedy generation gives the VLM's tokens, on fresh random weights and tokens: Qwen-VL's M-RoPE
    (text positions: three equal components) packs exactly; Gemma 3's sliding window makes the
    scorer fall back to unpacked rows."""
    seed = random.randrange(1 << 30)
    log.info("seed %d", seed)
    vlm, tokenizer = build_model(model_type, seed)
    lm = DecoderLM(vlm).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, len(tokenizer), (3, 24), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    with torch.inference_mode():
        whole = vlm(input_ids=ids, attention_mask=mask).logits
        text = lm(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(text[real], whole[real], rtol=1e-5, atol=1e-5)

    rows = ids.tolist()  # two prefix groups (rows 0 and 2), so packs hold several segments
    pairs = [
        (rows[g][:14] + rows[1][i : i + 2], rows[1][5 + i : 7 + i])
        for g in (0, 2)
        for i in range(3)
    ]
    pairs.append((rows[0][:20], rows[2][:1]))
    with caplog.at_level(logging.INFO, logger="iaa_eval.models.loglik.scorer"):
        scorer = FastScorer(lm, 64, progress=False, min_prefix=4)
    got = scorer.score(pairs)
    want = [_reference_logprob(vlm, c, k) for c, k in pairs]
    assert [g for g, _ in got] == pytest.approx(want, abs=1e-4)
    sliding = "sliding_attention" in (getattr(lm.config, "layer_types", None) or [])
    assert scorer.prefix_reuse is not sliding  # packing wherever it holds, the fallback elsewhere
    assert ("sliding window" in caplog.text) is sliding  # ... with its reason logged
    assert scorer._decoder is lm.get_decoder()  # the head runs on read-out positions only

    left = ids[:, :12].clone()  # text tasks' generate_until: left-padded greedy decoding
    left_mask = torch.ones_like(left)
    left[1, :4], left_mask[1, :4] = tokenizer.pad_token_id, 0
    settings = dict(
        attention_mask=left_mask,
        max_new_tokens=5,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.inference_mode():
        assert torch.equal(lm.generate(left, **settings), vlm.generate(left, **settings))


def _image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("model_type", ALL)
def test_generate_mme_mmbench_vqa_items(model_type: str, vlm_dir: Callable[[str], Path]) -> None:
    """One yes/no, one lettered-options and one short-answer question, with images of two shapes
    (tiles/crops/grids differ), and one blind: batched answers equal one-at-a-time answers, and
    option scores are finite; the text view shares the VLM's own modules."""
    if blocker := generation_blocker(model_type):
        pytest.skip(blocker)
    model = load_model(ModelSpec("v", "vlm", str(vlm_dir(model_type)), batch_size=4))
    rng = np.random.default_rng()
    wide, tall = _image(rng, 40, 56), _image(rng, 64, 30)
    requests = [
        MMRequest(
            "Is there a red circle in the image? Please answer yes or no.", wide, max_new_tokens=4
        ),
        MMRequest(
            "What is the shape?\nA. circle\nB. square\nAnswer with the option's letter from the "
            "given "
            "choices directly.",
            tall,
            max_new_tokens=4,
        ),
        MMRequest(
            "What colour is the shape?\nAnswer the question using a single word or phrase.",
            wide,
            max_new_tokens=4,
        ),
        MMRequest("Is there a red circle? Please answer yes or no.", None, max_new_tokens=4),
    ]
    answers = model.generate(requests)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    assert answers == model.generate(requests, use_feature_cache=False)
    if (
        model.feature_cache is not None
    ):  # each image encoded once; the LM sees the pixel path's input
        assert (model.feature_cache.misses, model.feature_cache.hits) == (2, 1)
        reqs = requests[:3]
        whole = model._encode([model.render_prompt(r) for r in reqs], [r.image for r in reqs])
        prepared = model._prepare(reqs, with_features=True)  # prompt by prompt, then collated
        assert prepared.enc.keys() == whole.keys() - set(PIXEL_INPUTS)
        assert all(torch.equal(prepared.enc[k], whole[k]) for k in prepared.enc)
        with torch.inference_mode():
            pixels = model.model(**whole).logits
            features = model.feature_cache.get(prepared.rows, prepared.keys)
            cached = model.model(**prepared.enc, **model._features_input(features)).logits
        torch.testing.assert_close(cached, pixels, rtol=1e-5, atol=1e-5)
    else:
        assert model.family.no_feature_cache
    assert answers == [model.generate([r])[0] for r in requests]
    view = model.text_view()
    assert view.model.get_decoder() is model.model.get_decoder()
    assert view.fingerprint != model.fingerprint("mm")


def test_llava_kind_is_an_alias_asking_with_llavas_prompt(tiny_llava_dir: Path) -> None:
    """``llava:`` loads the vlm adapter, which asks a LLaVA-1.5 checkpoint with LLaVA's prompt
    (its system prompt where there is a chat template), as the mini-world's LLaVA stage trains
    (through the same function); the text view is the same whichever kind named it."""
    vlm = load_model(ModelSpec("v", "vlm", str(tiny_llava_dir), batch_size=3))
    llava = load_model(ModelSpec("l", "llava", str(tiny_llava_dir), batch_size=3))
    assert type(llava) is type(vlm)
    image = _image(np.random.default_rng(), 32, 40)
    request = MMRequest("Is it red? Please answer yes or no.", image)
    rendered = llava.render_prompt(request)
    assert rendered == build_prompt(llava.tokenizer, request.prompt, "<image>", system=True)
    assert vlm.fingerprint("text") == llava.fingerprint("text")


@pytest.mark.parametrize("model_type", ["llava", "qwen2_5_vl", "llava_next"])
def test_each_image_is_preprocessed_once_per_batch(
    model_type: str, vlm_dir: Callable[[str], Path], fresh_seed: int
) -> None:
    """MMBench-shaped (four prompts per image): the host's image processor runs once per
    distinct image, and the answers equal the pixel path's (every prompt processed whole)."""
    model = load_model(ModelSpec("v", "vlm", str(vlm_dir(model_type)), batch_size=8))
    rng = np.random.default_rng(fresh_seed)
    images = [Image.fromarray(rng.integers(0, 255, (int(rng.integers(20, 60)), 40, 3),
                                           dtype=np.uint8)) for _ in range(2)]
    requests = [MMRequest(f"Option {letter}? Answer with a letter.", image, max_new_tokens=3)
                for image in images for letter in "ABCD"]
    calls: list[int] = []

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def __call__(self, images: Any = None, **kwargs: Any) -> Any:
            calls.append(1)
            return self.inner(images, **kwargs)

    model._host.image_processor.inner = Counting(model._host.image_processor.inner)
    cached = model.generate(requests)
    assert len(calls) == 2
    assert cached == model.generate(requests, use_feature_cache=False)
