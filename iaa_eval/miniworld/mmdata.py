"""Multimodal mini-world data from easy-vqa's real images and questions, in the real layouts.

easy-vqa (PyPI ``easy-vqa``) ships 64x64 images of one coloured shape, with templated questions.
Each image's shape and colour are recovered from its own questions and answers. The training
set (stage-1 captions, stage-2 Q/A in LLaVA-1.5's prompt conventions) comes from easy-vqa's
*train* split only; mini-VQAv2, mini-MME and mini-MMBench come from its *test* split, each from
its own images, so no image is shared between training and evaluation or between two tasks.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
# the fourth MMBench option: shapes easy-vqa never draws
EXTRA_SHAPES = ("star", "hexagon", "pentagon")
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."
YES_NO = "Please answer yes or no."
CAPTION_PROMPTS = (
    "Describe the image concisely.", "Give a brief description of the image.",
    "Provide a short caption for the picture.", "What is in the photo?",
    "Summarize the image in a few words.",
)
# Sizes of the evaluation sets (test-split images; each image in exactly one task).
N_VQA_IMAGES, N_MME_IMAGES, N_MMB_IMAGES = 300, 300, 280


@dataclass(frozen=True)
class ImageRecord:
    """One easy-vqa image, its recovered labels and its own questions."""

    image_id: int
    path: Path
    shape: str
    colour: str
    questions: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MMExample:
    """One training conversation turn: image, user prompt (no placeholder), answer."""

    image: Path
    prompt: str
    answer: str


def _labels(qas: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(shape, colour) implied by an image's questions, or None if they leave it open."""
    pos: set[str] = set()
    neg: set[str] = set()
    for question, answer in qas:
        words = re.findall(r"[a-z]+", question)
        named = {w for w in words if w in SHAPES or w in COLOURS}
        if answer in SHAPES or answer in COLOURS:
            pos |= named | {answer}
        else:
            truth = (answer == "yes") != ("not" in words or "no" in words)
            (pos if truth else neg).update(named)
    shape = [s for s in SHAPES if s in pos] or [s for s in SHAPES if s not in neg]
    colour = [c for c in COLOURS if c in pos] or [c for c in COLOURS if c not in neg]
    return (shape[0], colour[0]) if len(shape) == 1 and len(colour) == 1 else None


def load_split(split: str) -> list[ImageRecord]:
    """easy-vqa's ``train`` or ``test`` images whose shape and colour are determined, by id."""
    import easy_vqa

    if split == "train":
        texts, answers, ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        texts, answers, ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    qas: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for text, answer, image_id in zip(texts, answers, ids, strict=True):
        qas[image_id].append((text, answer))
    records = []
    for image_id in sorted(qas):
        labels = _labels(qas[image_id])
        if labels is not None:  # questions in sentence case, as VQAv2 and MME write them
            questions = tuple((q[:1].upper() + q[1:], a) for q, a in qas[image_id])
            records.append(ImageRecord(image_id, Path(paths[image_id]), *labels, questions))
    return records


def caption(record: ImageRecord) -> str:
    """The stage-1 caption: "A blue rectangle."."""
    return f"A {record.colour} {record.shape}."


def mc_prompt(question: str, options: tuple[str, ...], hint: str = "") -> str:
    """A multiple-choice prompt as LLaVA-1.5 evaluates MMBench (and trains on A-OKVQA)."""
    lines = [hint] if hint else []
    lines.append(question)
    lines += [f"{letter}. {option}" for letter, option in zip("ABCD", options, strict=False)]
    lines.append(LETTER_ANSWER)
    return "\n".join(lines)


def _mc_question(record: ImageRecord, rng: random.Random,
                 kind: str) -> tuple[str, tuple[str, ...], str]:
    """(question, four options, right option) about the colour, the shape, or both."""
    if kind == "colour":
        right, pool = record.colour, [c for c in COLOURS if c != record.colour]
        question = "What color is the shape in the image?"
    elif kind == "shape":
        right = record.shape
        pool = [s for s in SHAPES if s != right] + [rng.choice(EXTRA_SHAPES)]
        question = "Which shape is shown in the image?"
    else:
        right = f"a {record.colour} {record.shape}"
        pool = [f"a {c} {s}" for c in COLOURS for s in SHAPES if f"a {c} {s}" != right]
        question = "Which description matches the image?"
    options = [right, *rng.sample(pool, 3)]
    rng.shuffle(options)
    return question, tuple(options), right


