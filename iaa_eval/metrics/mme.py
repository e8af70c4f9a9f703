"""MME scoring with the rules of the MME authors' ``eval_tool/calculation.py``.

* The response is lower-cased; exactly ``yes`` / ``no`` is taken as is, otherwise its first four
  characters decide: containing ``yes`` -> yes, else containing ``no`` -> no, else *other*
  (always wrong). So "Yes, there is" is yes, "Not really" is no, "There is no dog" is other.
* Per subtask: ``acc`` = fraction of questions right; ``acc_plus`` = fraction of images whose
  questions (two per image) are all right; ``score`` = 100 * (acc + acc_plus), at most 200.
* ``perception`` = sum of the 10 perception subtask scores (max 2000), ``cognition`` = sum of the
  4 cognition ones (max 800).

The official tool pairs consecutive lines of each subtask file; here the questions of an image
are grouped by (subtask, image), which is the same on every well-formed MME file (the MME task
refuses an image that is not asked exactly two questions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
    "artwork", "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION


def parse_yes_no(response: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"`` by the official rule (see the module docstring)."""
    text = response.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def is_correct(answer: str, response: str) -> bool:
    """Whether the response's parsed yes/no equals the ground truth (any case)."""
    return parse_yes_no(response) == answer.strip().lower()


def score(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Score MME predictions.

    Args:
        rows: dicts with ``subtask``, ``image``, ``question``, ``answer`` (ground truth, yes/no in
            any case) and ``prediction`` (the model's raw text).

    Returns:
        ``{subtask: {"acc", "acc_plus", "score"}, ..., "perception": float, "cognition": float}``
        where acc and acc_plus are fractions and score is on the 0-200 scale. Subtasks absent from
        ``rows`` are absent from the result and add 0 to their total.

    Raises:
        ValueError: an unknown subtask or a ground truth that is not yes/no.
    """
    per_image: dict[str, dict[str, list[bool]]] = {}
    for row in rows:
        subtask = str(row["subtask"])
        if subtask not in SUBTASKS:
            raise ValueError(f"unknown MME subtask {subtask!r}; expected one of "
                             f"{', '.join(SUBTASKS)}")
        answer = str(row["answer"]).strip().lower()
        if answer not in ("yes", "no"):
            raise ValueError(f"MME ground truth must be yes or no, got {row['answer']!r} "
                             f"({subtask}/{row['image']})")
        images = per_image.setdefault(subtask, {})
        images.setdefault(str(row["image"]), []).append(is_correct(answer, str(row["prediction"])))
    result: dict[str, Any] = {}
    for subtask in SUBTASKS:
        if subtask not in per_image:
            continue
        images = per_image[subtask]
        flags = [ok for oks in images.values() for ok in oks]
        acc = sum(flags) / len(flags)
        acc_plus = sum(all(oks) for oks in images.values()) / len(images)
        result[subtask] = {"acc": acc, "acc_plus": acc_plus, "score": 100 * acc + 100 * acc_plus}
    result["perception"] = sum(result[s]["score"] for s in PERCEPTION if s in result)
    result["cognition"] = sum(result[s]["score"] for s in COGNITION if s in result)
    return result
