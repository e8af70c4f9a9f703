"""A quick scorer for development and build checks (the real numbers come from the harness).

Text items are scored in the cloze (continuation) formulation that lm-eval's
``mmlu_continuation`` uses: the question in a ``Question: ...\\nAnswer:`` frame, each option's
text as the continuation, the highest summed log-likelihood wins. The log-likelihoods come from
the harness's engine (:class:`~iaa_eval.models.loglik.scorer.FastScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iaa_eval.miniworld.world import SUBJECT_ZH, Item
from iaa_eval.models.loglik.scorer import FastScorer

FRAMES = {"en": ("Question: {q}\nAnswer:", " {o}"), "zh": ("问题：{q}\n答案：", "{o}")}
# The 0-shot descriptions the harness's cloze tasks put first (lm-eval's, C-Eval's Chinese one).
DESCRIPTIONS = {"en": "The following are questions (with answers) about {s}.\n\n",
                "zh": "以下是中国关于{s}的问题及其答案。\n\n"}


def option_logprobs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[float]:
    """Summed log-probability of each continuation after its context. Context and continuation are
    encoded apart, without BOS (as lm-eval's HFLM for these prompts), and never truncated."""
    encoded = [(tokenizer(context, add_special_tokens=False)["input_ids"],
                tokenizer(continuation, add_special_tokens=False)["input_ids"])
               for context, continuation in pairs]
    longest = max(len(c) + len(o) for c, o in encoded)
    scorer = FastScorer(model, longest, progress=False)
    return [logprob for logprob, _ in scorer.score(encoded)]


def cloze_correct(model: Any, tokenizer: Any, items: Sequence[Item], lang: str) -> list[bool]:
    """Per item: does the right option have the highest log-likelihood?"""
    context, cont = FRAMES[lang]
    names = {s: " ".join(s.split("_")) if lang == "en" else SUBJECT_ZH[s] for s in SUBJECT_ZH}
    pairs = [(DESCRIPTIONS[lang].format(s=names[it.subject]) + context.format(q=it.question),
              cont.format(o=o)) for it in items for o in it.options]
    scores = option_logprobs(model, tokenizer, pairs)
    return [max(range(4), key=lambda k, i=i: scores[4 * i + k]) == "ABCD".index(it.answer)
            for i, it in enumerate(items)]
