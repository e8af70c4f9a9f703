"""MMBench dev (EN and CN): multiple choice, scored with circular evaluation.

Data: the hub dataset ``lmms-lab/MMBench`` (configs ``en`` / ``cn``, split ``dev``), or with
``--data-dir`` the dev TSV layout (a ``.tsv`` file, or a folder holding one whose name has ``en``
or ``cn``; ``extra: {file: ...}`` picks one explicitly): columns index, question, hint, A-D,
answer, category, l2-category, image (base64; a rotated copy may hold its original's index
instead, as VLMEvalKit writes them). Rows at ``index + k * 1e6`` are the rotated copies; a
question without them gets them generated (:func:`iaa_eval.metrics.mmbench.rotations`).

Prompt (LLaVA's ``model_vqa_mmbench``): hint, question, ``"A. ..."`` lines, then "Answer with
the option's letter from the given choices directly." (CN: "请直接回答选项字母。", as LLaVA's
``--lang cn``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from iaa_eval.errors import DataError
from iaa_eval.metrics import mmbench as metric
from iaa_eval.rundir import SampleRecord, TaskResult
from iaa_eval.tasks import multimodal as mm
from iaa_eval.tasks.context import TaskContext

HUB = "lmms-lab/MMBench"
INSTRUCTIONS = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}


def _text(value: Any) -> str:
    """A cell as text; pandas' and the hub's empty markers become ''."""
    text = "" if value is None else str(value).strip()
    return "" if text.lower() in ("nan", "none") else text


def make_prompt(question: str, hint: str, options: dict[str, str], lang: str) -> str:
    """Hint, question, lettered options and the answer instruction, one per line."""
    lines = ([hint] if hint else []) + [question] + [f"{k}. {v}" for k, v in options.items()]
    return "\n".join(lines + [INSTRUCTIONS[lang]])


def _find_tsv(data_dir: Path, lang: str, extra: dict[str, Any]) -> Path:
    if data_dir.is_file():
        return data_dir
    if "file" in extra:
        return data_dir / str(extra["file"])
    tsvs = sorted(data_dir.glob("*.tsv"))
    other = "cn" if lang == "en" else "en"
    picks = [p for p in tsvs if lang in p.stem.lower()] or [p for p in tsvs if other not in p.stem.lower()]
    if len(picks) != 1:
        raise DataError(f"{data_dir}: expected one MMBench {lang.upper()} .tsv, found {[p.name for p in tsvs]}; "
                        "name it with the language or set extra.file")
    return picks[0]


def _rows_local(path: Path) -> list[tuple[str, dict[str, Any], Any]]:
    """(where, row, base64 image text) for each TSV row."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the TSV ({exc})") from exc
    for column in ("index", "question", "A", "B", "answer", "image"):
        if column not in frame.columns:
            raise DataError(f"{path}: missing column {column!r} (have {list(frame.columns)})")
    rows = frame.to_dict("records")
    return [(f"{path} row {i} (index {row['index']})", row, _text(row["image"])) for i, row in enumerate(rows, 1)]


def _image(value: Any, where: str, raw: dict[int, Any], decoded: dict[str, Any]) -> Any:
    """An ImageSource for a row's image cell: hub images pass through; base64 text is decoded
    once per index; a short number names the row whose image a rotated copy reuses."""
    if not isinstance(value, str):
        return value
    if value.isdigit() and len(value) <= 64:
        ref = int(value)
        if ref not in raw or (isinstance(raw[ref], str) and raw[ref].isdigit()):
            raise DataError(f"{where}: image refers to index {ref}, which holds no image")
        value = raw[ref]
        where = f"{where} -> index {ref}"
    if not value:
        raise DataError(f"{where}: row without an image")
    if value not in decoded:
        decoded[value] = mm.b64_image(value, where)
    return decoded[value]


