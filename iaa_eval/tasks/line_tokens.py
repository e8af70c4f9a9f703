"""Exact tokenization of many prompts that share lines, one distinct line block at a time.

5-shot prompts repeat their few-shot block in every question of a subject, and ``HFLM``'s split of
``context + continuation`` encodes each prompt whole, four times more with its answers: on MMLU
most of the host time before the first forward. This module encodes each distinct *segment* once
and concatenates, which gives the same ids as encoding the whole string, for the tokenizers where
that can be shown.

**Cut points.** A string is cut at every ``q`` where ``s[q - 1] == "\\n"`` and ``s[q]`` is not
whitespace (``str.isspace``, a superset of the regex engines' ``\\s``). For the pipelines accepted
by :meth:`LineEncoder.for_tokenizer` (no normalizer; a pre-tokenizer from ``_WHITESPACE_SPLITS``,
GPT-2's byte-level regex or a Split by a regex in ``_KNOWN_SPLITS``, then byte-level mapping; a
model that encodes each pre-token alone; added tokens without ``"\\n"`` in them, without
``lstrip``, none starting with the sentinel ``"x"``) such a cut is a pre-token boundary, and:

- no pre-token spans it: ``"\\n"`` is in no letter, digit or punctuation run, and whitespace runs
  stop at the non-whitespace ``s[q]``; no added token spans it either (none contains ``"\\n"``, none
  strips whitespace to its left), and none starts at it (no cut is made there: the added token's
  match would end the text left of it, whose last split decisions would see no ``s[q]``);
- left of it, every split decision reads ``s[q]`` at most, and only to ask whether it is whitespace
  (greedy runs stop at ``"\\n"`` or at ``s[q]``; ``(?!\\S)`` looks one character ahead), so the
  pre-tokens left of ``q`` are those of ``s[:q] + "x"`` left of ``q``;
- right of it, a regex without look-behind or anchors scanning from ``q`` sees only ``s[q:]``.

Hence ``ids(s) = ids(s[:q] + "x")[:-len(ids("x"))] + ids(s[q:])`` (all without special tokens),
applied at every cut. Special tokens the post-processor adds are a fixed head and tail (probed).
Text appended later (a continuation) keeps every cut but perhaps the last, where it could finish
an added token begun there (:meth:`LineEncoder.settled`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

# the regex of GPT-2's byte-level pre-tokenizer (``ByteLevel(use_regex=True)``) and regexes of
# ``Split`` pre-tokenizers for which the argument in the module docstring was checked by hand:
# Llama-3 / cl100k (digits in threes) and Qwen2 (single digits)
_KNOWN_SPLITS = frozenset({
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+",
})
# pre-tokenizers that split at every whitespace character and drop it (no look-ahead at all)
_WHITESPACE_SPLITS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
_PER_PIECE_MODELS = frozenset({"BPE", "WordPiece", "WordLevel", "Unigram"})
_FIXED_SPECIALS = frozenset({"TemplateProcessing", "ByteLevel", "RobertaProcessing",
                             "BertProcessing"})
_CUT = re.compile(r"\n(?=\S)")  # ``\S``: not ``str.isspace``
_SENTINEL = "x"


def _byte_level(step: dict, use_regex: bool) -> bool:
    return (step.get("type") == "ByteLevel" and bool(step.get("use_regex", True)) == use_regex
            and not step.get("add_prefix_space", False))


def _pre_tokenizer_ok(pre: dict | None) -> bool:
    """GPT-2's byte-level regex, a known Split regex then byte-level mapping, or whitespace."""
    if pre is None:
        return False
    if _byte_level(pre, use_regex=True) or pre.get("type") in _WHITESPACE_SPLITS:
        return True
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return False
    split, mapping = steps
    pattern = (split.get("pattern") or {}).get("Regex")
    return (split.get("type") == "Split" and split.get("behavior") == "Isolated"
            and not split.get("invert") and pattern in _KNOWN_SPLITS
            and _byte_level(mapping, use_regex=False))


def _post_processor_ok(post: dict | None) -> bool:
    if post is None:
        return True
    if post.get("type") == "Sequence":
        return all(_post_processor_ok(p) for p in post.get("processors", []))
    return post.get("type") in _FIXED_SPECIALS


