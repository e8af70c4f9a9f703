"""VQAv2: open-ended answers scored with the official VQA accuracy.

Data: the hub dataset ``lmms-lab/VQAv2`` (split ``validation``), or with ``--data-dir`` the official
JSON pair: a questions file (``{"questions": [{question_id, image_id, question}], "data_subtype"}``)
and an annotations file (``{"annotations": [{question_id, answers: [{answer}...], answer_type,
multiple_choice_answer, ...}]}``), plain or ``.gz``. A folder holding several pairs needs
``extra: {split: <part of the file names>}``. Images: a question's ``image`` field (a path under
the data folder, for non-COCO data such as the mini-world), else the COCO file name
``COCO_<data_subtype>_<image_id:012d>.jpg`` looked up in ``images/``, ``<data_subtype>/`` or the
folder itself.

Prompt (LLaVA-1.5): question + "\\nAnswer the question using a single word or phrase.". The
answer goes through the EvalAI processor, then :func:`iaa_eval.metrics.vqa.accuracy`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from iaa_eval.errors import DataError
from iaa_eval.metrics import vqa as metric
from iaa_eval.rundir import SampleRecord, TaskResult
from iaa_eval.tasks import multimodal as mm
from iaa_eval.tasks.context import TaskContext

HUB = "lmms-lab/VQAv2"
INSTRUCTION = "Answer the question using a single word or phrase."


def make_prompt(question: str) -> str:
    """The question and LLaVA's short-answer instruction on its own line."""
    return f"{question.strip()}\n{INSTRUCTION}"


def _pick(data_dir: Path, word: str, split: str | None) -> Path:
    found = sorted(p for p in data_dir.iterdir() if word in p.name.lower() and p.name.endswith((".json", ".json.gz")))
    picks = [p for p in found if split is None or split in p.name]
    if len(picks) != 1:
        raise DataError(f"{data_dir}: expected one VQA {word}* .json file, found {[p.name for p in found]}"
                        + ("" if split else "; set extra.split to choose"))
    return picks[0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from exc


def _image_path(data_dir: Path, question: dict[str, Any], subtype: str | None, where: str) -> Path:
    if question.get("image"):
        return mm.inside(data_dir, str(question["image"]), where)
    if subtype is None:
        raise DataError(f"{where}: no 'image' field and no data_subtype to build a COCO file name")
    name = f"COCO_{subtype}_{int(question['image_id']):012d}.jpg"
    for folder in ("images", subtype, "."):
        if (data_dir / folder / name).exists():
            return mm.inside(data_dir, f"{folder}/{name}", where)
    raise DataError(f"{where}: image {name} not found in {data_dir}/images, {data_dir}/{subtype} or {data_dir}")


def _item(row: dict[str, Any], answers: list[Any], source: mm.ImageSource, where: str) -> mm.Item:
    human = [str(a["answer"]) if isinstance(a, dict) else str(a) for a in answers or []]
    if not human:
        raise DataError(f"{where}: row without answers")
    target = str(row.get("multiple_choice_answer") or max(sorted(set(human)), key=human.count))
    meta = {"answers": human, "answer_type": str(row.get("answer_type") or "other")}
    return mm.Item(str(row["question_id"]), make_prompt(str(row["question"])), target, source, meta)


def load(data_dir: Path | None, extra: dict[str, Any], problems: mm.Problems) -> list[mm.Item]:
    """Items from the official JSON pair or the hub, validated row by row."""
    items: list[mm.Item] = []
    seen: set[str] = set()

    def add(row: dict[str, Any], answers: Any, source: Any, where: str) -> None:
        try:
            if str(row["question_id"]) in seen:
                raise DataError(f"{where}: duplicated question_id {row['question_id']}")
            item = _item(row, answers, source() if callable(source) else source, where)
            seen.add(item.doc_id)
            items.append(item)
        except DataError as exc:
            problems.report(str(exc))

    if data_dir is None:
        dataset = mm.load_hub(HUB, None, "validation")
        for i, row, source in mm.hub_rows(dataset, HUB):
            add(row, row.get("answers"), source, f"lmms-lab/VQAv2 row {i}")
        return items
    split = extra.get("split")
    qfile, afile = _pick(data_dir, "question", split), _pick(data_dir, "annot", split)
    qdata, adata = _read_json(qfile), _read_json(afile)
    annotations = {str(a.get("question_id")): a for a in adata.get("annotations", [])}
    subtype = qdata.get("data_subtype") or extra.get("data_subtype")
    for i, question in enumerate(qdata.get("questions", [])):
        where = f"{qfile} question {i} (question_id {question.get('question_id')})"
        ann = annotations.get(str(question.get("question_id")))
        if ann is None:
            problems.report(f"{where}: row without answer (no annotation in {afile.name})")
            continue
        row = {**ann, **question}
        add(row, ann.get("answers"), lambda q=question, w=where: _source(data_dir, q, subtype, w), where)
    return items


def _source(data_dir: Path, question: dict[str, Any], subtype: str | None, where: str) -> mm.ImageSource:
    path = _image_path(data_dir, question, subtype, where)
    return mm.ImageSource(str(path), path=path)


class VQAv2Task:
    """VQAv2 (val / a local split)."""

    name = "vqav2"
    modality = "image"
    hub = HUB

    def run(self, ctx: TaskContext) -> TaskResult:
        """Ask each question; accuracy overall and per answer type (yes/no, number, other)."""
        clock = mm.start(ctx)
        problems = mm.Problems(ctx.options.on_error)
        items = mm.first(load(ctx.options.data_dir, ctx.options.extra, problems), ctx.options.limit)
        budget = int(mm.option(ctx.options.extra, "max_new_tokens", 16))
        samples, by_type = [], {}
        for item, response in mm.ask(ctx, items, problems, budget):
            processed = metric.process_answer(response)
            acc = metric.accuracy(processed, item.meta["answers"])
            by_type.setdefault(item.meta["answer_type"], []).append(acc)
            samples.append(SampleRecord(item.doc_id, item.prompt, item.target, response, acc >= 1.0,
                                        group=item.meta["answer_type"], score=acc, extra={"processed": processed}))
        scores = [s.score or 0.0 for s in samples]
        metrics = {"accuracy": sum(scores) / len(scores) if scores else 0.0}
        groups = {t: {"accuracy": sum(v) / len(v), "n": len(v)} for t, v in sorted(by_type.items())}
        config = {"instruction": INSTRUCTION, "max_new_tokens": budget, "answer_processing": "EvalAI"}
        return mm.result(self.name, ctx, clock, problems, samples, metrics, "accuracy", groups, config)


VQAV2 = VQAv2Task()
