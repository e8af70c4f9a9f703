"""VQAv2 task: the official JSON pair with COCO-named images, an ``image`` field, validation, llava end to end."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from iaa_eval.errors import DataError
from iaa_eval.tasks.vqav2 import VQAV2, make_prompt
from tests.conftest import shared_path
from tests.tasks.conftest import Recorder, copy_tree, fake_context, write_vqav2


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vqav2(tmp_path_factory.mktemp("vqav2"))


def _questions(root: Path) -> tuple[Path, dict]:
    path = root / "v2_OpenEnded_mscoco_val2014_questions.json"
    return path, json.loads(path.read_text())


def test_prompt() -> None:
    assert make_prompt("What colour? ") == "What colour?\nAnswer the question using a single word or phrase."


def test_scores_processed_answers(vqa_dir: Path) -> None:
    _, data = _questions(vqa_dir)
    ann = json.loads((vqa_dir / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    right = {make_prompt(q["question"]): a["multiple_choice_answer"] for q, a in zip(data["questions"], ann, strict=True)}
    # the model says "The <answer>." capitalised: the EvalAI processing makes it match
    model = Recorder(lambda r: f"The {right[r.prompt].capitalize()}.")
    result = VQAV2.run(fake_context(model, vqa_dir))
    assert result.n == 4 and result.primary == "accuracy"
    assert result.metrics["accuracy"] == pytest.approx(1.0)
    assert sum(g["n"] for g in result.groups.values()) == 4
    assert result.samples[0].extra["processed"] == right[result.samples[0].prompt]
    # one annotator in ten said "no": 9 of the 10 leave-one-out subsets hold it once -> 0.9 * 1/3
    result = VQAV2.run(fake_context(Recorder(lambda r: "no"), vqa_dir))
    assert all(s.score == pytest.approx(0.3) or s.score == 1.0 for s in result.samples)


def test_image_field_and_path_escape(vqa_dir: Path, tmp_path: Path) -> None:
    root = copy_tree(vqa_dir, tmp_path / "v")
    path, data = _questions(root)
    first = next(root.glob("val2014/*.jpg"))
    data["questions"][0]["image"] = f"val2014/{first.name}"
    path.write_text(json.dumps(data))
    assert VQAV2.run(fake_context(Recorder(lambda r: "x"), root)).n == 4
    data["questions"][0]["image"] = "../../etc/passwd"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"question 0 \(question_id \d+\): image path '../../etc/passwd' leaves"):
        VQAV2.run(fake_context(Recorder(lambda r: "x"), root))


def test_bad_rows(vqa_dir: Path, tmp_path: Path) -> None:
    root = copy_tree(vqa_dir, tmp_path / "v")
    path, data = _questions(root)
    data["questions"].append(dict(data["questions"][0]))  # duplicated question_id
    data["questions"].append({"image_id": 1, "question": "Orphan?", "question_id": 5})  # no annotation
    path.write_text(json.dumps(data))
    (root / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    result = VQAV2.run(fake_context(Recorder(lambda r: "x"), root, on_error="skip"))
    reasons = "\n".join(result.skip_reasons)
    assert result.skipped == 3 and result.n == 3, reasons
    assert "duplicated question_id" in reasons and "row without answer (no annotation" in reasons
    assert "not found" in reasons
    with pytest.raises(DataError, match="not found"):
        VQAV2.run(fake_context(Recorder(lambda r: "x"), root))


def test_several_splits_need_a_choice(vqa_dir: Path, tmp_path: Path) -> None:
    root = copy_tree(vqa_dir, tmp_path / "v")
    for name in ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"):
        (root / name.replace("val2014", "test2015")).write_text((root / name).read_text())
    with pytest.raises(DataError, match="set extra.split to choose"):
        VQAV2.run(fake_context(Recorder(lambda r: "x"), root))
    assert VQAV2.run(fake_context(Recorder(lambda r: "x"), root, extra={"split": "val2014"})).n == 4


def test_real_annotations_with_an_image_mapping(tmp_path: Path) -> None:
    """The shared real VQAv2 JSON (gz, no images): questions get an ``image`` field to a local picture."""
    questions = json.loads(gzip.decompress(shared_path("data", "vqav2", "vqa_questions_valid.json.gz").read_bytes()))
    annotations = shared_path("data", "vqav2", "vqa_annotatons_valid.json.gz")
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    questions["questions"] = [{**q, "image": "red.png"} for q in questions["questions"][:20]]
    (tmp_path / "q_questions.json.gz").write_bytes(gzip.compress(json.dumps(questions).encode()))
    (tmp_path / "q_annotations.json.gz").write_bytes(annotations.read_bytes())
    result = VQAV2.run(fake_context(Recorder(lambda r: "yes"), tmp_path))
    assert result.n == 20 and set(result.groups) <= {"yes/no", "number", "other"}
    assert 0 < result.groups["yes/no"]["accuracy"] < 1 and result.metrics["accuracy"] > 0


def test_end_to_end_on_tiny_llava_and_blind(tiny_llava, vqa_dir: Path) -> None:
    result = VQAV2.run(fake_context(tiny_llava.generate, vqa_dir))
    assert set(result.metrics) == {"accuracy"} and result.n == 4 and not result.blind
    blind = VQAV2.run(fake_context(tiny_llava.generate, vqa_dir, blind=True))
    assert blind.blind and blind.n == 4



QFILE, AFILE = "v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"


def _break(root: Path, change: Any) -> Path:
    """``change(questions, annotations)`` applied to the JSON pair under ``root``."""
    qpath, apath = root / QFILE, root / AFILE
    questions, annotations = json.loads(qpath.read_text()), json.loads(apath.read_text())
    change(questions, annotations)
    qpath.write_text(json.dumps(questions))
    apath.write_text(json.dumps(annotations))
    return root


def _set(part: str, key: str, value: Any) -> Any:
    """A change setting (or, for ``_DROP``, deleting) field ``key`` of the second question
    (``part`` "q") or annotation ("a")."""
    def change(q: dict, a: dict) -> None:
        record = (q["questions"] if part == "q" else a["annotations"])[1]
        if value is _DROP:
            del record[key]
        else:
            record[key] = value
    return change


_DROP = object()
ANN = r"annotations\.json annotation 1 \(question_id \d+\): "
QUE = r"questions\.json question 1 \(question_id \d+\): "
RECORD = r"answers\[0\] must be a record with a text 'answer', got "
IMAGE_ID = r"field 'image_id' must be an integer \(it names the COCO image file\), got "
BAD_SHAPES = [
    (_set("a", "answers", "gray"),
     ANN + r"field 'answers' must be a non-empty list of \{'answer': text\} records, "
     "got str 'gray'"),
    (_set("a", "answers", []), ANN + "field 'answers' must be a non-empty list"),
    (_set("a", "answers", ["gray"] * 10), ANN + RECORD + "str 'gray'"),
    (_set("a", "answers", [{"answer": 2}] * 10), ANN + RECORD + "dict"),
    (_set("a", "answers", [{"answer": " "}] + [{"answer": ""}] * 9),
     ANN + "every one of the 10 answers is empty"),
    (_set("q", "question", _DROP),
     QUE + r"field 'question' missing or not text \(got NoneType None\)"),
    (_set("q", "question", 7), QUE + r"field 'question' missing or not text \(got int 7\)"),
    (_set("q", "image_id", "1"), QUE + IMAGE_ID + "str '1'"),
    (_set("q", "image_id", True), QUE + IMAGE_ID + "bool True"),
    (_set("q", "image_id", 1.5), QUE + IMAGE_ID + "float 1.5"),
    (lambda q, a: a["annotations"].__setitem__(1, "x"),
     r"annotations\.json annotation 1: expected a JSON object, got str 'x'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SHAPES)
def test_malformed_records_are_named_or_skipped(vqa_dir: Path, tmp_path: Path, change: Any,
                                                message: str) -> None:
    root = _break(copy_tree(vqa_dir, tmp_path / "v"), change)
    with pytest.raises(DataError, match=message):
        VQAV2.run(fake_context(Recorder(lambda r: "x"), root))
    result = VQAV2.run(fake_context(Recorder(lambda r: "x"), root, on_error="skip"))
    assert result.skipped >= 1 and result.n == 3 and re.search(message, result.skip_reasons[0])


@pytest.mark.parametrize(("name", "key"), [(AFILE, "annotations"), (QFILE, "questions")])
def test_a_bare_list_file_is_refused(vqa_dir: Path, tmp_path: Path, name: str, key: str) -> None:
    root = copy_tree(vqa_dir, tmp_path / "v")
    path = root / name
    path.write_text(json.dumps(json.loads(path.read_text())[key]))
    expected = rf"{name}: expected a JSON object with the '{key}' list \(the official VQA layout\), "
    with pytest.raises(DataError, match=expected + "got a JSON list"):
        VQAV2.run(fake_context(Recorder(lambda r: "x"), root, on_error="skip"))
