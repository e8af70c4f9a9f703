"""Small multimodal fixtures written in the benchmarks' original layouts, and a fake TaskContext.

Images are easy-vqa's 64x64 shape pictures (a project dependency), so fixtures are real files
in real formats, written in milliseconds. Every writer is deterministic: prompt snapshots read them.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from iaa_eval.models.base import MMRequest
from iaa_eval.runner.requests import RequestPath
from iaa_eval.tasks import TaskContext, TaskOptions


def easy_images(n: int) -> list[Path]:
    """The first ``n`` easy-vqa training images (PNG, 64x64)."""
    from easy_vqa import get_train_image_paths

    paths = get_train_image_paths()  # indexed by image id
    return [Path(paths[i]) for i in range(n)]


def write_mme(root: Path) -> Path:
    """Three subtasks: ``existence`` and ``code_reasoning`` with ``<image>.txt`` beside the images,
    ``artwork`` with ``images/`` + ``questions_answers_YN/``. Two images each, two questions each."""
    pictures = easy_images(6)
    layout = {
        "existence": ("flat", ["Is there a circle in this image?", "Is there a dog in this image?"]),
        "artwork": ("yn", ["Is this artwork a painting?", "Is this artwork a sculpture?"]),
        "code_reasoning": ("flat", ["Does the code print 3?", "Does the code print 4?"]),
    }
    k = 0
    for subtask, (style, questions) in layout.items():
        image_dir = root / subtask / ("images" if style == "yn" else "")
        text_dir = root / subtask / ("questions_answers_YN" if style == "yn" else "")
        image_dir.mkdir(parents=True, exist_ok=True)
        text_dir.mkdir(parents=True, exist_ok=True)
        for j in range(2):
            stem = f"{1000 + k}"
            Image.open(pictures[k]).convert("RGB").save(image_dir / f"{stem}.jpg")
            answers = ("Yes", "No") if j == 0 else ("No", "Yes")
            lines = [f"{q} Please answer yes or no.\t{a}" for q, a in zip(questions, answers, strict=True)]
            (text_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            k += 1
    return root


def b64_png(path: Path) -> str:
    """A picture as MMBench stores it: base64 of the encoded file."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


MMBENCH_ROWS = {
    "en": [
        ("What shape is in the image?", "", ["circle", "rectangle", "triangle", "None of these options"], "B",
         "shape_recognition", "coarse_perception"),
        ("What colour is the shape?", "The background is white.", ["red", "blue"], "A",
         "attribute_recognition", "fine-grained_perception"),
        ("How many shapes are there?", "", ["one", "two", "three"], "A", "count", "fine-grained_perception"),
    ],
    "cn": [
        ("图中是什么形状？", "", ["圆形", "矩形", "三角形", "以上都不是"], "B", "shape_recognition", "coarse_perception"),
        ("形状是什么颜色？", "背景是白色的。", ["红色", "蓝色"], "A", "attribute_recognition", "fine-grained_perception"),
        ("图中有几个形状？", "", ["一个", "两个", "三个"], "A", "count", "fine-grained_perception"),
    ],
}


