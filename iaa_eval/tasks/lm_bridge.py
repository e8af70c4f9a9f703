"""Our ``lm_eval.api.model.LM`` over any :class:`~iaa_eval.models.base.TextView`.

lm-eval's tasks (prompts, few-shot sampling, metrics) run unchanged on our models; the model work
goes through :class:`~iaa_eval.models.loglik.scorer.FastScorer` and the run's request cache. The
tokenization follows ``HFLM`` exactly, because a different split of context and continuation
tokens would change the numbers: trailing whitespace of the context moves to the continuation,
``context + continuation`` is encoded as a whole and split at the length of the encoded context,
and an empty context becomes the BOS (or EOS) token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lm_eval.api.model import LM
from lm_eval.models.utils import resolve_max_length
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from iaa_eval.models.generation import nan_guard
from iaa_eval.models.loglik.scorer import FastScorer
from iaa_eval.runner.cache import request_key
from iaa_eval.runner.distributed import Shards

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from iaa_eval.models.base import TextView
    from iaa_eval.runner.cache import RequestCache

log = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKENS = 256
COMMIT_REQUESTS = 256  # requests per cache transaction (per rank): what a crash can cost at most
# ... except log-likelihoods on an accelerator: a chunk is also what the scorer packs into forwards,
# and 256 requests (~64 MMLU questions, 2 subjects) made 110 small forwards of the 5-shot bench on an
# H100 instead of ~24 full ones (a chunk of this size is ~15 s of an 8B model on MMLU). On a CPU a
# forward is compute-bound at any size, so packing across chunks buys nothing there and the small
# chunks keep what an interrupted run loses small.
SCORE_COMMIT_REQUESTS = 8192


def default_score_chunk(device: torch.device) -> int:
    """Log-likelihood requests per cache transaction: big on accelerators, small on CPU."""
    return COMMIT_REQUESTS if device.type == "cpu" else SCORE_COMMIT_REQUESTS


class TextViewLM(LM):
    """lm-eval model over a text view, answering from the request cache first.

    Args:
        view: tokenizer + causal LM + fingerprint.
        cache: the run's request cache (``None``: no caching).
        batch_size: ``"auto"`` or rows per batch.
        prefix_reuse: reuse shared prompt prefixes (identical numbers, less compute).
        max_length: context length for left truncation (default: as HFLM resolves it).
        max_tokens: cap on padded tokens per scoring forward (default: the scorer's).
        score_chunk: log-likelihood requests scored and cached per transaction (default: by device).
        progress: tqdm bars.
        shards: data-parallel place (torchrun): uncached requests are split across ranks, every rank
            gets every answer, only the writer stores them.

    ``requests`` and ``cached_requests`` count what was asked and what the cache answered.
    """

    def __init__(
        self,
        view: TextView,
        cache: RequestCache | None = None,
        *,
        batch_size: int | str = "auto",
        prefix_reuse: bool = True,
        max_length: int | None = None,
        max_tokens: int | None = None,
        score_chunk: int | None = None,
        progress: bool = True,
        shards: Shards | None = None,
    ) -> None:
        super().__init__()
        self.shards = shards or Shards()
        self.view = view
        self.tokenizer = view.tokenizer
        self.cache = cache
        self.progress = progress
        self.max_length = max_length or resolve_max_length(view.model.config, view.tokenizer)
        self.scorer = FastScorer(
            view.model, self.max_length, batch_size=batch_size, prefix_reuse=prefix_reuse, max_tokens=max_tokens,
            progress=progress,
        )
        self.batch_size = batch_size
        self.score_chunk = score_chunk or default_score_chunk(next(view.model.parameters()).device)
        self.requests = 0
        self.cached_requests = 0
        bos = self.tokenizer.bos_token_id
        self.prefix_token_id: int = bos if bos is not None else self.tokenizer.eos_token_id
        self._bos_text = self.tokenizer.decode(self.prefix_token_id)

    # ---------------------------------------------------------------- tokenization (as HFLM)
    def _encode(self, strings: Sequence[str]) -> dict[str, list[int]]:
        """Each distinct string encoded once, in batches; special tokens added unless the string
        already starts with the BOS text (HFLM's rule)."""
        distinct = list(dict.fromkeys(strings))
        out: dict[str, list[int]] = {}
        for add in (True, False):
            chosen = [s for s in distinct if s.startswith(self._bos_text) != add]
            for start in range(0, len(chosen), 1024):
                chunk = chosen[start : start + 1024]
                ids = self.tokenizer(chunk, add_special_tokens=add)["input_ids"]
                out.update(zip(chunk, ids, strict=True))
        return out

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Token ids of ``(context, continuation)`` pairs, split as HFLM splits them."""
        moved = []
        for context, continuation in pairs:
            n = len(context) - len(context.rstrip())
            moved.append((context[:-n], context[-n:] + continuation) if n else (context, continuation))
        whole = self._encode([c + d for (c, d), (o, _) in zip(moved, pairs, strict=True) if o])
        heads = self._encode([c for (c, _), (o, _) in zip(moved, pairs, strict=True) if o])
        result = []
        for (context, continuation), (orig_ctx, _) in zip(moved, pairs, strict=True):
            if orig_ctx == "":
                cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
                if cont and cont[0] == self.prefix_token_id:
                    result.append((cont[:1], cont[1:]))
                else:
                    result.append(([self.prefix_token_id], cont))
                continue
            head = heads[context]
            result.append((head, whole[context + continuation][len(head) :]))
        return result

    # ---------------------------------------------------------------- the cache
    def _through_cache(self, kind: str, args: list[tuple], compute: Callable[[list[tuple]], list[Any]],
                       commit: int = COMMIT_REQUESTS) -> list[Any]:
        """Answer ``args`` from the cache where possible, compute the rest (``commit`` requests per rank
        at a time), store them."""
        self.requests += len(args)
        fingerprint = self.view.fingerprint
        self.shards.barrier()  # every rank sees the same cache state, so all agree on what is left
        keys = [request_key([kind, self.max_length, *a]) for a in args]
        found = self.cache.get_many(fingerprint, keys) if self.cache is not None else {}
        self.cached_requests += sum(k in found for k in keys)
        todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.values())
        # ranks get whole contexts, so a question's options are scored together (one forward)
        by_context: dict[Any, list[int]] = {}
        for i in todo:
            by_context.setdefault(args[i][0], []).append(i)
        # stored chunk by chunk: a killed run keeps every finished chunk, and a rerun's chunks line
        # up with the first attempt's, so resumed numbers are bit-identical to uninterrupted ones
        for units in _chunks(list(by_context.values()), commit * self.shards.world_size):
            answered = self.shards.map(units, lambda part: _split(compute([args[i] for u in part for i in u]), part))
            fresh = {keys[i]: v for unit, values in zip(units, answered, strict=True) for i, v in zip(unit, values, strict=True)}
            if self.cache is not None and self.shards.is_writer:
                self.cache.put_many(fingerprint, fresh.items())
            found.update(fresh)
        return [found[k] for k in keys]

    # ---------------------------------------------------------------- the LM contract
    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), is_greedy)`` per request."""

        def compute(args: list[tuple]) -> list[list]:
            return [list(v) for v in self.scorer.score(self.encode_pairs(args))]

        values = self._through_cache("loglikelihood", [tuple(r.args) for r in requests], compute, self.score_chunk)
        return [(float(v[0]), bool(v[1])) for v in values]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole strings, in HFLM's disjoint rolling windows (BOS/EOS first)."""

        def compute(args: list[tuple]) -> list[float]:
            encoded = self._encode([s for (s,) in args])
            windows, owner = [], []
            for i, (string,) in enumerate(args):
                tokens = encoded[string]
                for window in get_rolling_token_windows(tokens, self.prefix_token_id, self.max_length, 1):
                    windows.append(make_disjoint_window(window))
                    owner.append(i)
            totals = [0.0] * len(args)
            for i, (logprob, _) in zip(owner, self.scorer.score(windows), strict=True):
                totals[i] += logprob
            return totals

        return [float(v) for v in self._through_cache("loglikelihood_rolling", [tuple(r.args) for r in requests], compute)]

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first stop string (``until``)."""

        def compute(args: list[tuple]) -> list[str]:
            return [self._generate_one(context, dict(kwargs)) for context, kwargs in tqdm(args, disable=not self.progress)]

        args = [(r.args[0], _jsonable(r.args[1])) for r in requests]
        return list(self._through_cache("generate_until", args, compute))

    def _generate_one(self, context: str, kwargs: dict[str, Any]) -> str:
        until = kwargs.pop("until", None) or [self.tokenizer.decode(self.view.model.config.eos_token_id or 0)]
        until = [until] if isinstance(until, str) else list(until)
        budget = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKENS))
        ids = self._encode([context])[context][-(self.max_length - budget) :]
        model = self.view.model
        with torch.inference_mode(), nan_guard(model):
            out = model.generate(
                torch.tensor([ids], device=model.device), max_new_tokens=budget, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        text = self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
        for stop in until:
            if stop and stop in text:
                text = text.split(stop, 1)[0]
        return text


def _chunks(units: list[list[int]], size: int) -> list[list[list[int]]]:
    """Consecutive runs of whole units holding about ``size`` requests each."""
    out: list[list[list[int]]] = [[]]
    held = 0
    for unit in units:
        if held >= size:
            out.append([])
            held = 0
        out[-1].append(unit)
        held += len(unit)
    return out if out[0] else []


def _split(values: list[Any], units: list[list[int]]) -> list[list[Any]]:
    """``values`` (flat, in ``units`` order) cut back into one list per unit."""
    out, at = [], 0
    for unit in units:
        out.append(values[at : at + len(unit)])
        at += len(unit)
    return out


def _jsonable(kwargs: Any) -> Any:
    """Generation kwargs as a JSON-stable mapping (cache key and argument)."""
    if isinstance(kwargs, dict):
        return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in sorted(kwargs.items())}
    return kwargs
