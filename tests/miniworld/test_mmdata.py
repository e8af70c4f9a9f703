"""mini-world multimodal data: easy-vqa labels, the VQAv2 / MME / MMBench layouts, disjoint images."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json

import pytest

pytest.importorskip("easy_vqa")
from PIL import Image  # noqa: E402

from iaa_eval.miniworld import mmdata  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("mm")
    return out, mmdata.write_all(out, seed=0)


def _pixels(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def test_labels_agree_with_every_question():
    for record in mmdata.load_split("test")[:200]:
        for question, answer in record.questions:
            assert question[0].isupper()
            if question.startswith("What") and "color" in question:
                assert answer == record.colour
            elif question.startswith("What"):
                assert answer == record.shape


def test_training_comes_from_train_split_and_evaluation_from_test():
    train = mmdata.training_examples(0)
    assert {"stage1", "stage2"} == set(train) and len(train["stage2"]) > len(train["stage1"]) > 1000
    assert all("/train/" in str(ex.image) for stage in train.values() for ex in stage)
    images = mmdata.eval_images(0)
    ids = [{r.image_id for r in recs} for recs in images.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all("/test/" in str(r.path) for recs in images.values() for r in recs)


def test_no_evaluation_image_has_the_pixels_of_a_training_image():
    train = {_pixels(Image.open(r.path)) for r in mmdata.load_split("train")}
    evaluation = [r for recs in mmdata.eval_images(0).values() for r in recs]
    assert not {_pixels(Image.open(r.path)) for r in evaluation} & train


def test_training_is_deterministic():
    assert mmdata.training_examples(3) == mmdata.training_examples(3)
    assert mmdata.training_examples(3)["stage2"][:50] != mmdata.training_examples(4)["stage2"][:50]


def test_vqav2_layout(written):
    out, counts = written
    root = out / "vqav2"
    questions = json.loads((root / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    annotations = json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    assert len(questions) == len(annotations) == counts["vqav2"] >= 500
    by_id = {a["question_id"]: a for a in annotations}
    for q in questions:
        ann = by_id[q["question_id"]]
        assert ann["image_id"] == q["image_id"] and len(ann["answers"]) == 10
        assert ann["answer_type"] in ("yes/no", "other")
        assert (root / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg").exists()


def test_mme_layout_one_yes_one_no_per_image(written):
    out, counts = written
    for subtask in ("color", "existence"):
        texts = sorted((out / "mme" / subtask).glob("*.txt"))
        assert 2 * len(texts) == counts["mme"][subtask] >= 200
        for txt in texts:
            assert txt.with_suffix(".png").exists()
            lines = [line.split("\t") for line in txt.read_text().splitlines()]
            assert sorted(a for _, a in lines) == ["No", "Yes"]
            assert all(q.endswith(" Please answer yes or no.") for q, _ in lines)


def test_mmbench_layout_is_circular_friendly(written):
    out, counts = written
    with (out / "mmbench_en" / "mmbench_dev_en.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == counts["mmbench_en"] >= 200
    assert list(rows[0])[:8] == ["index", "question", "hint", "A", "B", "C", "D", "answer"]
    for row in rows:
        options = [row[k] for k in "ABCD"]
        assert len(set(options)) == 4 and row["answer"] in "ABCD"
        assert not any("above" in o or "all of" in o for o in options)
    image = Image.open(io.BytesIO(base64.b64decode(rows[0]["image"])))
    assert image.size == (64, 64)