def write_mmbench(path: Path, lang: str, copies: bool = False, extra_rows: Sequence[dict[str, str]] = ()) -> Path:
    """An MMBench dev TSV; with ``copies``, the first question's rotated copies follow the
    originals, naming the original's index as their image (as VLMEvalKit writes them)."""
    from iaa_eval.metrics.mmbench import rotations

    pictures = easy_images(3)
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
    rows = []
    for i, (question, hint, options, answer, cat, l2) in enumerate(MMBENCH_ROWS[lang]):
        padded = options + [""] * (4 - len(options))
        rows.append([str(i), question, hint, *padded, answer, cat, l2, b64_png(pictures[i])])
    if copies:
        question, hint, options, answer, cat, l2 = MMBENCH_ROWS[lang][0]
        for k, (opts, ans) in enumerate(rotations(options, answer)[1:], start=1):
            padded = opts + [""] * (4 - len(opts))
            rows.append([str(k * 1_000_000), question, hint, *padded, ans, cat, l2, "0"])
    rows += [[r.get(h, "") for h in header] for r in extra_rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerows([header, *rows])
    return path


def write_vqav2(root: Path, n: int = 4) -> Path:
    """The official JSON pair for ``val2014`` with COCO-named images under ``val2014/``."""
    from easy_vqa import get_train_questions

    texts, answers, image_ids = get_train_questions()
    picks: list[int] = []  # the first question of each of the first n images
    for i, image_id in enumerate(image_ids):
        if len(picks) < n and all(int(image_ids[j]) != int(image_id) for j in picks):
            picks.append(i)
    pictures = easy_images(max(int(image_ids[i]) for i in picks) + 1)
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for i in picks:
        image_id = int(image_ids[i])
        Image.open(pictures[image_id]).convert("RGB").save(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
        qid = image_id * 1000 + i
        questions.append({"image_id": image_id, "question": texts[i].capitalize(), "question_id": qid})
        human = [answers[i]] * 7 + ["two", "a dog", "no"]
        annotations.append({
            "question_id": qid, "image_id": image_id, "question_type": "what",
            "answer_type": "yes/no" if answers[i] in ("yes", "no") else "other",
            "multiple_choice_answer": answers[i],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(human)],
        })
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({"data_subtype": "val2014", "questions": questions}), encoding="utf-8")
    (root / "v2_mscoco_val2014_annotations.json").write_text(
        json.dumps({"data_subtype": "val2014", "annotations": annotations}), encoding="utf-8")
    return root


class Answering:
    """A stand-in model whose ``generate`` is the given function."""

    supports_images = True

    def __init__(self, answer: Callable[[Sequence[MMRequest]], list[str]]) -> None:
        self.generate = answer

    def fingerprint(self, workflow: str) -> str:
        return f"fake-{workflow}"


def fake_context(
    answer: Callable[[Sequence[MMRequest]], list[str]], data_dir: Path | None, blind: bool = False, **options: Any
) -> TaskContext:
    """A TaskContext over a model answering with the given function (no runner, no cache)."""
    model: Any = Answering(answer)
    options_ = TaskOptions(data_dir=data_dir, **options)
    return TaskContext(model=model, options=options_, request_path=RequestPath(), blind=blind)


class Recorder:
    """A stand-in model: answers with ``reply(request)`` and keeps every request it saw."""

    def __init__(self, reply: Callable[[MMRequest], str]) -> None:
        self.reply = reply
        self.requests: list[MMRequest] = []

    def __call__(self, requests: Sequence[MMRequest]) -> list[str]:
        self.requests += list(requests)
        return [self.reply(r) for r in requests]


@pytest.fixture(scope="session")
def tiny_llava(tiny_llava_dir: Path) -> Any:
    """The tiny llava-hf model loaded once for every task test (batch size 4)."""
    from iaa_eval.models import load_model
    from iaa_eval.models.base import ModelSpec

    return load_model(ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=4))


def copy_tree(src: Path, dst: Path) -> Path:
    """A writable copy of a fixture folder (tests that break files work on their own copy)."""
    shutil.copytree(src, dst)
    return dst


SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"


def check_snapshot(name: str, rendered: Any) -> None:
    """Compare ``rendered`` (JSON-able) with ``tests/snapshots/<name>.json``; with
    ``IAA_EVAL_UPDATE_SNAPSHOTS=1`` in the environment, rewrite the snapshot instead."""
    import os

    text = json.dumps(rendered, ensure_ascii=False, indent=1) + "\n"
    path = SNAPSHOTS / f"{name}.json"
    if os.environ.get("IAA_EVAL_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}; create it with IAA_EVAL_UPDATE_SNAPSHOTS=1 (tests/snapshots/README.md)"
    assert text == path.read_text(encoding="utf-8"), f"prompt drift: {path} (tests/snapshots/README.md)"