@dataclass(frozen=True)
class Mix:
    """What stage 2 asks about each training image (a miniature of LLaVA-1.5's instruction mix).

    Args:
        yes_no_suffix: fraction of easy-vqa's own yes/no questions asked with MME's
            " Please answer yes or no." (the rest with VQAv2's short-answer instruction). Their
            answers are skewed (about 88% "no" for "Is there a <colour> shape?"): asked with MME's
            suffix, they taught the models to answer "no" to MME whatever the image, so by default
            they keep VQAv2's instruction and MME's wording comes from the balanced pairs only.
        yes_no_pairs: balanced pairs in MME's wording per image and kind, one true question and one
            false: existence ("Is there a <shape> in the image?"), colour ("Is there a <colour>
            shape in the image?") and both ("Is there a <colour> <shape> in the image?"), as
            POPE-style data pairs them (:func:`yes_no_pair`).
        mc_orders: option orders per multiple-choice question (colour, shape, both): 1 = one
            random order; 4 = the four rotations of one option set, the right answer once under
            every letter, so that no letter is a better guess than another.
    """

    yes_no_suffix: float = 0.0
    yes_no_pairs: int = 2
    mc_orders: int = 4


YES_NO_KINDS = ("existence", "color", "both")


def yes_no_pair(record: ImageRecord, rng: random.Random, kind: str) -> list[tuple[str, str]]:
    """One true and one false question about ``record`` in MME's wording, with its yes/no suffix."""
    wrong_colour = rng.choice([c for c in COLOURS if c != record.colour])
    wrong_shape = rng.choice([s for s in SHAPES if s != record.shape])
    if kind == "existence":
        true, false = record.shape, wrong_shape
    elif kind == "color":
        true, false = f"{record.colour} shape", f"{wrong_colour} shape"
    else:
        false = rng.choice([f"{wrong_colour} {record.shape}", f"{record.colour} {wrong_shape}"])
        true = f"{record.colour} {record.shape}"
    ask = "Is there a {} in the image? " + YES_NO
    return [(ask.format(true), "yes"), (ask.format(false), "no")]


def mc_items(record: ImageRecord, rng: random.Random, orders: int) -> list[tuple[str, str]]:
    """(prompt, letter) multiple-choice items about ``record``: each kind in ``orders`` orders
    (rotations of one option set when ``orders`` > 1)."""
    items = []
    for kind in ("colour", "shape", "both"):
        question, options, right = _mc_question(record, rng, kind)
        for k in range(orders):
            opts = options[k:] + options[:k] if orders > 1 else options
            items.append((mc_prompt(question, opts), "ABCD"[opts.index(right)]))
    return items


def training_examples(seed: int = 0, mix: Mix | None = None) -> dict[str, list[MMExample]]:
    """The multimodal training data, from easy-vqa's train split only.

    ``stage1``: one caption per image (LLaVA's brief-caption prompts). ``stage2``, per image:
    every easy-vqa question (open ones with LLaVA-1.5's short-answer suffix, yes/no ones as
    ``mix.yes_no_suffix`` says), ``mix.yes_no_pairs`` balanced yes/no pairs of each kind of
    :func:`yes_no_pair`, and multiple-choice questions (colour, shape, both) with the
    letter-answer suffix, as LLaVA-1.5's mix does with A-OKVQA (:func:`mc_items`).
    """
    mix = mix or Mix()
    rng = random.Random(seed)
    records = load_split("train")
    stage1 = [MMExample(r.path, rng.choice(CAPTION_PROMPTS), caption(r)) for r in records]
    stage2 = []
    for r in records:
        for q, a in r.questions:
            yes_no = a in ("yes", "no") and rng.random() < mix.yes_no_suffix
            prompt = f"{q} {YES_NO}" if yes_no else f"{q}\n{SHORT_ANSWER}"
            stage2.append(MMExample(r.path, prompt, a))
        for _ in range(mix.yes_no_pairs):
            for kind in YES_NO_KINDS:
                stage2 += [MMExample(r.path, q, a) for q, a in yes_no_pair(r, rng, kind)]
        stage2 += [MMExample(r.path, prompt, letter)
                   for prompt, letter in mc_items(r, rng, mix.mc_orders)]
    rng.shuffle(stage1)
    rng.shuffle(stage2)
    return {"stage1": stage1, "stage2": stage2}


def eval_images(seed: int = 0) -> dict[str, list[ImageRecord]]:
    """Disjoint test-split images for mini-VQAv2, mini-MME and mini-MMBench (seeded)."""
    records = load_split("test")
    random.Random(seed).shuffle(records)
    a, b = N_VQA_IMAGES, N_VQA_IMAGES + N_MME_IMAGES
    return {"vqav2": records[:a], "mme": records[a:b], "mmbench": records[b : b + N_MMB_IMAGES]}


