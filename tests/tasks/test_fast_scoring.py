"""The fast scorer against lm-eval's HFLM on the same tiny random Llama (fresh seed each run)."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import torch

from iaa_eval.tasks.fast_scoring import FastScorer, MemoryPlan, _Group, _Row, plan_groups
from iaa_eval.tasks.prefix_packing import pack, partition, plan_waves
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


# ---------------------------------------------------------------- packing several prefix groups per forward
def _subjects(rng: random.Random, max_token: int) -> list[tuple[list[int], list[int]]]:
    """Four 'subjects' with prefixes of 20, 33, 57 and 90 tokens, 2-5 questions each, questions of
    1-29 tokens, one- and two-token options (so rows of one question differ in length too)."""
    pairs = []
    for prefix_len, questions in ((20, 3), (33, 5), (57, 2), (90, 4)):
        prefix = [rng.randrange(3, max_token) for _ in range(prefix_len)]
        for _ in range(questions):
            context = prefix + [rng.randrange(3, max_token) for _ in range(rng.randrange(1, 30))]
            pairs += [(context, [rng.randrange(3, max_token) for _ in range(rng.choice([1, 1, 2]))]) for _ in range(4)]
    return pairs


def _assert_same(got: list, want: list, pairs: list) -> None:
    """Within 1e-4, identical greedy flags, and the same argmax per question (context)."""
    assert [g for _, g in got] == [g for _, g in want]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, want, strict=True)) < 1e-4
    by_context: dict[tuple, list[int]] = {}
    for i, (context, _) in enumerate(pairs):
        by_context.setdefault(tuple(context), []).append(i)
    for options in by_context.values():
        assert max(options, key=lambda i: got[i][0]) == max(options, key=lambda i: want[i][0])


def test_subjects_share_one_prefix_forward_and_one_suffix_forward(seed: int) -> None:
    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    want = FastScorer(model, 256, prefix_reuse=False, progress=False).score(pairs)
    scorer = FastScorer(model, 256, progress=False)
    _assert_same(scorer.score(pairs), want, pairs)
    (prefixes, longest, past), (suffixes, seq, past_2) = scorer.shapes  # two forwards in all
    assert prefixes >= 4 and longest >= 90 and past == 0  # every subject's prefix, right-padded
    assert past_2 >= 90 and (past_2 + seq) % 8 == 0 and suffixes == len({tuple(c + d)[:-1] for c, d in pairs})


def test_token_cap_packs_groups_into_several_forwards(seed: int) -> None:
    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    want = FastScorer(model, 256, prefix_reuse=False, progress=False).score(pairs)
    scorer = FastScorer(model, 256, max_tokens=150, progress=False)
    _assert_same(scorer.score(pairs), want, pairs)
    assert all(rows * seq <= 150 or rows == 1 for rows, seq, _ in scorer.shapes)
    assert sum(1 for _, _, past in scorer.shapes if past) >= 3  # several packed suffix forwards
    assert sum(1 for _, _, past in scorer.shapes if not past) >= 2  # the prefixes need several too


def test_single_row_group_and_plain_row_in_a_packed_batch(seed: int) -> None:
    model, tokenizer = tiny_model(seed, max_positions=128)
    rng = random.Random(seed)
    a, b = ([rng.randrange(3, len(tokenizer)) for _ in range(n)] for n in (40, 25))
    contexts = [a + [5] * 2, a + [6] * 9, a + [7] * 17, b + [8] * 5, [9] * 12]
    pairs = [(c, [rng.randrange(3, len(tokenizer))]) for c in contexts]
    want = FastScorer(model, 128, prefix_reuse=False, progress=False).score(pairs)
    rows = [_Row(tuple(c), [(i, tuple(d))]) for i, (c, d) in enumerate(pairs)]
    scorer = FastScorer(model, 128, progress=False)
    got = scorer._score_groups([_Group(40, rows[:3]), _Group(25, rows[3:4]), _Group(0, rows[4:])], len(pairs))
    _assert_same(got, want, pairs)
    assert scorer.shapes == [(2, 40, 0), (5, 17, 47)]  # 47 + 17 = 64: key length aligned to 8


def test_out_of_memory_splits_a_multi_group_batch(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    expected = FastScorer(model, 256, progress=False).score(pairs)
    scorer = FastScorer(model, 256, progress=False)
    real_forward = scorer._forward
    refused: list[int] = []  # distinct prefix lengths (groups) in each refused batch

    def forward(ids: torch.Tensor, kv: Any, use_cache: bool) -> tuple:
        if getattr(kv, "past", 0) and ids.shape[0] > 8:
            refused.append(kv.positions[:, 0].unique().numel())
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real_forward(ids, kv, use_cache)

    scorer._forward = forward
    with caplog.at_level(logging.WARNING):
        _assert_same(scorer.score(pairs), expected, pairs)
    assert "out of memory" in caplog.text and refused[0] >= 4  # the first refused batch held every subject
    assert all(rows <= 8 for rows, _, past in scorer.shapes if past) and len(scorer.shapes) >= 3


def test_waves_bound_the_prefix_spread_and_batches_the_padding() -> None:
    model, _ = tiny_model(0, max_positions=512)
    scorer = FastScorer(model, 512, max_tokens=64, progress=False)

    def group(prefix: int, suffixes: list[int]) -> _Group:
        return _Group(prefix, [_Row(tuple(range(prefix)) + (7,) * n, [(0, (1,))]) for n in suffixes])

    groups = [group(30, [9, 9]), group(100, [10, 8]), group(80, [40, 40]), group(20, [5, 5]), _Group(0, [_Row((3,) * 6)])]
    waves = plan_waves(groups, scorer._wave_fits)
    assert [[g.prefix_len for g in w.groups] for w in waves] == [[100, 80], [30, 20]]  # spread <= 2 once busy
    assert [s.prefix for s in waves[-1].slots].count(0) == 1  # the plain row joins the shortest prefixes
    assert [s.suffix for s in waves[0].slots] == [40, 40, 10, 8]  # longest suffix first
    assert pack(waves[0].slots, lambda t: scorer._suffixes_fit(t, 0)) == [waves[0].slots[:1], waves[0].slots[1:2],
                                                                         waves[0].slots[2:]]
    scorer.plan.max_tokens = 10_000  # one wave's worth of work: any spread goes
    assert len(plan_waves(groups, scorer._wave_fits)) == 1


def test_mmlu_sized_plan_runs_few_full_forwards() -> None:
    """The planner alone (no model runs) on the 5-shot MMLU bench's shape, under an 8B model's memory
    plan on an 80 GB GPU: 57 subjects x 35 questions, few-shot prefixes ~200-2400 tokens (log-normal),
    question suffixes ~40-900. It must run in a couple of dozen forwards near the token cap, with
    bounded padding (the bench ran 110 forwards of ~3k tokens when fed 256 requests at a time)."""
    model, _ = tiny_model(0, max_positions=64)
    scorer = FastScorer(model, 8192, progress=False)
    layers, kv_heads, heads, head_dim, hidden, inter = 32, 8, 32, 128, 4096, 14336
    scorer.plan = MemoryPlan(2 * (6 * hidden + 3 * inter), 2 * layers * kv_heads * head_dim * 2,
                             2 * head_dim * 2 * (2 * kv_heads + heads), 2, 8 * 128256, int(53.6 * 2**30))
    rng = random.Random(0)
    groups = []
    for subject in range(57):
        scale = rng.lognormvariate(0, 0.5)
        prefix = min(2400, max(200, round(550 * scale)))
        head = tuple(subject * 10_000 + t for t in range(prefix))
        rows = [_Row(head + (7,) * min(900, max(30, round(rng.gauss(95, 25) * scale))), [(0, (1,))]) for _ in range(35)]
        groups.append(_Group(prefix, rows))
    shapes, real = [], 0
    for wave in plan_waves(groups, scorer._wave_fits):
        for batch in scorer._prefix_batches(wave.groups):
            shapes.append((len(batch), batch[0].prefix_len))
            real += sum(g.prefix_len for g in batch)
        reserved = scorer.plan.kv_bytes * sum(g.prefix_len for g in wave.groups)
        for slots in scorer._suffix_batches(wave.slots, reserved):
            shapes.append((len(slots), slots[0].suffix))
            real += sum(s.suffix for s in slots)
    padded = [rows * seq for rows, seq in shapes]
    assert max(padded) <= scorer.plan.max_tokens
    assert len(shapes) <= 30 and sum(padded) / len(shapes) >= 0.55 * scorer.plan.max_tokens
    assert sum(padded) <= 1.25 * real  # padding stays bounded


def test_partition_trades_padding_against_forwards() -> None:
    lengths = [100, 90, 90, 50, 50, 50, 10]
    assert partition(lengths, lambda i: 10, 0) == [(0, 1), (1, 3), (3, 6), (6, 7)]  # no padding at all
    assert partition(lengths, lambda i: 10, 1000) == [(0, 7)]  # a forward costs more than 260 padded slots
    assert partition(lengths, lambda i: 300 // lengths[i], 1000) == [(0, 3), (3, 7)]  # the token cap (300)
    assert partition([], lambda i: 1, 1.0) == []
