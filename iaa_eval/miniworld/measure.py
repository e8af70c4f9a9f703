"""A development check of a built mini-world through the real model adapters.

Text: cloze accuracy of base, LLaVA-style text view and IAA text view on mini-MMLU / mini-C-Eval
test items, with McNemar's test against the base. Multimodal: greedy answers of the LLaVA-style
and IAA adapters (and blind, image withheld) on mini-VQAv2 (exact match; its ten answers agree),
mini-MME (per-question yes/no accuracy) and mini-MMBench (single pass, letter match). The
published numbers come from the harness's own tasks; this exists to tune the recipe quickly.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from iaa_eval.metrics.stats import mcnemar_exact
from iaa_eval.miniworld import mmdata, score, world

log = logging.getLogger(__name__)


def _adapters(out_dir: Path) -> dict[str, Any]:
    from iaa_eval.models.base import ModelSpec
    from iaa_eval.models.hf_causal import HFCausalModel
    from iaa_eval.models.iaa.adapter import IAAModel
    from iaa_eval.models.vlm import VLMModel

    return {
        "base": HFCausalModel(ModelSpec("base", "hf", str(out_dir / "base"), dtype="float32",
                                        batch_size=32)),
        "llava": VLMModel(ModelSpec("llava", "llava", str(out_dir / "llava"), dtype="float32",
                                    batch_size=32)),
        "iaa": IAAModel(ModelSpec("iaa", "iaa", str(out_dir / "iaa"), dtype="float32",
                                  batch_size=32)),
    }


def text_results(models: dict[str, Any], seed: int) -> dict[str, Any]:
    """Per language: accuracy of each model, McNemar p against base, and item-level identity."""
    w = world.make_world(seed)
    out: dict[str, Any] = {}
    for lang, name in (("en", "mmlu"), ("zh", "ceval")):
        items = [it for its in world.make_items(w, lang).values()
                 for it in world.split_dev(its, seed)[1]]
        right = {k: score.cloze_correct(m.text_view().model, m.text_view().tokenizer, items, lang)
                 for k, m in models.items()}
        out[name] = {
            "n": len(items), **{f"{k}_acc": round(sum(v) / len(v), 4) for k, v in right.items()},
            "llava_mcnemar_p": mcnemar_exact(right["base"], right["llava"]).p_value,
            "iaa_identical": right["iaa"] == right["base"],
        }
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def mm_requests(data_dir: Path) -> dict[str, list[tuple[Any, str]]]:
    """(request, expected) pairs of the three multimodal sets, read back from their files."""
    from PIL import Image

    from iaa_eval.models.base import MMRequest

    vqa_dir = data_dir / "vqav2"
    questions = json.loads(
        (vqa_dir / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    annotations = json.loads((vqa_dir / "v2_mscoco_val2014_annotations.json").read_text())
    answers = {a["question_id"]: a["multiple_choice_answer"] for a in annotations["annotations"]}
    vqa = [(MMRequest(f"{q['question']}\n{mmdata.SHORT_ANSWER}",
                      Image.open(vqa_dir / "val2014" / f"COCO_val2014_{q['image_id']:012d}.jpg")
                      .convert("RGB")),
            answers[q["question_id"]]) for q in questions]
    mme = []
    for txt in sorted((data_dir / "mme").glob("*/*.txt")):
        image = Image.open(txt.with_suffix(".png")).convert("RGB")
        for line in txt.read_text().splitlines():
            question, answer = line.split("\t")
            mme.append((MMRequest(question, image), answer.lower()))  # MME's prompt: the question
    mmb = []
    with (data_dir / "mmbench_en" / "mmbench_dev_en.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            image = Image.open(io.BytesIO(base64.b64decode(row["image"]))).convert("RGB")
            prompt = mmdata.mc_prompt(row["question"], tuple(row[k] for k in "ABCD"))
            mmb.append((MMRequest(prompt, image), row["answer"].lower()))
    return {"vqav2": vqa, "mme": mme, "mmbench": mmb}


def mm_results(models: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Greedy-answer accuracy of ``llava`` and ``iaa``, with the image and blind."""
    from dataclasses import replace

    sets = mm_requests(data_dir)
    out: dict[str, Any] = {}
    for name in ("llava", "iaa"):
        for task, pairs in sets.items():
            for blind in (False, True):
                requests = [replace(r, image=None) if blind else r for r, _ in pairs]
                got = models[name].generate(requests)
                acc = sum(_norm(g).startswith(e) and bool(_norm(g))
                          for g, (_, e) in zip(got, pairs, strict=True))
                out[f"{name}_{task}{'_blind' if blind else ''}"] = round(acc / len(pairs), 4)
    return out


def measure(out_dir: Path | str, seed: int = 0, multimodal: bool = True) -> dict[str, Any]:
    """Text and (optionally) multimodal results of the trio in ``out_dir``."""
    out_dir = Path(out_dir)
    models = _adapters(out_dir)
    results = {"text": text_results(models, seed)}
    if multimodal:
        results["mm"] = mm_results(models, out_dir / "data")
    log.info("mini-world measure: %s", results)
    return results
