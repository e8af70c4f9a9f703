"""MMBench: answer-letter extraction without an LLM judge, option rotations and circular accuracy.

Circular evaluation (MMBench paper, VLMEvalKit): a question with N options is asked N times, the
options rotated by one place each time; it counts as right only if every pass picks the right
option. The published dev TSVs hold the rotated copies as rows with ``index + k * 1_000_000``
(copy k puts original option ``(i - k) mod N`` at letter i, keeping an "all / none of these" last
option in place); :func:`rotations` builds the same copies when a file lacks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

COPY_STRIDE = 1_000_000
LETTERS = "ABCDEFGHIJ"
_REFERS_TO_OTHERS = re.compile(r"(?i)\b(all|none|both)\b.*(above|these options|\bA\s*,\s*B\b)"
                               r"|以上|上述")
_PUNCT_OR_SPACE = " \t\n.,:;!?()[]{}*#'\"。，：；！？（）【】、"


def question_id(index: int) -> int:
    """The question a (possibly rotated) row belongs to: ``index mod 1e6``."""
    return int(index) % COPY_STRIDE


def pins_last(options: Sequence[str]) -> bool:
    """Whether the last option refers to the others ("All of these options are correct.", "None of
    these ...", "both A,B, and C", "All above are not right"; in Chinese "以上..."/"上述..."):
    the published EN copies keep it last (the Chinese pattern is our inference)."""
    return bool(options) and _REFERS_TO_OTHERS.search(str(options[-1])) is not None


def rotations(options: Sequence[str], answer: str,
              pin_last: bool | None = None) -> list[tuple[list[str], str]]:
    """The circular passes of a question as ``(options, answer letter)``, rotation 0 first.

    N options give N passes; when the last option is pinned (default: :func:`pins_last`), only the
    first N-1 rotate, giving N-1 passes, as in the published dev TSVs.

    >>> rotations(["x", "y", "z"], "A")[1]
    (['z', 'x', 'y'], 'B')
    """
    n = len(options)
    if answer not in LETTERS[:n]:
        raise ValueError(f"answer {answer!r} is not one of the {n} option letters")
    pin = pins_last(options) if pin_last is None else pin_last
    moving = n - 1 if pin and n > 2 else n
    original = LETTERS.index(answer)
    out = []
    for k in range(moving):
        rotated = [options[(i - k) % moving] for i in range(moving)] + list(options[moving:])
        letter = LETTERS[(original + k) % moving] if original < moving else answer
        out.append((rotated, letter))
    return out


def _standalone_letters(text: str, letters: Iterable[str]) -> list[str]:
    """Option letters written as a word of their own (not inside an ASCII word or number)."""
    found = []
    for letter in letters:
        if re.search(rf"(?<![A-Za-z0-9]){letter}(?![A-Za-z0-9])", text):
            found.append(letter)
    return found


def extract_choice(response: str, options: Mapping[str, str]) -> str | None:
    """The option letter a free-text answer picks, or ``None`` when it cannot be told.

    Rules, in order (no external LLM, after VLMEvalKit's ``can_infer``):
    1. exactly one option letter stands alone in the text ("B", "B.", "(B)", "The answer is B",
       "答案：B") -> that letter;
    2. several do, but the text starts with one and a delimiter ("B. Not A", "(B) ...") -> that one;
    3. a single lower-case letter alone ("b") -> that letter;
    4. exactly one option's text occurs in the answer (case-insensitive; an option whose text is
       part of another matching option's text does not count) -> that option.

    Args:
        response: the model's raw text.
        options: letter -> option text, e.g. ``{"A": "cat", "B": "dog"}``.

    >>> extract_choice("The answer is (B).", {"A": "cat", "B": "dog"})
    'B'
    """
    text = response.strip()
    if not text:
        return None
    letters = _standalone_letters(text, options)
    if len(letters) == 1:
        return letters[0]
    if len(letters) > 1:
        lead = re.match(r"^[(\[]?([A-J])[).:：．\]]", text)
        if lead and lead.group(1) in options:
            return lead.group(1)
        return None
    bare = text.strip(_PUNCT_OR_SPACE)
    if len(bare) == 1 and bare.upper() in options:
        return bare.upper()
    lowered = text.lower()
    hits = [k for k, v in options.items() if str(v).strip() and str(v).strip().lower() in lowered]
    hits = [k for k in hits
            if not any(k != o and options[k].strip().lower() in options[o].lower() for o in hits)]
    return hits[0] if len(hits) == 1 else None


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def circular_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Circular and vanilla accuracy, overall and per category / l2-category.

    Args:
        records: one per pass, with ``index`` (row index; rotated copies at ``index + k * 1e6``),
            ``answer`` (right letter), ``prediction`` (extracted letter or ``None``), and
            optionally ``category`` and ``l2_category`` (taken from rotation 0).

    Returns:
        ``{"circular_acc", "vanilla_acc", "n", "categories": {name: {...same keys}},
        "l2_categories": {...}}``; vanilla = rotation 0 only, fractions in [0, 1].
    """
    passes: dict[int, list[bool]] = {}
    first: dict[int, Mapping[str, Any]] = {}
    for rec in records:
        qid = question_id(rec["index"])
        passes.setdefault(qid, []).append(rec.get("prediction") == rec["answer"])
        if int(rec["index"]) < COPY_STRIDE:
            first[qid] = rec
    missing = sorted(set(passes) - set(first))
    if missing:
        raise ValueError(f"questions {missing[:5]} have rotated copies but no rotation-0 row "
                         "(index < 1e6)")

    def summary(qids: Sequence[int]) -> dict[str, float]:
        return {
            "circular_acc": _rate([all(passes[q]) for q in qids]),
            "vanilla_acc": _rate([first[q].get("prediction") == first[q]["answer"] for q in qids]),
            "n": len(qids),
        }

    out: dict[str, Any] = summary(sorted(passes))
    for key, field in (("categories", "category"), ("l2_categories", "l2_category")):
        groups: dict[str, list[int]] = {}
        for qid in sorted(passes):
            if first[qid].get(field) is not None:
                groups.setdefault(str(first[qid][field]), []).append(qid)
        out[key] = {name: summary(qids) for name, qids in sorted(groups.items())}
    return out
