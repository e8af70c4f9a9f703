"""Option scoring: the log-likelihood of each candidate continuation after a prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from iaa_eval.errors import NonFiniteOutput


def score_options(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[Sequence[int]],
    options: Sequence[Sequence[str]],
    forward_kwargs: Sequence[dict[str, Any]] | None = None,
) -> list[list[float]]:
    """Sum of log-probabilities of each option's tokens given its prompt, one forward per option.

    ``contexts`` are the prompts' token ids (image placeholders already expanded, if any);
    ``forward_kwargs`` (one dict per prompt) carries extra model inputs such as ``pixel_values``.
    """
    results: list[list[float]] = []
    for index, (context, choices) in enumerate(zip(contexts, options, strict=True)):
        context = list(context)
        extra = forward_kwargs[index] if forward_kwargs else {}
        scores = []
        for choice in choices:
            continuation = tokenizer(choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + continuation], device=model.device)
            with torch.inference_mode():
                logits = model(input_ids=ids, **extra).logits[0].float()
            logprobs = torch.log_softmax(logits[-len(continuation) - 1 : -1], dim=-1)
            target = torch.tensor(continuation, device=logprobs.device)
            value = logprobs.gather(1, target[:, None]).sum().item()
            if math.isnan(value):
                raise NonFiniteOutput(f"the model's logits are NaN (prompt {index}, option {choice!r}); expected finite logits")
            scores.append(value)
        results.append(scores)
    return results
