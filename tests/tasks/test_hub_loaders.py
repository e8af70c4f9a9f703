"""The hub paths of MMBench and VQAv2 (``datasets.load_dataset`` stubbed with tables in the hub's
column layout, as no hub can be reached here): the right dataset, config and split are asked
for, and rows flow through the same validation and scoring as the original file layouts."""

from __future__ import annotations

import random
from typing import Any

import datasets
import pytest
from PIL import Image

from iaa_eval.errors import DataError
from iaa_eval.tasks.mmbench import MMBENCH_CN, MMBENCH_EN
from iaa_eval.tasks.vqav2 import VQAV2
from tests.tasks.conftest import Recorder, fake_context


def _picture(rng: random.Random) -> Image.Image:
    return Image.new("RGB", (8, 8), tuple(rng.randrange(256) for _ in range(3)))


def _stub(monkeypatch: pytest.MonkeyPatch, table: datasets.Dataset) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or table)
    return calls


def _mmbench_table(rng: random.Random, rows: int) -> tuple[datasets.Dataset, dict[str, str]]:
    """``lmms-lab/MMBench`` dev columns; one row per question (the rotations are generated)."""
    columns: dict[str, list[Any]] = {k: [] for k in ("index", "question", "hint", "A", "B", "C", "D", "answer",
                                                     "category", "l2-category", "image")}
    truth = {}
    for i in range(rows):
        options = [f"thing {rng.randrange(10**6)}" for _ in range(4)]
        letter = rng.choice("ABCD")
        for key, value in zip("ABCD", options, strict=True):
            columns[key].append(value)
        columns["index"].append(i)
        columns["question"].append(f"Which thing is shown in picture {i}?")
        columns["hint"].append("nan" if i % 2 else "A hint.")
        columns["answer"].append(letter)
        columns["category"].append("object_localization")
        columns["l2-category"].append("fine-grained perception")
        columns["image"].append(_picture(rng))
        truth[columns["question"][-1]] = options["ABCD".index(letter)]
    features = datasets.Features({**{k: datasets.Value("string") for k in columns if k not in ("index", "image")},
                                  "index": datasets.Value("int64"), "image": datasets.Image()})
    return datasets.Dataset.from_dict(columns, features=features), truth


@pytest.mark.parametrize("task, config", [(MMBENCH_EN, "en"), (MMBENCH_CN, "cn")])
def test_mmbench_hub_rows_are_rotated_and_scored(monkeypatch: pytest.MonkeyPatch, task: Any, config: str) -> None:
    rng = random.Random()
    table, truth = _mmbench_table(rng, 3)
    calls = _stub(monkeypatch, table)

    def oracle(request: Any) -> str:
        """The letter under which the true option sits in this rotation."""
        question = next(q for q in truth if q in request.prompt)
        line = next(line for line in request.prompt.splitlines() if line.endswith(truth[question]))
        return line[0]

    result = task.run(fake_context(Recorder(oracle), None))
    assert calls == [(("lmms-lab/MMBench", config), {"split": "dev"})]
    assert result.n == 12 and result.metrics == {"circular_acc": 1.0, "vanilla_acc": 1.0}
    wrong = task.run(fake_context(Recorder(lambda r: "A"), None))
    assert wrong.metrics["circular_acc"] == 0.0  # always "A" never survives the rotations


def test_vqav2_hub_rows_follow_the_vqa_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random()
    humans = [["yes"] * 10, ["yes"] * 2 + ["no"] * 8, ["red"] * 3 + ["blue"] * 7]
    table = datasets.Dataset.from_dict(
        {"question_id": [11, 12, 13], "question": ["Is it red?", "Is it big?", "What colour?"],
         "answers": [[{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(h)]
                     for h in humans],
         "multiple_choice_answer": ["yes", "no", "blue"], "answer_type": ["yes/no", "yes/no", "other"],
         "image": [_picture(rng) for _ in humans]},
        features=datasets.Features({
            "question_id": datasets.Value("int64"), "question": datasets.Value("string"),
            "answers": [{"answer": datasets.Value("string"), "answer_confidence": datasets.Value("string"),
                         "answer_id": datasets.Value("int64")}],
            "multiple_choice_answer": datasets.Value("string"), "answer_type": datasets.Value("string"),
            "image": datasets.Image()}),
    )
    calls = _stub(monkeypatch, table)
    result = VQAV2.run(fake_context(Recorder(lambda r: "Yes"), None))
    assert calls == [(("lmms-lab/VQAv2", None), {"split": "validation"})]
    # min(#matching humans / 3, 1) averaged over the 10 leave-one-out subsets of 9 humans: "yes" with
    # 10 agreeing -> 1; with 2 agreeing -> (2 x 1/3 + 8 x 2/3) / 10 = 0.6; the colour question -> 0
    assert result.metrics["accuracy"] == pytest.approx((1 + 0.6 + 0) / 3, abs=0.01)
    assert result.groups["yes/no"]["accuracy"] == pytest.approx(0.8, abs=0.01)


def test_hub_failure_names_the_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_: Any, **__: Any) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"hub dataset lmms-lab/VQAv2, split 'validation': cannot load .* --data-dir"):
        VQAV2.run(fake_context(Recorder(lambda r: "yes"), None))