def write_vqav2(records: list[ImageRecord], out_dir: Path, seed: int = 0) -> int:
    """mini-VQAv2 in the official layout: ``v2_OpenEnded_mscoco_val2014_questions.json``,
    ``v2_mscoco_val2014_annotations.json`` and ``val2014/COCO_val2014_<id:012d>.jpg``.
    Up to two questions per image (an open one and a yes/no one); easy-vqa has one answer per
    question, so the ten human answers agree."""
    from PIL import Image

    rng = random.Random(seed)
    (out_dir / "val2014").mkdir(parents=True, exist_ok=True)
    questions, annotations = [], []
    for r in records:
        image = out_dir / "val2014" / f"COCO_val2014_{r.image_id:012d}.jpg"
        Image.open(r.path).convert("RGB").save(image, quality=95)
        open_qs = [qa for qa in r.questions if qa[1] not in ("yes", "no")]
        yes_no = [qa for qa in r.questions if qa[1] in ("yes", "no")]
        picked = rng.sample(open_qs, min(1, len(open_qs))) + rng.sample(yes_no, min(1, len(yes_no)))
        for n, (question, answer) in enumerate(picked):
            qid = r.image_id * 10 + n
            questions.append({"image_id": r.image_id, "question": question, "question_id": qid})
            annotations.append({
                "question_id": qid, "image_id": r.image_id,
                "question_type": " ".join(question.split()[:3]),
                "answer_type": "yes/no" if answer in ("yes", "no") else "other",
                "multiple_choice_answer": answer,
                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1}
                            for k in range(10)],
            })
    header = {
        "info": {"description": "mini-VQAv2 (iaa-eval mini-world, from easy-vqa test images)"},
        "license": {"name": "MIT (easy-vqa)"}, "data_subtype": "val2014",
    }
    (out_dir / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(
        {**header, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}))
    (out_dir / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(
        {**header, "data_type": "mscoco", "annotations": annotations}))
    return len(questions)


def write_mme(records: list[ImageRecord], out_dir: Path, seed: int = 0) -> dict[str, int]:
    """mini-MME: subtask folders ``color/`` and ``existence/`` of ``<id>.png`` + ``<id>.txt``
    holding two ``question<TAB>answer`` lines, one Yes and one No."""
    import shutil

    rng = random.Random(seed)
    half = len(records) // 2
    counts = {}
    for subtask, group in (("color", records[:half]), ("existence", records[half:])):
        folder = out_dir / subtask
        folder.mkdir(parents=True, exist_ok=True)
        for r in group:
            if subtask == "color":
                wrong = rng.choice([c for c in COLOURS if c != r.colour])
                ask = "Is there a {} shape in the image? " + YES_NO
                lines = [(ask.format(r.colour), "Yes"), (ask.format(wrong), "No")]
            else:
                wrong = rng.choice([s for s in SHAPES if s != r.shape])
                ask = "Is there a {} in the image? " + YES_NO
                lines = [(ask.format(r.shape), "Yes"), (ask.format(wrong), "No")]
            shutil.copyfile(r.path, folder / f"{r.image_id:06d}.png")
            (folder / f"{r.image_id:06d}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in lines))
        counts[subtask] = 2 * len(group)
    return counts


def write_mmbench(records: list[ImageRecord], path: Path, seed: int = 0) -> int:
    """mini-MMBench dev TSV: index, question, hint, A-D, answer, category, l2-category, image
    (base64 PNG). Four distinct options with no position-dependent wording, so every circular
    rotation is the same question."""
    from PIL import Image

    rng = random.Random(seed)
    categories = {"colour": ("attribute_recognition", "Fine-grained Perception (instance)"),
                  "shape": ("shape_recognition", "Coarse Perception"),
                  "both": ("image_description", "Coarse Perception")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["index", "question", "hint", "A", "B", "C", "D", "answer", "category",
                         "l2-category", "image"])
        for index, r in enumerate(records):
            kind = ("colour", "shape", "both")[index % 3]
            question, options, right = _mc_question(r, rng, kind)
            buf = io.BytesIO()
            Image.open(r.path).convert("RGB").save(buf, format="PNG")
            writer.writerow([index, question, "", *options, "ABCD"[options.index(right)],
                             *categories[kind], base64.b64encode(buf.getvalue()).decode()])
    return len(records)


def write_all(out_dir: Path, seed: int = 0) -> dict[str, object]:
    """All three multimodal evaluation sets under ``out_dir``; returns their counts."""
    images = eval_images(seed)
    return {
        "vqav2": write_vqav2(images["vqav2"], out_dir / "vqav2", seed),
        "mme": write_mme(images["mme"], out_dir / "mme", seed),
        "mmbench_en": write_mmbench(images["mmbench"],
                                    out_dir / "mmbench_en" / "mmbench_dev_en.tsv", seed),
    }
