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

import functools
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
    found = sorted(p for p in data_dir.iterdir()
                   if word in p.name.lower() and p.name.endswith((".json", ".json.gz")))
    picks = [p for p in found if split is None or split in p.name]
    if len(picks) != 1:
        raise DataError(f"{data_dir}: expected one VQA {word}* .json file, found "
                        f"{[p.name for p in found]}"
                        + ("" if split else "; set extra.split to choose"))
    return picks[0]


def _read_json(path: Path) -> Any:
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from exc


def _shown(value: Any) -> str:
    """A JSON value for an error message: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _records(data: Any, path: Path, key: str) -> list[Any]:
    """The list under ``key`` of an official VQA file, which is a JSON object, not a bare list."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        got = f"a JSON {type(data).__name__}" if not isinstance(data, dict) else f"no {key!r} list"
        raise DataError(f"{path}: expected a JSON object with the {key!r} list (the official VQA "
                        f"layout), got {got}")
    return data[key]


def _image_path(data_dir: Path, question: dict[str, Any], subtype: str | None, where: str) -> Path:
    if question.get("image"):
        return mm.inside(data_dir, str(question["image"]), where)
    if subtype is None:
        raise DataError(f"{where}: no 'image' field and no data_subtype to build a COCO file name")
    image_id = question.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise DataError(f"{where}: field 'image_id' must be an integer (it names the COCO image "
                        f"file), got {_shown(image_id)}")
    name = f"COCO_{subtype}_{image_id:012d}.jpg"
    for folder in ("images", subtype, "."):
        if (data_dir / folder / name).exists():
            return mm.inside(data_dir, f"{folder}/{name}", where)
    raise DataError(f"{where}: image {name} not found in {data_dir}/images, {data_dir}/{subtype} "
                    f"or {data_dir}")


def _human_answers(answers: Any, where: str) -> list[str]:
    """The annotators' answers: a list of ``{"answer": text, ...}`` records, not all empty (a
    bare string would otherwise be read letter by letter)."""
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{where}: field 'answers' must be a non-empty list of {{'answer': text}} "
                        f"records, got {_shown(answers)}")
    human = []
    for k, record in enumerate(answers):
        text = record.get("answer") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{where}: answers[{k}] must be a record with a text 'answer', "
                            f"got {_shown(record)}")
        human.append(text)
    if not any(metric.strip_text(a) for a in human):
        raise DataError(f"{where}: every one of the {len(human)} answers is empty")
    return human


def _item(row: dict[str, Any], answers: Any, source: Any, where: str,
          answers_where: str) -> mm.Item:
    """A validated row (``source``: an ImageSource, or a function making one, called last)."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: field 'question' missing or not text (got {_shown(question)})")
    human = _human_answers(answers, answers_where)
    image = source() if callable(source) else source
    target = str(row.get("multiple_choice_answer") or max(sorted(set(human)), key=human.count))
    meta = {"answers": human, "answer_type": str(row.get("answer_type") or "other")}
    return mm.Item(str(row["question_id"]), make_prompt(question), target, image, meta)


def load(data_dir: Path | None, extra: dict[str, Any], problems: mm.Problems) -> list[mm.Item]:
    """Items from the official JSON pair or the hub, validated row by row."""
    items: list[mm.Item] = []
    seen: set[str] = set()

    def add(row: dict[str, Any], answers: Any, source: Any, where: str, answers_where: str) -> None:
        try:
            qid = row.get("question_id")
            if isinstance(qid, bool) or not isinstance(qid, int | str):
                raise DataError(f"{where}: field 'question_id' missing or not an integer "
                                f"(got {_shown(qid)})")
            if str(qid) in seen:
                raise DataError(f"{where}: duplicated question_id {qid}")
            item = _item(row, answers, source, where, answers_where)
            seen.add(item.doc_id)
            items.append(item)
        except DataError as exc:
            problems.report(str(exc))

    if data_dir is None:
        dataset = mm.load_hub(HUB, None, "validation")
        for i, row, source in mm.hub_rows(dataset, HUB):
            where = f"lmms-lab/VQAv2 row {i}"
            add(row, row.get("answers"), source, where, where)
        return items
    split = extra.get("split")
    qfile, afile = _pick(data_dir, "question", split), _pick(data_dir, "annot", split)
    qdata, adata = _read_json(qfile), _read_json(afile)
    questions = _records(qdata, qfile, "questions")
    annotation_rows = _records(adata, afile, "annotations")
    annotations: dict[str, tuple[int, dict[str, Any]]] = {}
    for j, ann in enumerate(annotation_rows):
        if isinstance(ann, dict):
            annotations[str(ann.get("question_id"))] = (j, ann)
        else:
            problems.report(f"{afile} annotation {j}: expected a JSON object, got {_shown(ann)}")
    subtype = qdata.get("data_subtype") or extra.get("data_subtype")
    for i, question in enumerate(questions):
        if not isinstance(question, dict):
            problems.report(f"{qfile} question {i}: expected a JSON object, got {_shown(question)}")
            continue
        where = f"{qfile} question {i} (question_id {question.get('question_id')})"
        found = annotations.get(str(question.get("question_id")))
        if found is None:
            problems.report(f"{where}: row without answer (no annotation in {afile.name})")
            continue
        j, ann = found
        answers_where = f"{afile} annotation {j} (question_id {ann.get('question_id')})"
        row = {**ann, **question}
        source = functools.partial(_source, data_dir, question, subtype, where)
        add(row, ann.get("answers"), source, where, answers_where)
    return items


def _source(data_dir: Path, question: dict[str, Any], subtype: str | None,
            where: str) -> mm.ImageSource:
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
                                        group=item.meta["answer_type"], score=acc,
                                        extra={"processed": processed}))
        scores = [s.score or 0.0 for s in samples]
        metrics = {"accuracy": sum(scores) / len(scores) if scores else 0.0}
        groups = {t: {"accuracy": sum(v) / len(v), "n": len(v)} for t, v in sorted(by_type.items())}
        config = {"instruction": INSTRUCTION, "max_new_tokens": budget,
                  "answer_processing": "EvalAI"}
        return mm.result(self.name, ctx, clock, problems, samples, metrics, "accuracy", groups,
                         config)


VQAV2 = VQAv2Task()
