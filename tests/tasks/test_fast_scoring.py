"""The fast scorer against lm-eval's HFLM on the same tiny random Llama (fresh seed each run)."""

from __future__ import annotations

import logging
import random

import pytest
import torch

from iaa_eval.tasks.fast_scoring import FastScorer, _Row, plan_groups
from tests.tasks.text_helpers import hflm, tiny_model


@pytest.fixture
def seed() -> int:
    value = random.randrange(1 << 30)
    logging.getLogger(__name__).warning("seed=%d", value)  # shown on failure, to reproduce it
    return value


def _pairs(rng: random.Random, max_token: int) -> list[tuple[list[int], list[int]]]:
    """Three 'subjects' (shared prefixes of 5, 40 and 90 tokens) x 4 'questions' x 4 options,
    one-token and multi-token options, plus two that need left truncation."""
    pairs = []
    for prefix_len in (5, 40, 90):
        prefix = [rng.randrange(3, max_token) for _ in range(prefix_len)]
        for _ in range(4):
            context = prefix + [rng.randrange(3, max_token) for _ in range(rng.randrange(1, 20))]
            for _ in range(4):
                pairs.append((context, [rng.randrange(3, max_token) for _ in range(rng.choice([1, 1, 3]))]))
    pairs += [([7] * 140, [8, 9]), ([5] * 150, [6])]
    return pairs


@pytest.mark.parametrize("reuse", [True, False])
def test_matches_hflm_loglikelihood_tokens(seed: int, reuse: bool) -> None:
    model, tokenizer = tiny_model(seed, max_positions=128)
    ref_lm = hflm(model, tokenizer, batch_size=5)
    pairs = _pairs(random.Random(seed), len(tokenizer))
    reference = ref_lm._loglikelihood_tokens([(("", ""), c, d) for c, d in pairs], disable_tqdm=True)
    scorer = FastScorer(model, ref_lm.max_length, prefix_reuse=reuse, progress=False)
    ours = scorer.score(pairs)
    assert [g for _, g in ours] == [g for _, g in reference]
    assert max(abs(a - b) for (a, _), (b, _) in zip(ours, reference, strict=True)) < 1e-4
    distinct_rows = len({tuple((c + d)[-129:][:-1]) for c, d in pairs})
    assert scorer.forwards < distinct_rows  # rows are batched; one-token options share a row


def test_plan_groups_share_prefixes_but_never_readouts() -> None:
    prefix = tuple(range(100, 140))
    rows = [_Row(prefix + (i, i), [(i, (9,))]) for i in range(3)]
    rows.append(_Row(prefix[:20] + (7,), [(3, (1, 2, 3))]))  # shares only 20 tokens: would halve the prefix
    rows.append(_Row((1, 2, 3), [(4, (5,))]))
    groups = plan_groups(rows, reuse=True, min_prefix=16)
    shared = [g for g in groups if g.prefix_len]
    assert len(shared) == 1 and shared[0].prefix_len == 40 and len(shared[0].rows) == 3
    plain = [g for g in groups if not g.prefix_len]
    assert sorted(len(r.tokens) for r in plain[0].rows) == [3, 21]
    assert plan_groups(rows, reuse=False, min_prefix=16)[0].prefix_len == 0


def test_prefix_stops_before_the_readout_positions() -> None:
    rows = [_Row(tuple(range(30)) + (i,), [(i, (1, 2, 3, 4))]) for i in range(2)]
    (group,) = plan_groups(rows, reuse=True, min_prefix=4)
    assert group.prefix_len == 31 - 4  # read-outs cover the last 4 positions of each row


def test_out_of_memory_shrinks_the_budget_and_splits(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    model, tokenizer = tiny_model(seed, max_positions=128)
    pairs = _pairs(random.Random(seed), len(tokenizer))
    expected = FastScorer(model, 128, progress=False).score(pairs)
    scorer = FastScorer(model, 128, progress=False)
    real_forward = scorer._forward

    def forward(ids: torch.Tensor, kv: object, use_cache: bool) -> tuple:
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real_forward(ids, kv, use_cache)

    scorer._forward = forward
    budget = scorer.plan.budget_bytes
    with caplog.at_level(logging.WARNING):
        got = scorer.score(pairs)
    assert [g for _, g in got] == [g for _, g in expected]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, expected, strict=True)) < 1e-5
    assert scorer.plan.budget_bytes < budget and "out of memory" in caplog.text


def test_fixed_batch_size_caps_rows_and_full_logit_fallback_agrees(seed: int) -> None:
    model, tokenizer = tiny_model(seed, max_positions=128)
    pairs = _pairs(random.Random(seed), len(tokenizer))[-20:]
    fast = FastScorer(model, 128, progress=False, prefix_reuse=False).score(pairs)
    capped = FastScorer(model, 128, batch_size=1, prefix_reuse=False, progress=False)
    fallback = FastScorer(model, 128, batch_size=3, progress=False)
    fallback._decoder = fallback._head = None  # as for a model whose logits are transformed after the head
    for other in (capped.score(pairs), fallback.score(pairs)):
        assert [g for _, g in other] == [g for _, g in fast]
        assert max(abs(a - b) for (a, _), (b, _) in zip(other, fast, strict=True)) < 1e-4
    assert capped.forwards == len({tuple((c + d)[-129:][:-1]) for c, d in pairs})


def test_auto_budget_on_cpu_and_bad_requests() -> None:
    model, _ = tiny_model(0, max_positions=64)
    scorer = FastScorer(model, 64, progress=False)
    assert scorer.plan.max_rows is None and scorer.plan.budget_bytes == 1 << 30
    assert scorer._decoder is not None  # the split head agrees with the model's logits
    with pytest.raises(ValueError, match="request 0: context and continuation must be non-empty"):
        scorer.score([([1, 2], [])])
