"""mini-world multimodal data: easy-vqa labels, the VQAv2 / MME / MMBench layouts, disjoint images."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random

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



@pytest.fixture(scope="module")
def stage2():
    return mmdata.training_examples(0)["stage2"]


def _named(question: str) -> list[str]:
    """The words a MME-style question asks about: "Is there a red shape in the image? ..." -> [red, shape]."""
    return question.removeprefix("Is there a ").removesuffix(" in the image? " + mmdata.YES_NO).split()


@pytest.mark.parametrize("kind", mmdata.YES_NO_KINDS)
def test_a_yes_no_pair_is_one_true_one_false_question_in_mme_wording(kind):
    rng = random.Random(0)
    for record in mmdata.load_split("train")[:300]:
        (true_q, yes), (false_q, no) = mmdata.yes_no_pair(record, rng, kind)
        assert (yes, no) == ("yes", "no")
        named, wrong = _named(true_q), _named(false_q)
        assert named == {"existence": [record.shape], "color": [record.colour, "shape"],
                         "both": [record.colour, record.shape]}[kind]
        changed = [(a, b) for a, b in zip(named, wrong, strict=True) if a != b]
        assert len(changed) == 1
        assert all((a in mmdata.COLOURS) == (b in mmdata.COLOURS) for a, b in changed)


def test_mme_worded_training_questions_are_balanced_and_on_training_images(stage2):
    records = mmdata.load_split("train")
    asked = [ex for ex in stage2 if ex.prompt.endswith(" " + mmdata.YES_NO)]
    assert len(asked) == 2 * len(mmdata.YES_NO_KINDS) * mmdata.Mix().yes_no_pairs * len(records)
    by_kind: dict[str, list[str]] = {}
    for ex in asked:
        words = _named(ex.prompt)
        kind = "existence" if len(words) == 1 else "color" if words[1] == "shape" else "both"
        by_kind.setdefault(kind, []).append(ex.answer)
    assert set(by_kind) == set(mmdata.YES_NO_KINDS)
    assert all(answers.count("yes") == answers.count("no") for answers in by_kind.values())
    train_paths = {r.path for r in records}
    test_paths = {r.path for recs in mmdata.eval_images(0).values() for r in recs}
    assert {ex.image for ex in stage2} <= train_paths and not train_paths & test_paths


def test_easy_vqa_yes_no_questions_keep_the_vqa_instruction_by_default(stage2):
    own = {q for r in mmdata.load_split("train") for q, _ in r.questions}
    for ex in stage2:
        question = ex.prompt.split("\n")[0].removesuffix(" " + mmdata.YES_NO)
        if question in own and ex.answer in ("yes", "no") and not question.startswith("Is there a "):
            assert ex.prompt.endswith(mmdata.SHORT_ANSWER)


def test_mc_orders_put_the_right_answer_under_every_letter():
    record = mmdata.load_split("train")[0]
    items = mmdata.mc_items(record, random.Random(0), orders=4)
    assert len(items) == 12
    for k in range(0, 12, 4):
        assert sorted(letter for _, letter in items[k : k + 4]) == list("ABCD")
        assert len({prompt.splitlines()[0] for prompt, _ in items[k : k + 4]}) == 1
        assert len({prompt for prompt, _ in items[k : k + 4]}) == 4


def test_stage2_size_follows_the_mix():
    records = mmdata.load_split("train")
    questions = sum(len(r.questions) for r in records)
    for mix in (mmdata.Mix(), mmdata.Mix(yes_no_suffix=0.5, yes_no_pairs=0, mc_orders=1)):
        n = len(mmdata.training_examples(0, mix)["stage2"])
        assert n == questions + len(records) * (2 * len(mmdata.YES_NO_KINDS) * mix.yes_no_pairs + 3 * mix.mc_orders)
