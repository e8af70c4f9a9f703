"""MMBench: answer extraction, rotations and circular accuracy, incl. the real legacy dev TSV."""

from __future__ import annotations

import csv

import pytest

from iaa_eval.metrics import mmbench
from tests.conftest import shared_path

OPTS = {"A": "cat", "B": "dog", "C": "a black cat", "D": "bird"}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"), ("B.", "B"), ("(B)", "B"), ("The answer is B", "B"), ("Answer: B) dog", "B"),
        ("答案是B", "B"), ("答案：C。", "C"), ("b", "B"), ("B. It is not A", "B"),
        ("dog", "B"), ("It is a bird.", "D"),
        ("a black cat", "C"),  # "cat" is part of the matching "a black cat": only C counts
        ("A or B", None), ("I cannot tell", None), ("", None), ("E", None),
        ("BIRD", "D"),  # no standalone letter (it is inside a word), then the option text
    ],
)
def test_extract_choice(response: str, expected: str | None) -> None:
    assert mmbench.extract_choice(response, OPTS) == expected


def test_extract_choice_only_knows_given_letters() -> None:
    assert mmbench.extract_choice("C", {"A": "x", "B": "y"}) is None


def test_rotations_by_hand() -> None:
    rots = mmbench.rotations(["x", "y", "z", "w"], "C")
    assert rots[0] == (["x", "y", "z", "w"], "C")
    assert rots[1] == (["w", "x", "y", "z"], "D")
    assert rots[2] == (["z", "w", "x", "y"], "A")
    assert rots[3] == (["y", "z", "w", "x"], "B")
    assert mmbench.rotations(["x", "y", "none of these options"], "C") == [
        (["x", "y", "none of these options"], "C"), (["y", "x", "none of these options"], "C")]
    assert len(mmbench.rotations(["x", "y", "All above are not right"], "A", pin_last=False)) == 3
    with pytest.raises(ValueError, match="not one of the 2 option letters"):
        mmbench.rotations(["x", "y"], "C")


def test_circular_accuracy_by_hand() -> None:
    records = [
        # question 7: both passes right
        {"index": 7, "answer": "A", "prediction": "A", "category": "ocr", "l2_category": "p"},
        {"index": 1_000_007, "answer": "B", "prediction": "B"},
        # question 9: first pass right, second wrong -> vanilla right, circular wrong
        {"index": 9, "answer": "C", "prediction": "C", "category": "ocr", "l2_category": "p"},
        {"index": 1_000_009, "answer": "D", "prediction": "A"},
        {"index": 2_000_009, "answer": "A", "prediction": "A"},
        # question 11: unparsable answer
        {"index": 11, "answer": "A", "prediction": None, "category": "count", "l2_category": "p"},
        {"index": 1_000_011, "answer": "B", "prediction": "B"},
    ]
    out = mmbench.circular_accuracy(records)
    assert out["n"] == 3
    assert out["circular_acc"] == pytest.approx(1 / 3)
    assert out["vanilla_acc"] == pytest.approx(2 / 3)
    assert out["categories"]["ocr"] == {"circular_acc": 0.5, "vanilla_acc": 1.0, "n": 2}
    assert out["categories"]["count"]["circular_acc"] == 0.0
    assert out["l2_categories"]["p"]["n"] == 3


def test_circular_accuracy_needs_rotation_zero() -> None:
    with pytest.raises(ValueError, match=r"questions \[5\] have rotated copies"):
        mmbench.circular_accuracy([{"index": 1_000_005, "answer": "A", "prediction": "A"}])


def test_legacy_tsv_rotation_bookkeeping() -> None:
    path = shared_path("data", "mmbench", "mmbench_dev_en_legacy_noimages.tsv")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 4377
    groups: dict[int, dict[int, dict[str, str]]] = {}
    for row in rows:
        index = int(row["index"])
        groups.setdefault(mmbench.question_id(index), {})[index // mmbench.COPY_STRIDE] = row
    assert len(groups) == 1176
    assert sum(len(g) for g in groups.values()) - len(groups) == 3201
    mismatched = []
    for qid, copies in groups.items():
        base = copies[0]
        options = [base[c] for c in "ABCD" if base[c]]
        expected = mmbench.rotations(options, base["answer"])
        got = [([copies[k][c] for c in "ABCD" if copies[k][c]], copies[k]["answer"]) for k in sorted(copies)]
        if got != expected:
            mismatched.append(qid)
    # 1123 questions rotate all N options, 51 keep an "all / none of these" last option in place;
    # questions 34 and 51 keep a plain caption last, which no rule on the text can tell (a data quirk).
    assert mismatched == [34, 51]
    assert sum(mmbench.pins_last([r[c] for c in "ABCD" if r[c]]) for r in rows if int(r["index"]) < 1e6) == 51
    # a perfect predictor scores 1, one that always says "A" scores far less in circular mode
    perfect = [{"index": int(r["index"]), "answer": r["answer"], "prediction": r["answer"]} for r in rows]
    assert mmbench.circular_accuracy(perfect)["circular_acc"] == 1.0
    always_a = [{"index": int(r["index"]), "answer": r["answer"], "prediction": "A"} for r in rows]
    out = mmbench.circular_accuracy(always_a)
    assert out["circular_acc"] == 0.0 and out["vanilla_acc"] > 0.2
