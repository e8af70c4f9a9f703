"""The fast scorer against lm-eval's HFLM on the same tiny random Llama (fresh seed each run)."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import torch

from iaa_eval.models.loglik.packing import (
    FLEX_BLOCK,
    Pack,
    _lcp,
    block_mask,
    dense_mask,
    pack_layout,
    plan_packs,
)
from iaa_eval.models.loglik.scorer import (
    MAX_TOKENS,
    FastScorer,
    MemoryPlan,
    _Group,
    _Row,
    plan_groups,
)
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


def test_common_prefix_length_by_halving_matches_a_scan(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        a = tuple(rng.randrange(3) for _ in range(rng.randrange(40)))
        b = a[: rng.randrange(len(a) + 1)] + tuple(rng.randrange(3) for _ in range(rng.randrange(40)))
        limit = rng.randrange(50)
        scan = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        assert _lcp(a, b, limit) == min(scan, limit)


def test_prefix_stops_before_the_readout_positions() -> None:
    rows = [_Row(tuple(range(30)) + (i,), [(i, (1, 2, 3, 4))]) for i in range(2)]
    (group,) = plan_groups(rows, reuse=True, min_prefix=4)
    assert group.prefix_len == 31 - 4  # read-outs cover the last 4 positions of each row


def test_out_of_memory_shrinks_the_budget_and_replans(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    model, tokenizer = tiny_model(seed, max_positions=128)
    pairs = _pairs(random.Random(seed), len(tokenizer))
    expected = FastScorer(model, 128, progress=False).score(pairs)
    scorer = FastScorer(model, 128, progress=False)
    real_score = scorer._score
    refused: list[int] = []  # segments (groups) in each refused pack

    def score(batch: list[Pack]) -> Any:
        if len(batch[0].rows) > 2:
            refused.append(len(batch[0].segments))
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real_score(batch)

    scorer._score = score
    budget = scorer.plan.budget_bytes
    with caplog.at_level(logging.WARNING):
        got = scorer.score(pairs)
    assert [g for _, g in got] == [g for _, g in expected]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, expected, strict=True)) < 1e-5
    assert scorer.plan.budget_bytes < budget and "out of memory" in caplog.text
    assert refused[0] >= 3  # the first refused pack held every subject; its rows were re-planned


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


def test_subjects_share_one_packed_forward(seed: int) -> None:
    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    want = FastScorer(model, 256, prefix_reuse=False, progress=False).score(pairs)
    scorer = FastScorer(model, 256, progress=False)
    _assert_same(scorer.score(pairs), want, pairs)
    rows = [_Row(r, [(0, (1,))]) for r in {tuple(c + d)[:-1] for c, d in pairs}]
    groups = plan_groups(rows, reuse=True, min_prefix=16)
    ((sequences, length, segments),) = scorer.shapes  # one forward in all
    assert sequences == 1 and segments == len(groups) >= 4 and length % 8 == 0
    once = sum(g.prefix_len + sum(len(r.tokens) - g.prefix_len for r in g.rows) for g in groups)
    assert scorer.tokens == once < sum(len(r.tokens) for r in rows) - 3 * 20  # each prefix ran once, not per row


def test_token_cap_splits_a_group_across_packs(seed: int) -> None:
    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    want = FastScorer(model, 256, prefix_reuse=False, progress=False).score(pairs)
    scorer = FastScorer(model, 256, max_tokens=150, progress=False)
    _assert_same(scorer.score(pairs), want, pairs)
    assert len(scorer.shapes) >= 4 and all(length <= 152 for _, length, _ in scorer.shapes)
    groups = plan_groups([_Row(tuple(c + d)[:-1], [(0, tuple(d))]) for c, d in pairs], reuse=True, min_prefix=16)
    packs = plan_packs(groups, 150)
    runs = [s.prefix_len for p in packs for s in p.segments if s.prefix_len]
    assert len(runs) > len(groups)  # some group's prefix ran in two packs


def test_single_row_group_and_plain_row_in_one_pack(seed: int) -> None:
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
    assert scorer.shapes == [(1, 112, 3)]  # 40 + 2 + 9 + 17 + 25 + 5 + 12 = 110 tokens, aligned to 8
    assert scorer.tokens == 110


def test_plan_packs_fills_packs_and_splits_only_when_worth_it() -> None:
    def group(prefix: int, suffixes: list[int]) -> _Group:
        return _Group(prefix, [_Row(tuple(range(prefix)) + (7,) * n, [(0, (1,))]) for n in suffixes])

    packs = plan_packs([group(30, [20, 20]), group(50, [10] * 12), group(40, [5, 5])], 200)
    assert [[(s.prefix_len, len(s.rows)) for s in p.segments] for p in packs] == [[(30, 2), (50, 8)], [(50, 4), (40, 2)]]
    # 80 tokens left after the first group: 3 rows of 10 would fit but carry less than the 50-token prefix
    packs = plan_packs([group(30, [20, 20]), group(50, [10] * 6)], 150)
    assert [[(s.prefix_len, len(s.rows)) for s in p.segments] for p in packs] == [[(30, 2)], [(50, 6)]]
    assert [len(p.rows) for p in plan_packs([group(30, [1] * 7)], 1000, max_rows=3)] == [3, 3, 1]
    assert [len(p.rows) for p in plan_packs([group(30, [1] * 7)], 1000, max_reads=2)] == [2, 2, 2, 1]
    assert [p.size for p in plan_packs([group(0, [300, 5])], 100)] == [300, 5]  # a long row goes alone


def test_block_mask_matches_the_dense_mask() -> None:
    """The flex block table (empty / partial / full per 128 x 128 block) and its mask_mod against the
    dense mask of a random layout: several groups, rows, a plain segment and padding."""
    rng = random.Random(0)

    def group(prefix: int, rows: int) -> _Group:
        head = tuple(rng.randrange(5, 99) for _ in range(prefix))
        return _Group(prefix, [_Row(head + (rng.randrange(5, 99),) * rng.randrange(1, 90), [(0, (1,))])
                               for _ in range(rows)])

    groups = [group(200, 3), group(0, 1), group(130, 5), group(0, 2)]
    (pack,) = plan_packs(groups, 10_000)
    layout = pack_layout([pack], 128 * (pack.size // 128 + 1))
    _, _, segment, part, *_ = layout.buffer.split(layout.sizes)
    dense = dense_mask(segment, part, torch.float32)[0, 0] == 0
    blocks = block_mask(segment, part)
    n = layout.length // FLEX_BLOCK
    per_block = dense.view(n, FLEX_BLOCK, n, FLEX_BLOCK)
    assert torch.equal(blocks.to_dense()[0, 0].bool(), per_block.any(dim=3).any(dim=1))
    index = torch.arange(layout.length)
    assert torch.equal(blocks.mask_mod(0, 0, index[:, None], index[None, :]), dense)
    full = per_block.all(dim=3).all(dim=1)
    assert 0 < int(full.sum()) < int(per_block.any(dim=3).any(dim=1).sum())  # some full, some partial
    assert bool(dense.any(dim=1).all())  # every query (padding too) sees at least itself


def _compiles() -> bool:
    try:
        torch.compile(lambda x: x + 1)(torch.ones(2))
    except Exception:  # noqa: BLE001 - any failure means no working compiler here
        return False
    return True


@pytest.mark.skipif(not _compiles(), reason="torch.compile does not work on this machine")
def test_flex_attention_packs_match_dense_packs(seed: int) -> None:
    """The CUDA path (flex attention over a block mask, packs of one compiled length) run on CPU."""
    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    want = FastScorer(model, 256, progress=False).score(pairs)
    scorer = FastScorer(model, 256, flex=True, max_tokens=256, progress=False)
    assert scorer.flex and scorer.plan.mask_bytes == 0
    _assert_same(scorer.score(pairs), want, pairs)
    assert {length for _, length, _ in scorer.shapes} == {256} and len(scorer.shapes) >= 2
    assert model.config._attn_implementation == "sdpa"  # switched back after the call


def test_mmlu_sized_plan_runs_few_full_forwards() -> None:
    """The planner alone (no model runs) on the 5-shot MMLU bench's shape, under an 8B model's memory
    plan on an 80 GB GPU with flex attention: 57 subjects x 35 questions, few-shot prefixes ~200-2400
    tokens (log-normal), question suffixes ~30-900. Packs must be nearly full (the H100 run: 13
    forwards of 16,384 tokens, 97% real)."""
    layers_bytes = 2 * (6 * 4096 + 3 * 14336 + 4 * 32 * 128)
    plan = MemoryPlan(layers_bytes, 0, 8 * 128256, int(53.6 * 2**30))
    rng = random.Random(0)
    groups = []
    for subject in range(57):
        scale = rng.lognormvariate(0, 0.5)
        prefix = min(2400, max(200, round(550 * scale)))
        head = tuple(subject * 10_000 + t for t in range(prefix))
        rows = [_Row(head + (7,) * min(900, max(30, round(rng.gauss(95, 25) * scale))), [(0, (1,))]) for _ in range(35)]
        groups.append(_Group(prefix, rows))
    packs = plan_packs(groups, plan.capacity, plan.max_rows, plan.max_reads)
    once = sum(g.prefix_len + sum(len(r.tokens) - g.prefix_len for r in g.rows) for g in groups)
    assert plan.capacity == MAX_TOKENS
    assert len(packs) <= once // MAX_TOKENS + 2  # at most one partly empty pack beyond the last
    assert sum(p.size for p in packs) <= 1.05 * once  # prefixes re-run for split groups stay rare


def test_a_failing_flex_compile_falls_back_to_dense_masks(seed: int, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from iaa_eval.models.loglik import scorer as scorer_module

    model, tokenizer = tiny_model(seed, max_positions=256)
    pairs = _subjects(random.Random(seed), len(tokenizer))
    want = FastScorer(model, 256, progress=False).score(pairs)

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("injected: triton compilation failed\ndetails")

    monkeypatch.setattr(scorer_module, "block_mask", broken)
    scorer = FastScorer(model, 256, flex=True, progress=False)
    with caplog.at_level(logging.WARNING):
        _assert_same(scorer.score(pairs), want, pairs)
    assert not scorer.flex and scorer.plan.mask_bytes > 0
    assert "flex attention failed (RuntimeError: injected: triton compilation failed)" in caplog.text
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("value", [float("-inf"), float("nan")])
def test_non_finite_target_logits_stop_the_scorer(seed: int, value: float) -> None:
    """A target token whose logit is -inf scores -inf without any NaN in sight: refused all the
    same, as generation refuses it."""
    from iaa_eval.errors import NonFiniteOutput

    model, tokenizer = tiny_model(seed, max_positions=128)
    target = 7
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: out.index_fill(-1, torch.tensor([target]), value))
    try:
        with pytest.raises(NonFiniteOutput, match="NaN or infinite"):
            FastScorer(model, 128, progress=False).score([([5, 9, 12], [target])])
    finally:
        hook.remove()
