"""Our ``lm_eval.api.model.LM`` over any :class:`~iaa_eval.models.base.TextView`.

lm-eval's tasks (prompts, few-shot sampling, metrics) run unchanged on our models; the model work
goes through :class:`~iaa_eval.models.loglik.scorer.FastScorer`, behind the task's request path
(:class:`~iaa_eval.runner.requests.RequestPath`: cache, ranks, commits). The
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
from iaa_eval.runner.requests import RequestPath
from iaa_eval.tasks.line_tokens import LineEncoder

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from iaa_eval.models.base import TextView

log = logging.getLogger(__name__)
DEFAULT_MAX_GEN_TOKENS = 256
COMMIT_REQUESTS = 256  # requests per cache transaction (per rank): what a crash can cost at most
# ... except log-likelihoods on an accelerator: a chunk is also what the scorer packs into forwards,
# and 256 requests (~64 MMLU questions, 2 subjects) made 110 small forwards of the 5-shot bench on
# an H100 instead of ~24 full ones (a chunk of this size is ~15 s of an 8B model on MMLU). On a CPU
# a forward is compute-bound at any size, so packing across chunks buys nothing there and the small
# chunks keep what an interrupted run loses small.
SCORE_COMMIT_REQUESTS = 8192


def default_score_chunk(device: torch.device) -> int:
    """Log-likelihood requests per cache transaction: big on accelerators, small on CPU."""
    return COMMIT_REQUESTS if device.type == "cpu" else SCORE_COMMIT_REQUESTS


class TextViewLM(LM):
    """lm-eval model over a text view, asking it through a request path (the cache first).

    Args:
        view: tokenizer + causal LM + fingerprint.
        request_path: the task's request path (default: uncached, this process alone): cached
            requests are answered from the run's cache, the rest split across ranks (torchrun),
            every rank gets every answer and only the writer stores them.
        batch_size: ``"auto"`` or rows per batch.
        prefix_reuse: reuse shared prompt prefixes (identical numbers, less compute).
        max_length: context length for left truncation (default: as HFLM resolves it).
        max_tokens: cap on padded tokens per scoring forward (default: the scorer's).
        score_chunk: log-likelihood requests scored and cached per transaction (default: by device).
        progress: tqdm bars.

    ``requests`` and ``cached_requests`` count what was asked and what the cache answered.
    """

    def __init__(
        self,
        view: TextView,
        request_path: RequestPath | None = None,
        *,
        batch_size: int | str = "auto",
        prefix_reuse: bool = True,
        max_length: int | None = None,
        max_tokens: int | None = None,
        score_chunk: int | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.path = request_path or RequestPath()
        self.view = view
        self.tokenizer = view.tokenizer
        self.progress = progress
        self.max_length = max_length or resolve_max_length(view.model.config, view.tokenizer)
        self.scorer = FastScorer(
            view.model, self.max_length, batch_size=batch_size, prefix_reuse=prefix_reuse,
            max_tokens=max_tokens, progress=progress,
        )
        self.batch_size = batch_size
        self.score_chunk = score_chunk or default_score_chunk(next(view.model.parameters()).device)
        bos = self.tokenizer.bos_token_id
        self.prefix_token_id: int = bos if bos is not None else self.tokenizer.eos_token_id
        self._bos_text = self.tokenizer.decode(self.prefix_token_id)
        self._lines = LineEncoder.for_tokenizer(self.tokenizer)

    # ---------------------------------------------------------------- tokenization (as HFLM)
    def _encode(self, strings: Sequence[str]) -> dict[str, list[int]]:
        """Each distinct string encoded once; special tokens added unless the string already
        starts with the BOS text (HFLM's rule)."""
        distinct = list(dict.fromkeys(strings))
        if self._lines is not None:
            bare = self._lines.encode_all(distinct)
            return {s: self._special(s, ids) for s, ids in zip(distinct, bare, strict=True)}
        out: dict[str, list[int]] = {}
        for add in (True, False):
            chosen = [s for s in distinct if s.startswith(self._bos_text) != add]
            for start in range(0, len(chosen), 1024):
                chunk = chosen[start : start + 1024]
                ids = self.tokenizer(chunk, add_special_tokens=add)["input_ids"]
                out.update(zip(chunk, ids, strict=True))
        return out

    def _special(self, text: str, ids: list[int]) -> list[int]:
        """``ids`` (``text`` encoded without special tokens) as HFLM encodes ``text``."""
        head, tail = self._specials(text)
        return head + ids + tail if head or tail else ids

    def _specials(self, text: str, more: str = "") -> tuple[list[int], list[int]]:
        """The special ids HFLM's encoding of ``text + more`` has around the text's own (line
        cuts); ``text + more`` is built only when ``text`` is shorter than the BOS text."""
        whole = text if len(text) >= len(self._bos_text) else text + more
        if self._lines is None or whole.startswith(self._bos_text):
            return [], []
        return self._lines.specials

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Token ids of ``(context, continuation)`` pairs, split as HFLM splits them: the context
        encoded alone, the continuation as what follows it in ``context + continuation`` encoded
        whole. With line cuts (:mod:`~iaa_eval.tasks.line_tokens`) a whole is the context's
        segments but the last, then its last segment with the continuation: only that is new."""
        moved = []
        for context, continuation in pairs:
            n = len(context) - len(context.rstrip())
            moved.append((context[:-n], context[-n:] + continuation) if n
                         else (context, continuation))
        kept = [m for m, (o, _) in zip(moved, pairs, strict=True) if o]
        if self._lines is None:
            heads = self._encode([c for c, _ in kept])
            whole = self._encode([c + d for c, d in kept])
            conts = {(c, d): whole[c + d][len(heads[c]) :] for c, d in dict.fromkeys(kept)}
        else:
            heads, conts = self._pairs_by_lines(self._lines, list(dict.fromkeys(kept)))
        result = []
        for (context, continuation), (orig_ctx, _) in zip(moved, pairs, strict=True):
            if orig_ctx == "":
                cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
                if cont and cont[0] == self.prefix_token_id:
                    result.append((cont[:1], cont[1:]))
                else:
                    result.append(([self.prefix_token_id], cont))
                continue
            result.append((heads[context], conts[context, continuation]))
        return result

    def _pairs_by_lines(self, lines: LineEncoder, pairs: list[tuple[str, str]],
                        ) -> tuple[dict[str, list[int]], dict[tuple[str, str], list[int]]]:
        """Heads and continuations by line cuts: a whole ``context + continuation`` is the
        context's settled segments (:meth:`LineEncoder.settled`: usually all but the last), then
        the rest of the context with the continuation; only that is new text, and the shared part
        is never copied."""
        split = {c: lines.split(c) for c in dict.fromkeys(c for c, _ in pairs)}
        settled = {c: lines.settled(p) for c, p in split.items()}
        rest = {c: "".join(p[settled[c] :]) for c, p in split.items()}
        inner, final = lines.encode((s for p in split.values() for s in p[:-1]),
                                    [*(p[-1] for p in split.values()),
                                     *(rest[c] + d for c, d in pairs)])
        heads, shared = {}, {}
        for context, pieces in split.items():
            head, tail = self._specials(context)
            bare = lines.join(pieces, inner, final)
            heads[context] = head + bare + tail if head or tail else bare
            shared[context] = sum(len(inner[s]) for s in pieces[: settled[context]])
        conts = {}
        for context, continuation in pairs:
            last = final[rest[context] + continuation]
            head, tail = self._specials(context, continuation)
            # the whole is head + (the context's settled ids) + last + tail; its head is the
            # context's (a text starting with the BOS text starts every longer one)
            start = len(heads[context]) - len(head) - shared[context]
            conts[context, continuation] = (last + tail)[start:]
        return heads, conts

    # ---------------------------------------------------------------- the request path
    @property
    def requests(self) -> int:
        """Requests asked."""
        return self.path.asked

    @property
    def cached_requests(self) -> int:
        """Requests the cache answered."""
        return self.path.cached

    def _ask(self, kind: str, args: list[tuple], compute: Callable[[list[tuple]], list[Any]],
                       commit: int = COMMIT_REQUESTS) -> list[Any]:
        """``compute`` over ``args`` down the request path, ``commit`` requests per rank at a
        time; one context's options go to one rank together (one forward), a repeat once."""
        keys = [request_key([kind, self.max_length, *a]) for a in args]
        fingerprint = self.view.fingerprint
        return self.path.answer(fingerprint, keys, args, compute, commit=commit,
                                unit=lambda a: a[0])

    # ---------------------------------------------------------------- the LM contract
    def loglikelihood(self, requests: list[Instance],
                      disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), is_greedy)`` per request."""

        def compute(args: list[tuple]) -> list[list]:
            return [list(v) for v in self.scorer.score(self.encode_pairs(args))]

        args = [tuple(r.args) for r in requests]
        values = self._ask("loglikelihood", args, compute, self.score_chunk)
        return [(float(v[0]), bool(v[1])) for v in values]

    def loglikelihood_rolling(self, requests: list[Instance],
                              disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole strings, in HFLM's disjoint rolling windows (BOS/EOS first)."""

        def compute(args: list[tuple]) -> list[float]:
            encoded = self._encode([s for (s,) in args])
            windows, owner = [], []
            for i, (string,) in enumerate(args):
                tokens = encoded[string]
                for window in get_rolling_token_windows(tokens, self.prefix_token_id,
                                                        self.max_length, 1):
                    windows.append(make_disjoint_window(window))
                    owner.append(i)
            totals = [0.0] * len(args)
            for i, (logprob, _) in zip(owner, self.scorer.score(windows), strict=True):
                totals[i] += logprob
            return totals

        args = [tuple(r.args) for r in requests]
        return [float(v) for v in self._ask("loglikelihood_rolling", args, compute)]

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first stop string (``until``)."""

        def compute(args: list[tuple]) -> list[str]:
            return [self._generate_one(context, dict(kwargs))
                    for context, kwargs in tqdm(args, disable=not self.progress)]

        args = [(r.args[0], _jsonable(r.args[1])) for r in requests]
        return list(self._ask("generate_until", args, compute))

    def _generate_one(self, context: str, kwargs: dict[str, Any]) -> str:
        until = kwargs.pop("until", None) or [
            self.tokenizer.decode(self.view.model.config.eos_token_id or 0)]
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


def _jsonable(kwargs: Any) -> Any:
    """Generation kwargs as a JSON-stable mapping (cache key and argument)."""
    if isinstance(kwargs, dict):
        return {str(k): (list(v) if isinstance(v, tuple) else v) for k, v in sorted(kwargs.items())}
    return kwargs
