"""MME: yes/no questions, two per image, 10 perception and 4 cognition subtasks.

Data: the hub dataset ``lmms-lab/MME`` (question_id, image, question, answer, category), or with
``--data-dir`` the original release layout: one folder per subtask (optionally under
``MME_Benchmark_release_version/``) holding either images next to ``<image>.txt`` files, or
``images/`` plus ``questions_answers_YN/<image>.txt``; each ``.txt`` line is
``question<TAB>Yes|No`` (UTF-8, a byte-order mark ignored), two per image.

Prompt: the question ending in " Please answer yes or no." (the MME questions already carry that
suffix; it is added where missing). Scored by :mod:`iaa_eval.metrics.mme` (the authors' rules).
"""

from __future__ import annotations

from collections import Counter
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


def _add(items: list[mm.Item], seen: dict[tuple[str, str], list[str]], problems: mm.Problems,
         subtask: str, image: str, question: str, answer: str, source: mm.ImageSource,
         where: str) -> None:
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
    items.append(mm.Item(f"{subtask}/{image}#{k}", make_prompt(question), answer.strip(), source,
                         meta))


def _read_lines(txt: Path) -> list[str]:
    """A question file's lines: UTF-8, a leading byte-order mark dropped (it would otherwise
    stay glued to the first question of the prompt)."""
    raw = txt.read_bytes()
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{txt}:{line}: not UTF-8 ({exc.reason} at byte {exc.start}); "
                        "save the file as UTF-8") from exc


def _pairs_only(items: list[mm.Item], origin: dict[tuple[str, str], str],
                problems: mm.Problems) -> list[mm.Item]:
    """The items of images asked exactly two questions. acc+ scores an image by its pair; one
    question alone would count as a pair both right."""
    counts = Counter((it.meta["subtask"], it.meta["image"]) for it in items)
    for (subtask, image), n in counts.items():
        if n != 2:
            problems.report(f"{origin[(subtask, image)]}: image {image!r} has {n} question(s); MME "
                            "asks two per image (acc+ scores the pair)")
    return [it for it in items if counts[(it.meta["subtask"], it.meta["image"])] == 2]


def _release_root(data_dir: Path) -> Path:
    nested = data_dir / "MME_Benchmark_release_version"
    flat = any((data_dir / s).is_dir() for s in metric.SUBTASKS)
    return nested if not flat and nested.is_dir() else data_dir


def load_local(data_dir: Path, problems: mm.Problems) -> list[mm.Item]:
    """Items from the original MME folder layout."""
    root = _release_root(data_dir)
    items: list[mm.Item] = []
    seen: dict[tuple[str, str], list[str]] = {}
    origin: dict[tuple[str, str], str] = {}
    folders = [root / s for s in metric.SUBTASKS if (root / s).is_dir()]
    if not folders:
        raise DataError(f"{root}: no MME subtask folder found (expected some of "
                        f"{', '.join(metric.SUBTASKS)})")
    for folder in folders:
        qa_dir = folder / "questions_answers_YN"
        image_dir = folder / "images" if qa_dir.is_dir() else folder
        qa_dir = qa_dir if qa_dir.is_dir() else folder
        for txt in sorted(qa_dir.glob("*.txt")):
            found = [image_dir / (txt.stem + s) for s in IMAGE_SUFFIXES
                     if (image_dir / (txt.stem + s)).exists()]
            if not found:
                problems.report(f"{txt}: no image {txt.stem}{{.jpg,.png}} in {image_dir}")
                continue
            try:
                path = mm.inside(root, str(found[0].relative_to(root)), str(txt))
            except DataError as exc:  # a link leaving the data folder, or a dangling one
                problems.report(str(exc))
                continue
            source = mm.ImageSource(str(path), path=path)
            origin[(folder.name, path.name)] = str(txt)
            try:
                lines = _read_lines(txt)
            except DataError as exc:
                problems.report(str(exc))
                continue
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r").split("\t")
                if len(parts) != 2:
                    problems.report(f"{txt}:{line_no}: expected 'question<TAB>answer', got "
                                    f"{len(parts)} fields")
                    continue
                _add(items, seen, problems, folder.name, path.name, parts[0], parts[1], source,
                     f"{txt}:{line_no}")
    return _pairs_only(items, origin, problems)


def load_hub_items(problems: mm.Problems) -> list[mm.Item]:
    """Items from ``lmms-lab/MME`` (split ``test``)."""
    items: list[mm.Item] = []
    seen: dict[tuple[str, str], list[str]] = {}
    origin: dict[tuple[str, str], str] = {}
    dataset = mm.load_hub(HUB, None, "test")
    for i, row, source in mm.hub_rows(dataset, HUB):
        subtask = str(row["category"])
        if subtask not in metric.SUBTASKS:
            problems.report(f"lmms-lab/MME row {i}: unknown category {subtask!r}")
            continue
        image = str(row["question_id"]).split("/", 1)[-1]
        origin.setdefault((subtask, image), f"lmms-lab/MME row {i} ({subtask}/{image})")
        _add(items, seen, problems, subtask, image, str(row["question"]), str(row["answer"] or ""),
             source, f"lmms-lab/MME row {i}")
    return _pairs_only(items, origin, problems)


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
                                        metric.is_correct(item.target, response),
                                        group=item.meta["subtask"]))
        scores = metric.score(rows) if rows else {"perception": 0.0, "cognition": 0.0}
        groups = {s: {**scores[s], "n": sum(r["subtask"] == s for r in rows)}
                  for s in metric.SUBTASKS if s in scores}
        metrics = {"perception": scores["perception"], "cognition": scores["cognition"]}
        config = {"prompt_suffix": " " + SUFFIX, "max_new_tokens": budget, "subtasks": list(groups)}
        return mm.result(self.name, ctx, clock, problems, samples, metrics, "perception", groups,
                         config)


MME = MMETask()
