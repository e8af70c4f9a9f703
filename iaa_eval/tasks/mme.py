"""MME: yes/no questions, two per image, 10 perception and 4 cognition subtasks.

Data: the hub dataset ``lmms-lab/MME`` (question_id, image, question, answer, category), or with
``--data-dir`` the original release layout: one folder per subtask (optionally under
``MME_Benchmark_release_version/``) holding either images next to ``<image>.txt`` files, or
``images/`` plus ``questions_answers_YN/<image>.txt``; each ``.txt`` line is
``question<TAB>Yes|No``.

Prompt: the question ending in " Please answer yes or no." (the MME questions already carry that
suffix; it is added where missing). Scored by :mod:`iaa_eval.metrics.mme` (the authors' rules).
"""

from __future__ import annotations

from pathlib import Path

from iaa_eval.errors import DataError
from iaa_eval.metrics import mme as metric
from iaa_eval.rundir import SampleRecord, TaskResult
from iaa_eval.tasks import multimodal as mm
from iaa_eval.tasks.context import TaskContext

SUFFIX = "Please answer yes or no."
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
HUB = "lmms-lab/MME"


def make_prompt(question: str) -> str:
    """The question with the MME yes/no instruction, exactly once."""
    question = question.strip()
    return question if question.endswith(SUFFIX) else f"{question} {SUFFIX}"


def _add(items: list[mm.Item], seen: dict[tuple[str, str], list[str]], problems: mm.Problems, subtask: str, image: str, question: str,
         answer: str, source: mm.ImageSource, where: str) -> None:
    """Validate one question row and append it as an Item."""
    if answer.strip().lower() not in ("yes", "no"):
        problems.report(f"{where}: row without a yes/no answer (got {answer!r})")
        return
    asked = seen.setdefault((subtask, image), [])
    if question in asked:
        problems.report(f"{where}: duplicated question {question!r} for image {image!r}")
        return
    k = len(asked)
    asked.append(question)
    meta = {"subtask": subtask, "image": image, "question": question}
    items.append(mm.Item(f"{subtask}/{image}#{k}", make_prompt(question), answer.strip(), source, meta))


def _release_root(data_dir: Path) -> Path:
    nested = data_dir / "MME_Benchmark_release_version"
    return nested if not any((data_dir / s).is_dir() for s in metric.SUBTASKS) and nested.is_dir() else data_dir


def load_local(data_dir: Path, problems: mm.Problems) -> list[mm.Item]:
    """Items from the original MME folder layout."""
    root = _release_root(data_dir)
    items: list[mm.Item] = []
    seen: dict[tuple[str, str], list[str]] = {}
    folders = [root / s for s in metric.SUBTASKS if (root / s).is_dir()]
    if not folders:
        raise DataError(f"{root}: no MME subtask folder found (expected some of {', '.join(metric.SUBTASKS)})")
    for folder in folders:
        qa_dir = folder / "questions_answers_YN"
        image_dir = folder / "images" if qa_dir.is_dir() else folder
        qa_dir = qa_dir if qa_dir.is_dir() else folder
        for txt in sorted(qa_dir.glob("*.txt")):
            found = [image_dir / (txt.stem + s) for s in IMAGE_SUFFIXES if (image_dir / (txt.stem + s)).exists()]
            if not found:
                problems.report(f"{txt}: no image {txt.stem}{{.jpg,.png}} in {image_dir}")
                continue
            try:
                path = mm.inside(root, str(found[0].relative_to(root)), str(txt))
            except DataError as exc:  # a link leaving the data folder, or a dangling one
                problems.report(str(exc))
                continue
            source = mm.ImageSource(str(path), path=path)
            lines = txt.read_text(encoding="utf-8").splitlines()
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r").split("\t")
                if len(parts) != 2:
                    problems.report(f"{txt}:{line_no}: expected 'question<TAB>answer', got {len(parts)} fields")
                    continue
                _add(items, seen, problems, folder.name, path.name, parts[0], parts[1], source, f"{txt}:{line_no}")
    return items


def load_hub_items(problems: mm.Problems) -> list[mm.Item]:
    """Items from ``lmms-lab/MME`` (split ``test``)."""
    items: list[mm.Item] = []
    seen: dict[tuple[str, str], list[str]] = {}
    dataset = mm.load_hub(HUB, None, "test")
    for i, row, source in mm.hub_rows(dataset, HUB):
        subtask = str(row["category"])
        if subtask not in metric.SUBTASKS:
            problems.report(f"lmms-lab/MME row {i}: unknown category {subtask!r}")
            continue
        image = str(row["question_id"]).split("/", 1)[-1]
        _add(items, seen, problems, subtask, image, str(row["question"]), str(row["answer"] or ""), source,
             f"lmms-lab/MME row {i}")
    return items


class MMETask:
    """The MME benchmark (perception + cognition)."""

    name = "mme"
    modality = "image"
    hub = HUB

    def load(self, data_dir: Path | None, problems: mm.Problems) -> list[mm.Item]:
        """Items from ``data_dir`` (original layout) or the hub."""
        return load_local(data_dir, problems) if data_dir is not None else load_hub_items(problems)

    def run(self, ctx: TaskContext) -> TaskResult:
        """Ask every question (limit = images), score with the official rules."""
        clock = mm.start(ctx)
        problems = mm.Problems(ctx.options.on_error)
        items = mm.first(self.load(ctx.options.data_dir, problems), ctx.options.limit,
                      key=lambda it: (it.meta["subtask"], it.meta["image"]))
        budget = int(mm.option(ctx.options.extra, "max_new_tokens", 16))
        rows, samples = [], []
        for item, response in mm.ask(ctx, items, problems, budget):
            rows.append({**item.meta, "answer": item.target, "prediction": response})
            samples.append(SampleRecord(item.doc_id, item.prompt, item.target, response,
                                        metric.is_correct(item.target, response), group=item.meta["subtask"]))
        scores = metric.score(rows) if rows else {"perception": 0.0, "cognition": 0.0}
        groups = {s: {**scores[s], "n": sum(r["subtask"] == s for r in rows)} for s in metric.SUBTASKS if s in scores}
        metrics = {"perception": scores["perception"], "cognition": scores["cognition"]}
        config = {"prompt_suffix": " " + SUFFIX, "max_new_tokens": budget, "subtasks": list(groups)}
        return mm.result(self.name, ctx, clock, problems, samples, metrics, "perception", groups, config)


MME = MMETask()
