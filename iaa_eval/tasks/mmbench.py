"""MMBench dev (EN and CN): multiple choice, scored with circular evaluation.

Data: the hub dataset ``lmms-lab/MMBench`` (configs ``en`` / ``cn``, split ``dev``), or with
``--data-dir`` the dev TSV layout (a ``.tsv`` file, or a folder holding one whose name has ``en``
or ``cn``; ``extra: {file: ...}`` picks one explicitly): columns index, question, hint, A-D,
answer, category, l2-category, image (base64; a rotated copy may hold its original's index
instead, as VLMEvalKit writes them). Rows at ``index + k * 1e6`` are the rotated copies, which
must hold their original's options and answer rotated k places; a question without them gets
them generated (:func:`iaa_eval.metrics.mmbench.rotations`). Only an empty cell is an absent
option: the text "None" is an option like any other.

Prompt (LLaVA's ``model_vqa_mmbench``): hint, question, ``"A. ..."`` lines, then "Answer with
the option's letter from the given choices directly." (CN: "请直接回答选项字母。", as
LLaVA's ``--lang cn``).
"""

from __future__ import annotations

import contextlib
import math
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
    """A cell as text; an empty cell (``''``, ``None``, a float NaN) is ''. The text "None" is a
    real option (the TSV is read with ``keep_default_na=False``: pandas leaves it as text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _hub_row(row: dict[str, Any]) -> dict[str, Any]:
    """A ``lmms-lab/MMBench`` row with its empty cells, stored as pandas' text ``"nan"`` (which
    lmms-eval skips too), made ``None``."""
    return {k: None if v == "nan" else v for k, v in row.items()}


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
    picks = ([p for p in tsvs if lang in p.stem.lower()]
             or [p for p in tsvs if other not in p.stem.lower()])
    if len(picks) != 1:
        raise DataError(f"{data_dir}: expected one MMBench {lang.upper()} .tsv, found "
                        f"{[p.name for p in tsvs]}; name it with the language or set extra.file")
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
    return [(f"{path} row {i} (index {row['index']})", row, _text(row["image"]))
            for i, row in enumerate(rows, 1)]


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


def _choices(where: str, row: dict[str, Any]) -> tuple[dict[str, str], str]:
    """A row's lettered options and answer letter, validated."""
    options = {k: _text(row.get(k)) for k in metric.LETTERS if _text(row.get(k))}
    if len(options) < 2 or list(options) != list(metric.LETTERS[: len(options)]):
        raise DataError(f"{where}: row without options (need A, B, ... in order; got "
                        f"{list(options)})")
    answer = _text(row.get("answer")).upper()
    if answer not in options:
        raise DataError(f"{where}: row without an answer among its options (answer "
                        f"{row.get('answer')!r})")
    return options, answer


def _check_copy(where: str, index: int, choices: tuple[list[str], str],
                original: tuple[list[str], str]) -> None:
    """A published copy ``index = qid + k * 1e6`` must be rotation k of its original, with or
    without the last option pinned (the published files pin a few plain last options too)."""
    k = index // metric.COPY_STRIDE
    for pin in (False, True):
        passes = metric.rotations(*original, pin_last=pin)
        if k < len(passes) and passes[k] == choices:
            return
    passes = metric.rotations(*original)
    if k < len(passes):
        expected = f"options {passes[k][0]}, answer {passes[k][1]}"
    else:
        expected = f"no copy {k}: the question has {len(passes)} passes"
    raise DataError(f"{where}: not rotation {k} of index {metric.question_id(index)} "
                    f"(expected {expected}; got options {choices[0]}, answer {choices[1]})")


def _passes(where: str, row: dict[str, Any], source: Any, lang: str, alone: bool,
            original: tuple[list[str], str] | None) -> list[mm.Item]:
    """Validate a row and turn it into its item (plus generated rotations when it is alone);
    a rotated copy is checked against its ``original`` (options, answer) when that is valid."""
    index = int(row["index"])
    options, answer = _choices(where, row)
    if index >= metric.COPY_STRIDE and original is not None:
        _check_copy(where, index, (list(options.values()), answer), original)
    meta = {"category": _text(row.get("category")) or None,
            "l2_category": _text(row.get("l2-category")) or None}
    question, hint = _text(row["question"]), _text(row.get("hint"))
    passes = (metric.rotations(list(options.values()), answer) if alone
              else [(list(options.values()), answer)])
    items = []
    for k, (opts, letter) in enumerate(passes):
        lettered = dict(zip(metric.LETTERS, opts, strict=False))
        idx = index + k * metric.COPY_STRIDE
        prompt = make_prompt(question, hint, lettered, lang)
        items.append(mm.Item(str(idx), prompt, letter, source,
                             {**meta, "index": idx, "options": lettered}))
    return items


