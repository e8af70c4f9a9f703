"""Generation batching: `auto` sizing and out-of-memory back-off leave the answers unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.batching import GenerationBatcher
from iaa_eval.models.generation import (
    left_padded,
    prefill_rows,
    prefill_shared,
    shared_prefix_lengths,
)


def test_auto_on_cpu_uses_the_default(tiny_llama_dir: Path) -> None:
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir), batch_size="auto"))
    assert model.batcher.size == GenerationBatcher.CPU_DEFAULT


def test_out_of_memory_halves_the_batch_and_keeps_the_answers(tiny_llama_dir: Path, monkeypatch, caplog) -> None:
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir), batch_size=8))
    requests = [MMRequest(f"Question number {i}?", max_new_tokens=3) for i in range(7)]
    reference = model.generate(requests)
    real = model.model.generate
    seen: list[int] = []

    def flaky(*args: object, **kwargs: torch.Tensor) -> torch.Tensor:
        rows = kwargs["input_ids"].shape[0]
        seen.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError("injected")
        return real(*args, **kwargs)

    monkeypatch.setattr(model.model, "generate", flaky)
    assert model.generate(requests) == reference
    assert model.batcher.size == 1 and seen[:3] == [7, 3, 1]
    assert "out of memory" in caplog.text


def test_a_single_request_that_does_not_fit_is_reraised(tiny_llama_dir: Path, monkeypatch) -> None:
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir), batch_size=1))

    def never(*args: object, **kwargs: object) -> torch.Tensor:
        raise torch.OutOfMemoryError("injected")

    monkeypatch.setattr(model.model, "generate", never)
    with pytest.raises(torch.OutOfMemoryError):
        model.generate([MMRequest("Why?", max_new_tokens=2)])


def test_batches_are_prepared_a_batch_ahead_in_another_thread(fresh_seed: int) -> None:
    """``prepare`` runs off the calling thread, one batch ahead of ``compute``; results keep the
    items' order, and an out-of-memory retry prepares the smaller batch again."""
    import random
    import threading

    items = list(range(random.Random(fresh_seed).randrange(9, 40)))
    batcher = GenerationBatcher(4, torch.nn.Linear(1, 1))
    log: list[tuple[str, int, bool]] = []
    caller = threading.get_ident()
    failed: list[bool] = []
    second_prepared = threading.Event()
    overlapped: list[bool] = []

    def prepare(chunk: list[int]) -> list[int]:
        log.append(("prepare", chunk[0], threading.get_ident() == caller))
        if chunk[0] == 4:
            second_prepared.set()
        return [x * 10 for x in chunk]

    def compute(prepared: list[int]) -> list[int]:
        log.append(("compute", prepared[0] // 10, True))
        if prepared[0] == 0:  # batch 2 is prepared while batch 1 computes
            overlapped.append(second_prepared.wait(timeout=30))
        if len(prepared) == 4 and prepared[0] == 40 and not failed:
            failed.append(True)
            raise torch.OutOfMemoryError("injected")
        return [x + 1 for x in prepared]

    assert batcher.map(items, compute, prepare) == [x * 10 + 1 for x in items]
    assert batcher.size == 2
    assert not any(on_caller for step, _, on_caller in log if step == "prepare")
    computed = [start for step, start, _ in log if step == "compute"]
    assert computed[:3] == [0, 4, 4] and computed[3] == 6  # the retry re-prepared 4..5
    assert overlapped == [True]


def test_without_overlap_batches_are_prepared_inline_and_timed(fresh_seed: int) -> None:
    """``overlap = False``: each batch is prepared on the calling thread just before it runs,
    with the same results; the host's time is counted as waited for, all of it."""
    import random
    import threading
    import time

    items = list(range(random.Random(fresh_seed).randrange(5, 30)))
    batcher = GenerationBatcher(3, torch.nn.Linear(1, 1))
    batcher.overlap = False
    caller = threading.get_ident()
    order: list[str] = []

    def prepare(chunk: list[int]) -> list[int]:
        assert threading.get_ident() == caller
        order.append("prepare")
        time.sleep(0.01)
        return [x * 10 for x in chunk]

    def compute(prepared: list[int]) -> list[int]:
        order.append("compute")
        return [x + 1 for x in prepared]

    assert batcher.map(items, compute, prepare) == [x * 10 + 1 for x in items]
    assert order == ["prepare", "compute"] * -(-len(items) // 3)
    assert batcher.host_seconds >= batcher.prepare_seconds >= 0.01 * len(order) / 2


def test_auto_sizes_again_for_wider_prompts_before_any_work(tiny_llama_dir: Path,
                                                              monkeypatch, fresh_seed: int) -> None:
    """Under ``auto``, a batch wider than the budget is split before it runs (no work lost, no
    out-of-memory), and the answers are those of a fixed batch size."""
    import random

    rng = random.Random(fresh_seed)
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir), batch_size=4))
    requests = [MMRequest(" ".join(["word"] * rng.randrange(1, 60)) + "?", max_new_tokens=3)
                for _ in range(9)]
    reference = model.generate(requests)
    monkeypatch.setattr(GenerationBatcher, "_auto", lambda self, tokens: max(1, 400 // tokens))
    auto = load_model(ModelSpec("base", "hf", str(tiny_llama_dir), batch_size="auto"))
    auto.batcher.tokens_per_row = 10
    auto.batcher.size = 40  # as sized for 10-token rows
    widths: list[tuple[int, int]] = []
    real = auto.model.generate

    def recording(*args: object, **kwargs: torch.Tensor) -> torch.Tensor:
        widths.append(tuple(kwargs["input_ids"].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(auto.model, "generate", recording)
    assert auto.generate(requests) == reference
    assert auto.batcher.size < 9 and all(rows * (width + 3) <= 400 for rows, width in widths)


def test_a_failing_prepare_raises_in_the_caller(tiny_llama_dir: Path) -> None:
    batcher = GenerationBatcher(2, torch.nn.Linear(1, 1))

    def prepare(chunk: list[int]) -> list[int]:
        if 4 in chunk:
            raise ValueError("bad row 4")
        return chunk

    done: list[int] = []
    with pytest.raises(ValueError, match="bad row 4"):
        batcher.map(list(range(8)), lambda c: done.extend(c) or c, prepare)
    assert done == [0, 1, 2, 3]  # everything before the bad batch was answered


def test_prefill_shared_then_generate_equals_whole_prompts(tiny_llama_dir: Path,
                                                           fresh_seed: int) -> None:
    """Any causal LM: rows of one key share a head run once, heads of different keys of different
    lengths (left-padded in the prefill); their new token ids equal those of generating every
    whole (left-padded) prompt."""
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir))).model
    gen = torch.Generator().manual_seed(fresh_seed)
    vocab = model.config.vocab_size
    heads = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (7, 12, 4)]
    keys = ["a", "b", "a", "a", "b", "c"]
    rows = [heads["abc".index(k)] + torch.randint(3, vocab, (int(n),), generator=gen).tolist()
            for k, n in zip(keys, torch.randint(1, 6, (6,), generator=gen), strict=True)]
    lengths = shared_prefix_lengths(rows, keys, [0] * 6)
    assert lengths is not None and lengths["a"] >= 7 and lengths["b"] >= 12
    assert lengths["c"] == len(rows[5]) - 1  # asked once: all but its last token
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=[], pad_token_id=0)
    whole_ids = left_padded(rows, 0)
    whole = model.generate(**whole_ids, **kwargs)[:, whole_ids["input_ids"].shape[1]:]
    enc = prefill_shared(model, rows, keys, lengths, 0, lambda firsts: {})
    shared = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
    assert torch.equal(shared, whole)
    assert len({tuple(row.tolist()) for row in whole}) > 1  # the rows' answers differ


def test_shared_prefix_lengths_rules() -> None:
    rows = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [7, 2, 3, 4, 6, 6], [7, 2, 3, 4, 1]]
    pairs = ["a", "a", "b", "b"]
    # each key its own common prefix
    assert shared_prefix_lengths(rows, pairs, [2, 2, 2, 2]) == {"a": 3, "b": 4}
    assert shared_prefix_lengths(rows, pairs, [2, 2, 5, 2]) is None  # an image would be cut
    assert shared_prefix_lengths(rows, ["a", "b", "c", "d"], [1] * 4) is None  # nothing shared
    assert shared_prefix_lengths(rows, ["a", "a", None, "b"], [1] * 4) is None  # a row without key
    # a key asked once shares all but its last token
    assert shared_prefix_lengths(rows, ["a", "a", "b", "c"], [1] * 4) == {"a": 3, "b": 5, "c": 4}
    # each row keeps a token of its own
    assert shared_prefix_lengths([[1, 2], [1, 2]], ["a", "a"], [1, 1]) == {"a": 1}


def test_prefill_rows_pick_each_keys_first_row_and_map_every_row_to_it() -> None:
    assert prefill_rows(["b", "a", "b", "c", "a"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert prefill_rows(["x"]) == ([0], [0])
