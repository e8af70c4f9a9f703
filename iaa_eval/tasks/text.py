"""MMLU and C-Eval through lm-eval's own task machinery, on our models.

lm-eval builds the prompts (templates in ``tasks/``), samples the shots (``first_n`` of dev),
asks the model and scores; :class:`~iaa_eval.tasks.lm_bridge.TextViewLM` does the model work. We
turn its per-subject output into a :class:`TaskResult`: ``acc`` over questions (micro, what
lm-eval's group reports), ``acc_macro`` over subjects, per-subject groups and pairable samples.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iaa_eval.errors import DataError
from iaa_eval.rundir import SampleRecord, TaskResult
from iaa_eval.tasks.text_configs import (
    BENCHMARKS,
    Benchmark,
    check_formulation,
    chinese_names,
    subject_fields,
    template_config,
)
from iaa_eval.tasks.text_data import LoadReport, discover_subjects, load_subject, resolve_root

if TYPE_CHECKING:
    from lm_eval.api.model import LM

    from iaa_eval.tasks.context import TaskContext, TaskOptions

log = logging.getLogger(__name__)
FEWSHOT_SEED = 1234


class _QuietCustomDataset(logging.Filter):
    """Drops lm-eval's per-task hint about ``--metadata`` for custom datasets (57 lines of
    noise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_custom_dataset() -> Iterator[None]:
    task_log = logging.getLogger("lm_eval.api.task")
    quiet = _QuietCustomDataset()
    task_log.addFilter(quiet)
    try:
        yield
    finally:
        task_log.removeFilter(quiet)


class _Preloaded:
    """lm-eval's ``custom_dataset`` hook returning data we read (and checked) ourselves; it survives
    lm-eval's deep copies of task configs without copying the data."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, **_: Any) -> Any:
        return self.dataset

    def __deepcopy__(self, memo: dict) -> _Preloaded:
        return self


@dataclass
class TextRun:
    """lm-eval's output for one benchmark, plus where the data came from."""

    output: dict[str, Any]
    subjects: dict[str, str]  # lm-eval task name -> subject
    source: str
    report: LoadReport


def _task_manager(bench: Benchmark) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(bench.folder), include_defaults=False)


def load_tasks(bench: Benchmark, formulation: str, data_dir: Path | None,
               on_error: str) -> tuple[dict, str, LoadReport]:
    """lm-eval tasks of every subject: the hub dataset, or local files when ``data_dir`` is
    given."""
    manager = _task_manager(bench)
    report = LoadReport()
    if data_dir is None:
        names = [bench.task_name(s, formulation) for s in bench.hub_subjects]
        try:
            return manager.load(names), bench.hub_path, report
        except (OSError, ConnectionError, ValueError) as exc:
            raise DataError(
                f"{bench.name}: cannot load {bench.hub_path} from the Hugging Face hub "
                f"({type(exc).__name__}: {exc}); "
                f"without network pass --data-dir with the files in the original layout"
            ) from exc
    root = resolve_root(data_dir, (bench.fewshot_split, bench.eval_split))
    names = chinese_names(root) if bench.layout == "ceval" else {}
    template = template_config(bench, formulation)
    specs = []
    for subject in discover_subjects(root, bench.eval_split):
        dataset = load_subject(root, bench.layout, subject, (bench.fewshot_split, bench.eval_split),
                               on_error, report)
        fields = subject_fields(bench, subject, formulation, names)
        fields.pop("include")
        specs.append({**template, **fields, "dataset_path": str(root),
                      "custom_dataset": _Preloaded(dataset)})
    with _quiet_custom_dataset():
        return manager.load(specs), str(root), report


def prepared_tasks(bench: Benchmark, options: TaskOptions) -> tuple[dict, str, LoadReport]:
    """lm-eval's tasks of every subject, shots and few-shot seed set (what evaluate_text runs)."""
    formulation = options.formulation or "letter"
    check_formulation(formulation)
    shots = bench.default_fewshot if options.num_fewshot is None else options.num_fewshot
    loaded, source, report = load_tasks(bench, formulation, options.data_dir, options.on_error)
    for task in loaded["tasks"].values():
        local = options.data_dir is not None
        available = len(task.dataset[bench.fewshot_split]) if local else shots
        if shots > available:  # lm-eval would stop on a bare assert deep inside its sampler
            split = bench.fewshot_split
            csv = Path(source) / split / f"{task.config.dataset_name}_{split}.csv"
            raise DataError(
                f"{csv}: {available} usable rows, but {shots} few-shot examples are needed; add "
                f"rows or pass --num-fewshot {available}"
            )
        task.set_config(key="num_fewshot", value=shots)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return loaded, source, report


def evaluate_text(lm: LM, bench: Benchmark, options: TaskOptions) -> TextRun:
    """Build the tasks, set the shots, run lm-eval's ``evaluate`` with ``lm``."""
    from lm_eval.evaluator import evaluate

    loaded, source, report = prepared_tasks(bench, options)
    subjects = {name: task.config.dataset_name for name, task in loaded["tasks"].items()}
    with lean_prompt_building():
        output = evaluate(lm=lm, task_dict=loaded, limit=options.limit, bootstrap_iters=0,
                          log_samples=True)
    if output is None:
        raise RuntimeError("lm-eval returned no results (not rank 0)")
    return TextRun(output, subjects, source, report)


