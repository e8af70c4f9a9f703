"""VQA accuracy against hand-worked cases of the official vqaEval.py rules."""

from __future__ import annotations

import gzip
import json

import pytest

from iaa_eval.metrics import vqa
from tests.conftest import shared_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("two", "2"),  # number words become digits
        ("None", "0"),
        ("a dog", "dog"),  # articles go
        ("The Dog.", "dog"),  # lower-cased, final period dropped
        ("dont", "don't"),  # the contraction table adds the apostrophe
        ("don't", "don't"),
        ("Yes.", "yes"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # digit,digit: all punctuation deleted
        ("red,blue", "red blue"),  # otherwise punctuation not touching a space becomes a space
        ("red, blue", "red blue"),  # touching a space: deleted
        ("t-shirt", "t shirt"),
        ("black and white!", "black and white"),
        ("Id've", "id've"),  # capitalised table keys never match after lower-casing (quirk)
        ("somebody'd", "somebodyd"),  # a reversed entry of the official table (quirk)
        ("  yes\n", "yes"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert vqa.normalize(raw) == expected


def test_period_strip_is_capped_at_32_like_the_official_script() -> None:
    assert vqa.normalize("." * 40 + "x") == "." * 8 + "x"


def test_process_answer_is_evalai() -> None:
    assert vqa.process_answer("Yes, it is.") == "yes it is"
    assert vqa.process_answer("The man's hat?") == "man 's hat"
    assert vqa.process_answer("Two") == "2"


def test_accuracy_leave_one_out() -> None:
    # 10 humans agree: every subset of 9 has >= 3 matches
    assert vqa.accuracy("yes", ["yes"] * 10) == 1.0
    # 1 of 10: left-out subsets containing it give 1/3 (9 of 10), the one without it gives 0
    assert vqa.accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(9 / 10 * (1 / 3))
    # 2 of 10: 8 subsets see 2 matches (2/3), 2 subsets see 1 (1/3)
    assert vqa.accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)
    # 3 of 10: 7 subsets see 3 (1), 3 see 2 (2/3) -> 0.9
    assert vqa.accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    assert vqa.accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == 1.0
    assert vqa.accuracy("bird", ["cat"] * 10) == 0.0


def test_accuracy_prediction_normalised_humans_only_on_disagreement() -> None:
    assert vqa.accuracy("two", ["2"] * 10) == 1.0
    assert vqa.accuracy("a dog", ["dog"] * 10) == 1.0
    assert vqa.accuracy("Yes.", ["yes"] * 10) == 1.0
    assert vqa.accuracy("dont know", ["don't know"] * 10) == 1.0
    # humans agree: their text is used as is, so "t-shirt" never matches the normalised "t shirt"
    assert vqa.accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    # humans disagree: their punctuation is processed too, and now it matches
    assert vqa.accuracy("t-shirt", ["t-shirt"] * 9 + ["shirt"]) == 1.0


def test_accuracy_needs_answers() -> None:
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa.accuracy("x", [])


def test_real_annotations_closed_form() -> None:
    """On real VQAv2 annotations (stored already normalised), the most common answer scores
    (c * min(1, (c - 1) / 3) + (10 - c) * min(1, c / 3)) / 10 for c annotators agreeing."""
    path = shared_path("data", "vqav2", "vqa_annotatons_valid.json.gz")
    annotations = json.loads(gzip.decompress(path.read_bytes()))["annotations"][:500]
    clean = [a for a in annotations if all(vqa.normalize(x["answer"]) == x["answer"] for x in a["answers"])]
    assert len(clean) > 0.9 * len(annotations)
    for ann in clean:
        answers = [a["answer"] for a in ann["answers"]]
        assert len(answers) == 10
        top = max(sorted(set(answers)), key=answers.count)
        c = answers.count(top)
        expected = (c * min(1.0, (c - 1) / 3) + (10 - c) * min(1.0, c / 3)) / 10
        assert vqa.accuracy(top, answers) == pytest.approx(expected)
        assert vqa.accuracy(top.upper() + ".", answers) == pytest.approx(expected)
