"""MME scoring: the calculation.py rules by hand, and LaVIN's published numbers from its predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from iaa_eval.metrics import mme
from tests.conftest import shared_path


@pytest.mark.parametrize(
    ("response", "parsed"),
    [
        ("Yes", "yes"), ("yes.", "yes"), ("No", "no"), ("no, there is none", "no"),
        ("Yes, there is a dog", "yes"), ("Not really", "no"), ("None", "no"),
        ("There is no dog", "other"),  # the verdict must be in the first four characters
        ("I don't know", "other"), ("", "other"), (" yes", "yes"), ("noyes", "no"),
    ],
)
def test_parse_yes_no(response: str, parsed: str) -> None:
    assert mme.parse_yes_no(response) == parsed


def test_score_by_hand() -> None:
    rows = [
        {"subtask": "existence", "image": "1.jpg", "question": "q", "answer": "Yes", "prediction": "Yes"},
        {"subtask": "existence", "image": "1.jpg", "question": "q", "answer": "No", "prediction": "No."},
        {"subtask": "existence", "image": "2.jpg", "question": "q", "answer": "Yes", "prediction": "yes"},
        {"subtask": "existence", "image": "2.jpg", "question": "q", "answer": "No", "prediction": "maybe"},
        {"subtask": "code_reasoning", "image": "c.png", "question": "q", "answer": "yes", "prediction": "no"},
        {"subtask": "code_reasoning", "image": "c.png", "question": "q", "answer": "no", "prediction": "no"},
    ]
    result = mme.score(rows)
    assert result["existence"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}
    assert result["code_reasoning"] == {"acc": 0.5, "acc_plus": 0.0, "score": 50.0}
    assert result["perception"] == 125.0 and result["cognition"] == 50.0
    assert "count" not in result


def test_score_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match="unknown MME subtask 'colour'"):
        mme.score([{"subtask": "colour", "image": "x", "question": "q", "answer": "yes", "prediction": "y"}])
    with pytest.raises(ValueError, match="must be yes or no"):
        mme.score([{"subtask": "color", "image": "x", "question": "q", "answer": "maybe", "prediction": "y"}])


def _lavin_rows(folder: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                image, question, answer, prediction = line.split("\t")
                rows.append({"subtask": path.stem, "image": image, "question": question,
                             "answer": answer, "prediction": prediction})
    return rows


def test_reproduces_lavin_published_result() -> None:
    rows = _lavin_rows(shared_path("data", "mme", "lavin_predictions"))
    assert len(rows) == 2374
    result = mme.score(rows)
    assert round(result["perception"], 2) == 963.61
    assert round(result["cognition"], 2) == 249.64
    assert round(result["existence"]["score"], 2) == 185.00
    assert round(result["count"]["score"], 2) == 88.33
    assert round(result["position"]["score"], 2) == 63.33
    assert set(result) == set(mme.SUBTASKS) | {"perception", "cognition"}