def sample_prompts(name: str, options: TaskOptions, per_subject: int = 1) -> list[str]:
    """The strings the text view scores (context + continuation) for the first ``per_subject``
    questions of every subject, built exactly as a run builds them."""
    loaded, _, _ = prepared_tasks(BENCHMARKS[name], options)
    prompts = []
    with lean_prompt_building():
        for task in loaded["tasks"].values():
            task.build_all_requests(limit=per_subject, rank=0, world_size=1)
            prompts += [context + continuation for context, continuation in
                        (instance.args for instance in task.instances)]
    return prompts


@contextlib.contextmanager
def lean_prompt_building() -> Iterator[None]:
    """Prompt building as lm-eval does it, minus two costs. lm-eval compiles a task's Jinja
    template anew for every document and field (4 to 7 s of a mini-world suite run); here each
    template is compiled once, by lm-eval's own Jinja environment, and rendered as before. It also
    draws a progress bar per subject (57 for MMLU, each gone in a blink); our scorer's bar covers
    the work that takes time, so those are silenced."""
    from functools import lru_cache, partial

    from lm_eval import utils as lm_utils
    from lm_eval.api import task as lm_task

    compile_once = lru_cache(maxsize=None)(lm_utils.env.from_string)
    originals = lm_task.tqdm, lm_utils.apply_template
    lm_task.tqdm = partial(lm_task.tqdm, disable=True)
    lm_utils.apply_template = lambda template, doc: compile_once(template).render(**doc)
    try:
        yield
    finally:
        lm_task.tqdm, lm_utils.apply_template = originals


def _samples(run: TextRun) -> list[SampleRecord]:
    """One record per question, ``doc_id = "<subject>/<index>"``; the response is the chosen
    option."""
    records = []
    for task_name, subject in sorted(run.subjects.items(), key=lambda kv: kv[1]):
        for example in run.output["samples"][task_name]:
            choices = [args[1] for args in example["arguments"]]
            lls = [float(r[0]) for r in example["filtered_resps"]]
            chosen = max(range(len(lls)), key=lambda i: lls[i])
            target = example["target"]
            target_text = choices[target] if isinstance(target, int) else str(target)
            records.append(
                SampleRecord(
                    doc_id=f"{subject}/{example['doc_id']}", prompt=example["arguments"][0][0],
                    target=target_text.strip(), response=choices[chosen].strip(),
                    correct=bool(example["acc"]),
                    group=subject, extra={"loglikelihoods": lls},
                )
            )
    return records


def to_result(name: str, run: TextRun, options: TaskOptions, lm: LM, wall_s: float) -> TaskResult:
    """Micro and macro accuracy, per-subject groups, samples and the recorded set-up."""
    samples = _samples(run)
    if not samples:
        raise DataError(f"{name}: no questions were scored "
                        "(empty task; check --data-dir and --limit)")
    groups: dict[str, dict[str, float]] = {}
    for record in samples:
        group = groups.setdefault(record.group or "", {"acc": 0.0, "n": 0})
        group["acc"] += record.correct
        group["n"] += 1
    for group in groups.values():
        group["acc"] /= group["n"]
    hits = [float(s.correct) for s in samples]
    acc = sum(hits) / len(hits)
    stderr = statistics.stdev(hits) / math.sqrt(len(hits)) if len(hits) > 1 else float("nan")
    task_names = {v: k for k, v in run.subjects.items()}
    first = next(iter(run.output["configs"].values()))
    return TaskResult(
        task=name,
        metrics={"acc": acc, "acc_stderr": stderr,
                 "acc_macro": statistics.fmean(g["acc"] for g in groups.values())},
        primary="acc",
        n=len(samples),
        groups=groups,
        skipped=run.report.skipped,
        skip_reasons=run.report.reasons,
        task_config={
            "num_fewshot": first.get("num_fewshot"),
            "formulation": options.formulation or "letter",
            "dataset": run.source,
            "fewshot_split": first.get("fewshot_split"),
            "fewshot_sampler": "first_n",
            "limit_per_subject": options.limit,
            "subjects": len(groups),
            "lm_eval_tasks": sorted(task_names.values())[:3]
            + (["..."] if len(task_names) > 3 else []),
            "example_prompt": samples[0].prompt + first.get("target_delimiter", " ")
            + samples[0].target,
        },
        requests=getattr(lm, "requests", 0),
        cached_requests=getattr(lm, "cached_requests", 0),
        wall_s=wall_s,
        samples=samples,
    )


@dataclass(frozen=True)
class TextTask:
    """A text benchmark (the :class:`~iaa_eval.tasks.Task` protocol)."""

    name: str
    modality: str = "text"

    @property
    def hub(self) -> str:
        """The hub dataset read when no data_dir is given."""
        return BENCHMARKS[self.name].hub_path

    def run(self, ctx: TaskContext) -> TaskResult:
        """Score the model's text view on every subject; cached requests are not recomputed."""
        from iaa_eval.tasks.lm_bridge import TextViewLM

        start = time.perf_counter()
        bench = BENCHMARKS[self.name]
        prefix_reuse = bool(ctx.options.extra.get("prefix_reuse", True))
        lm = TextViewLM(
            ctx.model.text_view(), ctx.request_path, batch_size=ctx.model.spec.batch_size,
            prefix_reuse=prefix_reuse,
        )
        run = evaluate_text(lm, bench, ctx.options)
        result = to_result(self.name, run, ctx.options, lm, time.perf_counter() - start)
        log.info("%s: %d requests, %d answered from the cache", self.name, lm.requests,
                 lm.cached_requests)
        return result


MMLU = TextTask("mmlu")
CEVAL = TextTask("ceval")
