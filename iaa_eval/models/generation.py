"""Batched greedy decoding with left padding, shared by the adapters."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from iaa_eval.errors import NonFiniteOutput


def check_logits(module: torch.nn.Module, args: Any, output: Any) -> None:
    """Forward hook: raise :class:`NonFiniteOutput` when a forward returns NaN logits. Greedy argmax
    over NaN silently picks token 0, so a broken model would otherwise answer plausible garbage."""
    logits = getattr(output, "logits", None)
    if logits is not None and torch.isnan(logits).any():
        raise NonFiniteOutput(f"the model's logits are NaN (shape {tuple(logits.shape)}); expected finite logits")


@contextlib.contextmanager
def nan_guard(model: torch.nn.Module | None) -> Iterator[None]:
    """:func:`check_logits` on ``model``'s forwards while the block runs."""
    handle = model.register_forward_hook(check_logits) if model is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def greedy_decode(
    generate: Callable[..., torch.Tensor],
    tokenizer: Any,
    batch_inputs: dict[str, torch.Tensor],
    max_new_tokens: int,
    eos_token_ids: Sequence[int] | None = None,
    watch: torch.nn.Module | None = None,
) -> list[str]:
    """Run ``generate(**batch_inputs)`` greedily and decode only the new tokens.

    ``batch_inputs`` must be left-padded so every row's new tokens start at the same column.
    ``watch``: the module whose forwards ``generate`` runs; NaN logits there raise
    :class:`~iaa_eval.errors.NonFiniteOutput` instead of decoding into garbage.
    """
    prompt_len = batch_inputs["input_ids"].shape[1]
    eos = list(eos_token_ids) if eos_token_ids else tokenizer.eos_token_id
    with torch.inference_mode(), nan_guard(watch):
        output = generate(
            **batch_inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, prompt_len:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def ensure_pad_token(tokenizer: Any) -> None:
    """Left padding for generation needs a pad token; fall back to EOS as most causal LMs do."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]