def _passes(where: str, row: dict[str, Any], source: Any, lang: str, alone: bool) -> list[mm.Item]:
    """Validate a row and turn it into its item (plus generated rotations when it is alone)."""
    index = int(row["index"])
    options = {k: _text(row.get(k)) for k in metric.LETTERS if _text(row.get(k))}
    if len(options) < 2 or list(options) != list(metric.LETTERS[: len(options)]):
        raise DataError(f"{where}: row without options (need A, B, ... in order; got {list(options)})")
    answer = _text(row.get("answer")).upper()
    if answer not in options:
        raise DataError(f"{where}: row without an answer among its options (answer {row.get('answer')!r})")
    meta = {"category": _text(row.get("category")) or None, "l2_category": _text(row.get("l2-category")) or None}
    question, hint = _text(row["question"]), _text(row.get("hint"))
    passes = metric.rotations(list(options.values()), answer) if alone else [(list(options.values()), answer)]
    items = []
    for k, (opts, letter) in enumerate(passes):
        lettered, idx = dict(zip(metric.LETTERS, opts, strict=False)), index + k * metric.COPY_STRIDE
        prompt = make_prompt(question, hint, lettered, lang)
        items.append(mm.Item(str(idx), prompt, letter, source, {**meta, "index": idx, "options": lettered}))
    return items


def load(lang: str, data_dir: Path | None, extra: dict[str, Any], problems: mm.Problems) -> list[mm.Item]:
    """Every pass of every question (questions in file order, passes together), copies generated
    where absent."""
    if data_dir is not None:
        rows = _rows_local(_find_tsv(data_dir, lang, extra))
    else:
        dataset = mm.load_hub(HUB, lang, "dev")
        rows = [(f"lmms-lab/MMBench ({lang}) row {i}", row, src)
                for i, row, src in mm.hub_rows(dataset, f"lmms-lab/MMBench ({lang})")]
    raw: dict[int, Any] = {}
    valid = []
    for where, row, image in rows:
        try:
            index = int(row["index"])
        except (TypeError, ValueError):
            problems.report(f"{where}: index {row['index']!r} is not an integer")
            continue
        if index in raw:
            problems.report(f"{where}: duplicated index {index}")
            continue
        raw[index] = image
        valid.append((where, row, index))
    counts = Counter(metric.question_id(index) for index in raw)
    items: list[mm.Item] = []
    decoded: dict[str, Any] = {}
    for where, row, index in valid:
        try:
            source = _image(raw[index], where, raw, decoded)
            alone = index < metric.COPY_STRIDE and counts[index] == 1
            items += _passes(where, row, source, lang, alone)
        except DataError as exc:
            problems.report(str(exc))
    based = {it.meta["index"] for it in items if it.meta["index"] < metric.COPY_STRIDE}
    for it in items:
        if (qid := metric.question_id(it.meta["index"])) not in based:
            problems.report(f"index {it.doc_id}: left out, its rotation-0 row (index {qid}) is missing or refused")
    order = {qid: n for n, qid in enumerate(dict.fromkeys(metric.question_id(i) for i in raw))}
    kept = [it for it in items if metric.question_id(it.meta["index"]) in based]
    return sorted(kept, key=lambda it: (order[metric.question_id(it.meta["index"])], it.meta["index"]))


class MMBenchTask:
    """MMBench dev in one language."""

    modality = "image"
    hub = HUB

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.name = f"mmbench_{lang}"

    def run(self, ctx: TaskContext) -> TaskResult:
        """Ask every pass (limit = questions); a question counts only if all its passes are right."""
        clock = mm.start(ctx)
        problems = mm.Problems(ctx.options.on_error)
        items = mm.first(load(self.lang, ctx.options.data_dir, ctx.options.extra, problems), ctx.options.limit,
                         key=lambda it: metric.question_id(it.meta["index"]))
        budget = int(mm.option(ctx.options.extra, "max_new_tokens", 16))
        records, samples = [], []
        for item, response in mm.ask(ctx, items, problems, budget):
            choice = metric.extract_choice(response, item.meta["options"])
            records.append({**item.meta, "answer": item.target, "prediction": choice})
            extra = {"extracted": choice, "question_id": metric.question_id(item.meta["index"])}
            samples.append(SampleRecord(item.doc_id, item.prompt, item.target, response, choice == item.target,
                                        group=item.meta["category"], extra=extra))
        scores = metric.circular_accuracy(records)
        groups = {f"category/{k}": v for k, v in scores["categories"].items()}
        groups |= {f"l2_category/{k}": v for k, v in scores["l2_categories"].items()}
        metrics = {"circular_acc": scores["circular_acc"], "vanilla_acc": scores["vanilla_acc"]}
        config = {"instruction": INSTRUCTIONS[self.lang], "max_new_tokens": budget, "questions": scores["n"]}
        return mm.result(self.name, ctx, clock, problems, samples, metrics, "circular_acc", groups, config)


MMBENCH_EN = MMBenchTask("en")
MMBENCH_CN = MMBenchTask("cn")
