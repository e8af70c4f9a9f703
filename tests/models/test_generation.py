"""Generation batching: `auto` sizing and out-of-memory back-off leave the answers unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.generation import (
    GenerationBatcher,
    left_padded,
    prefill_rows,
    prefill_shared,
    shared_prefix_length,
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


def test_prefill_shared_then_generate_equals_whole_prompts(tiny_llama_dir: Path,
                                                           fresh_seed: int) -> None:
    """Any causal LM: rows of one key share a head run once; their new token ids equal those of
    generating every whole (left-padded) prompt."""
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir))).model
    gen = torch.Generator().manual_seed(fresh_seed)
    vocab = model.config.vocab_size
    heads = [torch.randint(3, vocab, (7,), generator=gen).tolist() for _ in range(2)]
    keys = ["a", "b", "a", "a", "b"]
    rows = [heads[k == "b"] + torch.randint(3, vocab, (int(n),), generator=gen).tolist()
            for k, n in zip(keys, torch.randint(1, 6, (5,), generator=gen), strict=True)]
    length = shared_prefix_length(rows, keys, [0] * 5)
    assert length is not None and length >= 7
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=[], pad_token_id=0)
    whole_ids = left_padded(rows, 0)
    whole = model.generate(**whole_ids, **kwargs)[:, whole_ids["input_ids"].shape[1]:]
    enc = prefill_shared(model, rows, keys, length, 0, lambda firsts: {})
    shared = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
    assert torch.equal(shared, whole)
    assert len({tuple(row.tolist()) for row in whole}) > 1  # the rows' answers differ


def test_shared_prefix_length_rules() -> None:
    rows = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [7, 2, 3, 4, 6, 6], [7, 2, 3, 4, 1]]
    pairs = ["a", "a", "b", "b"]
    assert shared_prefix_length(rows, pairs, [2, 2, 2, 2]) == 3  # the shortest common prefix
    assert shared_prefix_length(rows, pairs, [2, 2, 4, 2]) is None  # an image would be cut
    assert shared_prefix_length(rows, ["a", "b", "c", "d"], [1] * 4) is None  # nothing shared
    assert shared_prefix_length(rows, ["a", "a", None, "b"], [1] * 4) is None  # a row without key
    # each row keeps a token of its own
    assert shared_prefix_length([[1, 2], [1, 2]], ["a", "a"], [1, 1]) == 1


def test_prefill_rows_pick_each_keys_first_row_and_map_every_row_to_it() -> None:
    assert prefill_rows(["b", "a", "b", "c", "a"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert prefill_rows(["x"]) == ([0], [0])
