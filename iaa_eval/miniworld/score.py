"""A quick in-module scorer for development and build checks (the real numbers come from the harness).

Text items are scored in the cloze (continuation) formulation that lm-eval's
``mmlu_continuation`` uses: the question in a ``Question: ...\\nAnswer:`` frame, each option's
text as the continuation, the highest summed log-likelihood wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from iaa_eval.miniworld.world import SUBJECT_ZH, Item

FRAMES = {"en": ("Question: {q}\nAnswer:", " {o}"), "zh": ("问题：{q}\n答案：", "{o}")}
# The 0-shot descriptions the harness's cloze tasks put first (lm-eval's, C-Eval's Chinese one).
DESCRIPTIONS = {"en": "The following are questions (with answers) about {s}.\n\n", "zh": "以下是中国关于{s}的问题及其答案。\n\n"}


@torch.inference_mode()
def option_logprobs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> list[float]:
    """Summed log-probability of each continuation after its context (right-padded batches)."""
    device = next(model.parameters()).device
    encoded = []
    for context, continuation in pairs:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]  # no BOS, as lm-eval's HFLM
        encoded.append((ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"]))
    out = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(c) + len(o) for c, o in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for row, (c, o) in enumerate(chunk):
            ids[row, : len(c) + len(o)] = torch.tensor(c + o)
            mask[row, : len(c) + len(o)] = 1
        logp = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
        for row, (c, o) in enumerate(chunk):
            positions = torch.arange(len(c) - 1, len(c) + len(o) - 1, device=device)
            out.append(logp[row, positions, torch.tensor(o, device=device)].sum().item())
    return out


def cloze_correct(model: Any, tokenizer: Any, items: Sequence[Item], lang: str) -> list[bool]:
    """Per item: does the right option have the highest log-likelihood?"""
    context, cont = FRAMES[lang]
    names = {s: " ".join(s.split("_")) if lang == "en" else SUBJECT_ZH[s] for s in SUBJECT_ZH}
    pairs = [(DESCRIPTIONS[lang].format(s=names[it.subject]) + context.format(q=it.question), cont.format(o=o))
             for it in items for o in it.options]
    scores = option_logprobs(model, tokenizer, pairs)
    return [
        max(range(4), key=lambda k, i=i: scores[4 * i + k]) == "ABCD".index(it.answer) for i, it in enumerate(items)
    ]


def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired correctness vectors (binomial on discordant pairs)."""
    n01 = sum(x and not y for x, y in zip(a, b, strict=True))
    n10 = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = n01 + n10, min(n01, n10)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
