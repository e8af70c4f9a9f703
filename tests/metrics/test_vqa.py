"""VQA accuracy against hand-worked cases of the official vqaEval.py rules."""

from __future__ import annotations

import gzip
import json
import logging
import random
import re

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


@pytest.mark.parametrize(
    ("prediction", "humans", "official"),
    [
        # the three cases of issue 14 (the official script gives 1.0 to each)
        ("two", ["two"] * 7 + ["two!", "...two", "(two,"], 1.0),
        ("DONT ", ["dont"] * 4 + ["no"] * 3 + ["do not"] * 3, 1.0),
        ("-yes", ["10"] * 6 + ["yes"] * 3 + ["yes-"], 1.0),
        # step 1, every text: \n and \t become spaces, then outer space goes ...
        ("\tyes\n", [" yes", "yes\t", "yes\n"] + ["yes"] * 7, 1.0),  # ... so these humans agree
        ("yes", ["yes no"] * 10, 0.0),  # inner space stays
        # humans agree: the stripped prediction is compared as it is, case and punctuation included
        ("Yes", ["yes"] * 10, 0.0),
        ("yes.", ["yes"] * 10, 0.0),
        ("two", ["2"] * 10, 0.0),
        ("a dog", ["dog"] * 10, 0.0),
        ("t-shirt", ["t-shirt"] * 10, 1.0),
        ("t shirt", ["t-shirt"] * 10, 0.0),
        # humans disagree: humans and prediction both get punctuation, then digits/articles
        ("two", ["2"] * 9 + ["3"], 1.0),
        ("Yes.", ["yes"] * 9 + ["no"], 1.0),
        ("dog", ["a dog"] * 3 + ["cat"] * 7, 0.9),  # the humans' article goes too
        ("2", ["Two"] * 3 + ["three"] * 7, 0.9),  # and their number words, lower-cased
        ("don't", ["dont"] * 9 + ["no"], 1.0),  # contraction table on the humans' side
        ("t shirt", ["t-shirt"] * 9 + ["shirt"], 1.0),
        ("red blue", ["red, blue"] * 3 + ["red"] * 7, 0.9),  # punctuation touching a space: deleted
        ("1000", ["1,000"] * 9 + ["1"], 1.0),  # digit,digit: every mark deleted
        ("3.5", ["3.5"] * 9 + ["3"], 1.0),  # a period before a digit stays
        ("3 5", ["3.5"] * 9 + ["3"], 0.0),
        ("somebodyd", ["somebody'd"] * 9 + ["x"], 1.0),  # the table's reversed entry
        ("none", ["0"] * 9 + ["1"], 1.0),  # "none" is the number 0
    ],
)
def test_accuracy_follows_the_official_paths(prediction: str, humans: list[str],
                                             official: float) -> None:
    assert vqa.accuracy(prediction, humans) == pytest.approx(official)
    assert vqa.accuracy(prediction, humans) == pytest.approx(official_accuracy(prediction, humans))


def test_accuracy_needs_answers() -> None:
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa.accuracy("x", [])


# --------------------------------------------- the official evaluate(), transcribed line by line
def _official_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in vqa.PUNCTUATION:
        digit_comma = re.search(r"(\d)(\,)(\d)", in_text) is not None
        if (p + " " in in_text or " " + p in in_text) or digit_comma:
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return re.compile(r"(?!<=\d)(\.)(?!\d)").sub("", out_text, re.UNICODE)  # count=32, as official


def _official_digit_article(in_text: str) -> str:
    manual_map = dict(vqa.NUMBER_WORDS)
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in ("a", "an", "the"):
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in vqa.CONTRACTIONS:
            out_text[word_id] = vqa.CONTRACTIONS[word]
    return " ".join(out_text)


def official_accuracy(prediction: str, humans: list[str]) -> float:
    """``VQAEval.evaluate`` for one question, on answer records with distinct ``answer_id``."""
    answers = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
               for i, a in enumerate(humans)]
    for ans_dic in answers:
        ans_dic["answer"] = ans_dic["answer"].replace("\n", " ")
        ans_dic["answer"] = ans_dic["answer"].replace("\t", " ")
        ans_dic["answer"] = ans_dic["answer"].strip()
    res_ans = prediction.replace("\n", " ").replace("\t", " ").strip()
    gt_acc = []
    gt_answers = [ans["answer"] for ans in answers]
    if len(set(gt_answers)) > 1:
        for ans_dic in answers:
            ans_dic["answer"] = _official_punctuation(ans_dic["answer"])
            ans_dic["answer"] = _official_digit_article(ans_dic["answer"])
        res_ans = _official_punctuation(res_ans)
        res_ans = _official_digit_article(res_ans)
    for gt_ans_datum in answers:
        other_gt_ans = [item for item in answers if item != gt_ans_datum]
        matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
        gt_acc.append(min(1, float(len(matching_ans)) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


_WORDS = ["two", "2", "Two", "yes", "no", "dont", "don't", "a", "the", "dog", "none", "0", "10", "3",
          "1", "t", "shirt", "somebody'd", "Im", "red", "blue", "5"]
_MARKS = [""] * 6 + list(";/[]\"{}()=+\\_-><@`,?!.:'*")
_SPACES = ["", "", "", " ", "  ", "\t", "\n", " \n"]


def _random_answer(rng: random.Random) -> str:
    words = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        word = rng.choice(_WORDS)
        word = word.upper() if rng.random() < 0.1 else word
        words.append(rng.choice(_MARKS) + word + rng.choice(_MARKS))
    glue = rng.choice([" ", " ", ",", ", ", "-", "."])
    return rng.choice(_SPACES) + glue.join(words) + rng.choice(_SPACES)


def test_accuracy_equals_the_official_transcription_on_random_answer_sets() -> None:
    seed = random.randrange(1 << 30)
    logging.getLogger(__name__).warning("seed=%d", seed)  # shown on failure, to reproduce it
    rng = random.Random(seed)
    for _ in range(3000):
        pool = [_random_answer(rng) for _ in range(rng.choice([1, 1, 2, 3, 5]))]
        humans = [rng.choice(pool) for _ in range(10)]
        prediction = rng.choice([*pool, _random_answer(rng)])
        expected = official_accuracy(prediction, humans)
        assert vqa.accuracy(prediction, humans) == expected, (seed, prediction, humans)


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
        # normalised only when the humans disagree: "YES." matches then, never against 10 "yes"
        shouted = vqa.accuracy(top.upper() + ".", answers)
        assert shouted == pytest.approx(expected if c < 10 else 0.0)