def _unsupported(backend: Any) -> str | None:
    """Why the cut rule is not shown exact for this backend tokenizer (``None``: it is)."""
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    if spec.get("normalizer") is not None:
        return "a normalizer"
    if not _pre_tokenizer_ok(spec.get("pre_tokenizer")):
        return f"pre-tokenizer {spec.get('pre_tokenizer')}"
    if model.get("type") not in _PER_PIECE_MODELS or model.get("dropout"):
        return f"model {model.get('type')} (dropout {model.get('dropout')})"
    if not _post_processor_ok(spec.get("post_processor")):
        return f"post-processor {(spec.get('post_processor') or {}).get('type')}"
    for token in backend.get_added_tokens_decoder().values():
        if "\n" in token.content or token.lstrip or token.content.startswith(_SENTINEL):
            return f"added token {token.content!r}"
    if spec.get("truncation") or spec.get("padding"):
        return "truncation or padding set on the backend"
    return None


class LineEncoder:
    """Token ids of strings, exactly as ``tokenizer(strings)`` gives them, each distinct segment
    encoded once (see the module docstring for when and why this is exact).

    Build with :meth:`for_tokenizer`. :meth:`split` cuts a string into segments; :meth:`encode`
    encodes distinct segments (without special tokens), ``inner`` ones (a cut follows them) and
    ``final`` ones (the string ends); :meth:`join` puts a string's ids together from them.
    ``specials`` is the post-processor's fixed head and tail of special ids.
    """

    def __init__(self, tokenizer: Any, head: list[int], tail: list[int]) -> None:
        self.tokenizer = tokenizer
        self.specials = (head, tail)
        self._added = tuple(t.content for t in tokenizer.backend_tokenizer
                            .get_added_tokens_decoder().values())
        self._begun = frozenset(t[:i] for t in self._added for i in range(1, len(t)))
        self._sentinel_len = len(self._ids([_SENTINEL])[0])

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> LineEncoder | None:
        """An encoder for ``tokenizer``, or ``None`` (logged at debug level) where the cut rule is
        not shown exact for its pipeline."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        reason = "no fast tokenizer" if backend is None else _unsupported(backend)
        if reason is None:
            first, second = (_specials(tokenizer, probe) for probe in ("a", "b\nc d"))
            if first is None or first != second:
                reason = "special tokens that depend on the text"
            else:
                return cls(tokenizer, *first)
        log.debug("tokenizing whole prompts: line cuts not shown exact (%s)", reason)
        return None

    def split(self, text: str) -> list[str]:
        """``text`` cut after every newline that a non-whitespace character follows, except
        where an added token follows (its match would end the text left of it there)."""
        pieces, start = [], 0
        for match in _CUT.finditer(text):
            if self._added and text.startswith(self._added, match.end()):
                continue
            pieces.append(text[start : match.end()])
            start = match.end()
        pieces.append(text[start:])
        return pieces

    def settled(self, pieces: Sequence[str]) -> int:
        """How many of a text's leading segments stay cut whatever is appended to the text: all
        cuts but the last (an added token starting earlier would contain its ``"\\n"``), and the
        last unless the text after it begins an added token that appended text could finish."""
        return max(0, len(pieces) - 1 - (pieces[-1] in self._begun))

    def encode(self, inner: Iterable[str],
               final: Iterable[str]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Ids of each distinct segment, in one batch: an inner one encoded with the sentinel after
        it (whose ids are then dropped), a final one as it is."""
        inner, final = list(dict.fromkeys(inner)), list(dict.fromkeys(final))
        ids = self._ids([s + _SENTINEL for s in inner] + final)
        cut = self._sentinel_len
        return ({s: i[:-cut] for s, i in zip(inner, ids[: len(inner)], strict=True)},
                dict(zip(final, ids[len(inner) :], strict=True)))

    @staticmethod
    def join(pieces: Sequence[str], inner: dict[str, list[int]],
             final: dict[str, list[int]]) -> list[int]:
        """Ids of ``"".join(pieces)`` (no special tokens) from :meth:`encode`'s segments."""
        tokens: list[int] = []
        for piece in pieces[:-1]:
            tokens += inner[piece]
        return tokens + final[pieces[-1]]

    def encode_all(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids (no special tokens) of each text."""
        pieces = [self.split(t) for t in texts]
        inner, final = self.encode((s for p in pieces for s in p[:-1]), (p[-1] for p in pieces))
        return [self.join(p, inner, final) for p in pieces]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """``tokenizer(texts, add_special_tokens=False)["input_ids"]``; straight from the backend
        when the wrapper would set nothing on it first (its per-encoding conversion to Python
        cost a fifth of the MMLU bench's tokenization)."""
        backend = self.tokenizer.backend_tokenizer
        split_specials = bool(getattr(self.tokenizer, "split_special_tokens", False))
        if (backend.truncation is None and backend.padding is None
                and backend.encode_special_tokens == split_specials):
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _specials(tokenizer: Any, probe: str) -> tuple[list[int], list[int]] | None:
    """The special ids the tokenizer adds before and after ``probe``'s own (``None``: not so)."""
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return None
