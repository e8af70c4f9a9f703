"""Our lm-eval LM: HFLM's tokenization, the request cache, rolling log-likelihood, generation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance

from iaa_eval.models.base import TextView
from iaa_eval.runner.cache import RequestCache
from iaa_eval.runner.requests import RequestPath
from iaa_eval.tasks.lm_bridge import (
    COMMIT_REQUESTS,
    SCORE_COMMIT_REQUESTS,
    TextViewLM,
    default_score_chunk,
)
from tests.tasks.text_helpers import hflm, tiny_model


def _instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


PAIRS = [
    ("Question: Which is right?\nAnswer:", " A"),
    ("Question: Which is right?\nAnswer: ", "blue circle"),  # trailing space moves to the continuation
    ("The capital of Veloria is", " Brask."),
    ("", "Yes no maybe"),  # empty context: BOS/EOS first
    ("<s>The answer is", " B"),  # already starts with the BOS text
    ("以下是中国关于会计考试的单项选择题\n答案：", "A"),
]


@pytest.fixture(params=[False, True], ids=["no-bos", "bos"])
def pair(request: pytest.FixtureRequest) -> tuple:
    model, tokenizer = tiny_model(random.randrange(1 << 30), max_positions=64, add_bos=request.param)
    return model, tokenizer, hflm(model, tokenizer, batch_size=4)


def test_tokenization_and_values_match_hflm(pair: tuple) -> None:
    model, tokenizer, reference = pair
    ours = TextViewLM(TextView(model, tokenizer, "fp"), progress=False)
    adds_bos = tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
    assert ours.encode_pairs([("<s>The", " B")])[0][0][0] == tokenizer.bos_token_id
    assert len(ours.encode_pairs([("<s>The", " B")])[0][0]) == len(ours.encode_pairs([("The", " B")])[0][0]) + (not adds_bos)
    assert ours.encode_pairs([("  ", "yes")]) == [reference._encode_pair("  ", "yes")]  # whitespace-only context
    assert ours.max_length == reference.max_length == 64
    expected_tokens = [reference._encode_pair(c, d) if c else None for c, d in PAIRS]
    for got, want in zip(ours.encode_pairs(PAIRS), expected_tokens, strict=True):
        if want is not None:
            assert got == want
    want = reference.loglikelihood(_instances("loglikelihood", PAIRS), disable_tqdm=True)
    got = ours.loglikelihood(_instances("loglikelihood", PAIRS))
    assert [g for _, g in got] == [g for _, g in want]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, want, strict=True)) < 1e-4


def test_rerun_is_answered_from_the_cache(pair: tuple, tmp_path: Path) -> None:
    model, tokenizer, _ = pair
    cache = RequestCache(tmp_path / "cache.sqlite")
    first = TextViewLM(TextView(model, tokenizer, "fp"), RequestPath(cache), progress=False)
    values = first.loglikelihood(_instances("loglikelihood", PAIRS))
    assert (first.requests, first.cached_requests) == (len(PAIRS), 0)
    again = TextViewLM(TextView(model, tokenizer, "fp"), RequestPath(cache), progress=False)
    assert again.loglikelihood(_instances("loglikelihood", PAIRS)) == values
    assert (again.requests, again.cached_requests, again.scorer.forwards) == (len(PAIRS), len(PAIRS), 0)
    view = TextView(model, tokenizer, "other-fingerprint")
    other = TextViewLM(view, RequestPath(cache), progress=False)
    other.loglikelihood(_instances("loglikelihood", PAIRS[:2]))
    assert other.cached_requests == 0
    cache.close()


def test_rolling_loglikelihood_matches_hflm(pair: tuple) -> None:
    model, tokenizer, reference = pair
    texts = [("Answer with the option's letter from the given choices directly. " * 4,), ("red blue",)]
    want = reference.loglikelihood_rolling(_instances("loglikelihood_rolling", texts), disable_tqdm=True)
    got = TextViewLM(TextView(model, tokenizer, "fp"), progress=False).loglikelihood_rolling(
        _instances("loglikelihood_rolling", texts)
    )
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4


def test_generate_until_stops_at_the_stop_string(pair: tuple) -> None:
    model, tokenizer, _ = pair
    lm = TextViewLM(TextView(model, tokenizer, "fp"), progress=False)
    args = [("The capital of Veloria is", {"until": ["\n"], "max_gen_toks": 5})]
    (text,) = lm.generate_until(_instances("generate_until", args))
    assert isinstance(text, str) and "\n" not in text
    assert lm.generate_until(_instances("generate_until", args)) == [text]


def test_loglikelihood_chunks_are_big_enough_to_pack(pair: tuple) -> None:
    """On an accelerator the scorer packs one chunk of requests into forwards: 256 at a time (two
    MMLU subjects) made the 5-shot bench run 110 small forwards; there a bench-sized request list is
    one chunk. On CPU, chunks stay small so an interrupted run loses little."""
    model, tokenizer, _ = pair
    assert default_score_chunk(torch.device("cuda")) == SCORE_COMMIT_REQUESTS
    assert default_score_chunk(torch.device("cpu")) == COMMIT_REQUESTS
    args = [(f"Question {q}: which?\nAnswer:", f" {option}") for q in range(500) for option in "ABCD"]
    for chunk, expected in ((SCORE_COMMIT_REQUESTS, [len(args)]), (None, [256] * 7 + [len(args) - 7 * 256])):
        lm = TextViewLM(TextView(model, tokenizer, "fp"), progress=False, score_chunk=chunk)
        calls: list[int] = []

        def score(pairs: list, calls: list[int] = calls) -> list:
            calls.append(len(pairs))
            return [(-1.0, False)] * len(pairs)

        lm.scorer.score = score  # type: ignore[method-assign]
        assert lm.loglikelihood(_instances("loglikelihood", args)) == [(-1.0, False)] * len(args)
        assert calls == expected
