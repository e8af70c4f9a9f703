"""Line cuts give the ids of whole-string tokenization, on fresh random text (seed logged), for
several locally built tokenizers; pipelines outside the shown-exact set fall back."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers as tok_trainers
from transformers import PreTrainedTokenizerFast

from iaa_eval.models.base import TextView
from iaa_eval.tasks.line_tokens import _KNOWN_SPLITS, LineEncoder
from iaa_eval.tasks.lm_bridge import TextViewLM
from tests.tasks.text_helpers import tiny_model

LLAMA3, QWEN2 = sorted(_KNOWN_SPLITS, key=lambda p: "{1,3}" not in p)
# pieces of random text: letters (ASCII, accented, CJK, Greek), digits, contractions, punctuation,
# whitespace of every kind the regexes and str.isspace disagree on, special-token text
PIECES = [
    "a", "b", "the", "The", "word", "é", "ß", "中文", "Ω", "x\u0301", "🙂", "0", "12", "2026", "3.5",
    "'s", "'ll", "'RE", "'", "?", "!", ".", ",", "(", ")", ":", "-", "--", "A.", "Answer:",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", "\n\t", "\u00a0", "\u2028",
    "\u3000", "\x1c", "\x0b", "\x85", "\u200b", "\u180e", "\ufeff", "<s>", "</s>", "<", "</", "s>",
]


@pytest.fixture
def seed() -> int:
    value = random.randrange(1 << 30)
    logging.getLogger(__name__).warning("seed=%d", value)  # shown on failure, to reproduce it
    return value


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(n + 1)))


def _prompts(rng: random.Random) -> list[tuple[str, str]]:
    """Few-shot-like contexts (shared blocks, random questions, trailing whitespace sometimes)
    with several continuations each, plus free random pairs."""
    blocks = [_text(rng, 40) + "\n\n" for _ in range(3)]
    pairs = []
    for _ in range(12):
        context = rng.choice(blocks) + rng.choice(blocks) + _text(rng, 30) + rng.choice(
            ["", "\nAnswer:", "\nAnswer: ", "\n", " "])
        pairs += [(context, rng.choice([" A", " B", "\n", "  yes", _text(rng, 8)]))
                  for _ in range(rng.randrange(1, 5))]
    pairs += [(_text(rng, 30), _text(rng, 10) or "x") for _ in range(20)]
    pairs += [("", _text(rng, 10) or "y"), (" \n ", "z"), ("<s>" + _text(rng, 20), " A")]
    # a special token begun at the context's last cut and finished by the continuation
    pairs += [(_text(rng, 20) + " \n</", "s>" + _text(rng, 5)), (_text(rng, 20) + "a \n<", "s>")]
    return pairs


def _byte_level_regex() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False)


def _split(pattern: str) -> Callable[[], pre_tokenizers.PreTokenizer]:
    return lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _build(rng: random.Random, model: str, pre: Callable[[], object], normalizer: object = None,
           bos: bool = True, extra: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A tokenizer trained on random text of the test's alphabet (merges across whitespace,
    newlines and digits included)."""
    specials = ["<s>", "</s>", "<pad>", "[UNK]", *(extra or [])]
    if model == "bpe":
        tok = Tokenizer(models.BPE())
        trainer = tok_trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = tok_trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    tok.pre_tokenizer = pre()
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_text(rng, 60) for _ in range(400)], trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="[UNK]",
                                   additional_special_tokens=extra or [])


EXACT = {
    "gpt2-byte-level": dict(model="bpe", pre=_byte_level_regex),
    "gpt2-no-bos": dict(model="bpe", pre=_byte_level_regex, bos=False),
    "llama3-split": dict(model="bpe", pre=_split(LLAMA3)),
    "qwen2-split": dict(model="bpe", pre=_split(QWEN2)),
    "wordpiece-bert-split": dict(model="wordpiece", pre=pre_tokenizers.BertPreTokenizer),
}
FALLBACK = {
    "metaspace": dict(model="bpe", pre=lambda: pre_tokenizers.Metaspace(prepend_scheme="first")),
    "llama2-normalizer": dict(model="bpe", pre=lambda: pre_tokenizers.Metaspace(split=False),
                              normalizer=normalizers.Sequence([normalizers.Prepend("▁"),
                                                               normalizers.Replace(" ", "▁")])),
    "wordpiece-bert-normalizer": dict(model="wordpiece", pre=pre_tokenizers.BertPreTokenizer,
                                      normalizer=normalizers.BertNormalizer()),
    "unknown-regex": dict(model="bpe", pre=_split(r"\S+|\s+")),
    "newline-special": dict(model="bpe", pre=_byte_level_regex, extra=["<|eot|>\n"]),
}


def _lm(tokenizer: PreTrainedTokenizerFast, lines: bool) -> TextViewLM:
    model, _ = tiny_model(0, max_positions=64)
    lm = TextViewLM(TextView(model, tokenizer, "fp"), progress=False)
    if not lines:
        lm._lines = None  # the whole-string path (itself tested against HFLM)
    return lm


@pytest.mark.parametrize("name", sorted(EXACT))
def test_line_cuts_give_whole_string_ids(name: str, seed: int) -> None:
    rng = random.Random(seed)
    tokenizer = _build(rng, **EXACT[name])
    ours, plain = _lm(tokenizer, lines=True), _lm(tokenizer, lines=False)
    assert ours._lines is not None
    for _ in range(5):
        pairs = _prompts(rng)
        assert ours.encode_pairs(pairs) == plain.encode_pairs(pairs)
        texts = [c + d for c, d in pairs]
        assert ours._lines.encode_all(texts) == tokenizer(texts, add_special_tokens=False)["input_ids"]
        assert ours._encode(texts) == plain._encode(texts)


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_other_pipelines_tokenize_whole_strings(name: str, seed: int) -> None:
    rng = random.Random(seed)
    tokenizer = _build(rng, **FALLBACK[name])
    assert LineEncoder.for_tokenizer(tokenizer) is None
    pairs = _prompts(rng)
    assert _lm(tokenizer, lines=True).encode_pairs(pairs) == _lm(tokenizer, lines=False).encode_pairs(pairs)


def test_split_cuts_after_newlines_before_non_whitespace_nor_added_tokens(seed: int) -> None:
    rng = random.Random(seed)
    tokenizer = _build(rng, **EXACT["gpt2-byte-level"])
    encoder = LineEncoder.for_tokenizer(tokenizer)
    added = tuple(t.content for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values())
    assert encoder is not None and "</s>" in added
    for _ in range(200):
        text = _text(rng, 40)
        pieces = encoder.split(text)
        assert "".join(pieces) == text
        for left, right in zip(pieces, pieces[1:], strict=False):
            assert left.endswith("\n") and not right[0].isspace() and not right.startswith(added)
        for piece in pieces:
            assert not any(a == "\n" and not b.isspace() and not piece.startswith(added, i + 1)
                           for i, (a, b) in enumerate(zip(piece, piece[1:], strict=False)))