def _indexed(rows: list[tuple[str, dict[str, Any], Any]], problems: mm.Problems
             ) -> tuple[dict[int, Any], list[tuple[str, dict[str, Any], int]]]:
    """Each index's image cell, and the rows whose index is an integer seen once."""
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
    return raw, valid


def _originals(valid: list[tuple[str, dict[str, Any], int]]) -> dict[int, tuple[list[str], str]]:
    """(options, answer) of every well-formed rotation-0 row: what its published copies rotate."""
    originals = {}
    for where, row, index in valid:
        if index < metric.COPY_STRIDE:
            with contextlib.suppress(DataError):  # reported when the row itself is read
                options, answer = _choices(where, row)
                originals[index] = (list(options.values()), answer)
    return originals


def load(lang: str, data_dir: Path | None, extra: dict[str, Any],
         problems: mm.Problems) -> list[mm.Item]:
    """Every pass of every question (questions in file order, passes together), copies generated
    where absent. A question one of whose rows is refused is left out whole: circular accuracy
    over the passes that remain would be too lenient."""
    if data_dir is not None:
        rows = _rows_local(_find_tsv(data_dir, lang, extra))
    else:
        dataset = mm.load_hub(HUB, lang, "dev")
        rows = [(f"lmms-lab/MMBench ({lang}) row {i}", _hub_row(row), src)
                for i, row, src in mm.hub_rows(dataset, f"lmms-lab/MMBench ({lang})")]
    raw, valid = _indexed(rows, problems)
    counts = Counter(metric.question_id(index) for index in raw)
    originals = _originals(valid)
    items: list[mm.Item] = []
    refused: set[int] = set()
    decoded: dict[str, Any] = {}
    for where, row, index in valid:
        qid = metric.question_id(index)
        try:
            source = _image(raw[index], where, raw, decoded)
            alone = index < metric.COPY_STRIDE and counts[index] == 1
            items += _passes(where, row, source, lang, alone, originals.get(qid))
        except DataError as exc:
            problems.report(str(exc))
            refused.add(qid)
    based = {it.meta["index"] for it in items if it.meta["index"] < metric.COPY_STRIDE}
    for it in items:
        if (qid := metric.question_id(it.meta["index"])) not in based:
            problems.report(f"index {it.doc_id}: left out, its rotation-0 row (index {qid}) is "
                            "missing or refused")
        elif qid in refused:
            problems.report(f"index {it.doc_id}: left out, another pass of question {qid} "
                            "was refused")
    order = {qid: n for n, qid in enumerate(dict.fromkeys(metric.question_id(i) for i in raw))}
    kept = [it for it in items if metric.question_id(it.meta["index"]) in based - refused]
    return sorted(kept,
                  key=lambda it: (order[metric.question_id(it.meta["index"])], it.meta["index"]))


class MMBenchTask:
    """MMBench dev in one language."""

    modality = "image"
    hub = HUB

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.name = f"mmbench_{lang}"

    def run(self, ctx: TaskContext) -> TaskResult:
        """Ask every pass (limit = questions); a question counts only if all its passes are
        right."""
        clock = mm.start(ctx)
        problems = mm.Problems(ctx.options.on_error)
        items = mm.first(load(self.lang, ctx.options.data_dir, ctx.options.extra, problems),
                         ctx.options.limit, key=lambda it: metric.question_id(it.meta["index"]))
        budget = int(mm.option(ctx.options.extra, "max_new_tokens", 16))
        records, samples = [], []
        for item, response in mm.ask(ctx, items, problems, budget):
            choice = metric.extract_choice(response, item.meta["options"])
            records.append({**item.meta, "answer": item.target, "prediction": choice})
            extra = {"extracted": choice, "question_id": metric.question_id(item.meta["index"])}
            samples.append(SampleRecord(item.doc_id, item.prompt, item.target, response,
                                        choice == item.target, group=item.meta["category"],
                                        extra=extra))
        scores = metric.circular_accuracy(records)
        groups = {f"category/{k}": v for k, v in scores["categories"].items()}
        groups |= {f"l2_category/{k}": v for k, v in scores["l2_categories"].items()}
        metrics = {"circular_acc": scores["circular_acc"], "vanilla_acc": scores["vanilla_acc"]}
        config = {"instruction": INSTRUCTIONS[self.lang], "max_new_tokens": budget,
                  "questions": scores["n"]}
        return mm.result(self.name, ctx, clock, problems, samples, metrics, "circular_acc", groups,
                         config)


MMBENCH_EN = MMBenchTask("en")
MMBENCH_CN = MMBenchTask("cn")
