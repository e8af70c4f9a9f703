"""The lm-eval task configs of MMLU and C-Eval: templates in ``iaa_eval/data/tasks/``, per-subject
fields here.

One function, :func:`subject_fields`, writes what a subject adds to its template (name,
description, dataset name). ``python -m iaa_eval.tasks.generate_configs`` writes the per-subject
YAMLs from it, and local data (any subjects, e.g. the mini-world's) are configured from it at run
time, so the two cannot drift; a test compares every shipped YAML with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iaa_eval.errors import UsageError
from iaa_eval.resources import TASKS as TASKS_DIR
from iaa_eval.tasks.text_subjects import CEVAL_SUBJECTS, MMLU_SUBJECTS

FORMULATIONS = ("letter", "cloze")


@dataclass(frozen=True)
class Benchmark:
    """What differs between MMLU and C-Eval.

    Args:
        name: our task name (``mmlu``, ``ceval``).
        prefix: lm-eval's task-name prefix (``mmlu``, ``ceval-valid``).
        hub_path: the hub dataset lm-eval names.
        layout: CSV layout of local files (``mmlu``: no header; ``ceval``: header).
        eval_split: the split scored (``test``; C-Eval ``val``, its test answers are not public).
        default_fewshot: shots when the user gives none.
    """

    name: str
    prefix: str
    hub_path: str
    layout: str
    eval_split: str
    default_fewshot: int = 5
    fewshot_split: str = "dev"

    @property
    def folder(self) -> Path:
        """``iaa_eval/data/tasks/<name>``."""
        return TASKS_DIR / self.name

    @property
    def hub_subjects(self) -> list[str]:
        """Subjects of the hub dataset."""
        return sorted(MMLU_SUBJECTS if self.name == "mmlu" else CEVAL_SUBJECTS)

    def template(self, formulation: str) -> str:
        """File name of the template YAML (in :attr:`folder`)."""
        check_formulation(formulation)
        return f"_{formulation}_template_yaml"

    def task_name(self, subject: str, formulation: str) -> str:
        """lm-eval's name: ``mmlu_anatomy``; cloze: ``mmlu_anatomy_continuation``."""
        check_formulation(formulation)
        return f"{self.prefix}_{subject}" + ("_continuation" if formulation == "cloze" else "")

    def group_name(self, formulation: str) -> str:
        """``mmlu`` / ``mmlu_continuation`` (``ceval-valid`` ...)."""
        return self.prefix + ("_continuation" if formulation == "cloze" else "")


MMLU = Benchmark("mmlu", "mmlu", "cais/mmlu", "mmlu", "test")
CEVAL = Benchmark("ceval", "ceval-valid", "ceval/ceval-exam", "ceval", "val")
BENCHMARKS = {b.name: b for b in (MMLU, CEVAL)}


def check_formulation(formulation: str) -> None:
    """``letter`` or ``cloze``, else a usage error."""
    if formulation not in FORMULATIONS:
        raise UsageError(f"formulation {formulation!r}: expected one of {', '.join(FORMULATIONS)}")


def description(bench: Benchmark, subject: str, formulation: str,
                names: dict[str, str] | None = None) -> str:
    """The task description lm-eval puts before the shots (``names``: C-Eval's Chinese subject
    names)."""
    if bench.name == "mmlu":
        words = " ".join(subject.split("_"))
        kind = "multiple choice questions" if formulation == "letter" else "questions"
        return f"The following are {kind} (with answers) about {words}.\n\n"
    zh = ((names or {}).get(subject)
          or CEVAL_SUBJECTS.get(subject, (subject.replace("_", " "), ""))[0])
    if formulation == "letter":
        return f"以下是中国关于{zh}的单项选择题，请选出其中的正确答案。\n\n"
    return f"以下是中国关于{zh}的问题及其答案。\n\n"


def subject_fields(bench: Benchmark, subject: str, formulation: str,
                   names: dict[str, str] | None = None) -> dict[str, Any]:
    """What one subject's YAML adds to its template."""
    return {
        "task": bench.task_name(subject, formulation),
        "task_alias": subject,
        "dataset_name": subject,
        "description": description(bench, subject, formulation, names),
        "include": bench.template(formulation),
    }


def group_config(bench: Benchmark, formulation: str) -> dict[str, Any]:
    """The aggregate over all hub subjects (micro average, as lm-eval reports MMLU)."""
    return {
        "group": bench.group_name(formulation),
        "task": [bench.task_name(s, formulation) for s in bench.hub_subjects],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
        "metadata": {"version": 1},
    }


def chinese_names(data_root: Path) -> dict[str, str]:
    """C-Eval's ``subject_mapping.json`` next to local data (``{subject: [en, zh, category]}``), if
    any."""
    for path in (data_root / "subject_mapping.json", data_root.parent / "subject_mapping.json"):
        if path.is_file():
            mapping = json.loads(path.read_text(encoding="utf-8"))
            return {k: v[1] for k, v in mapping.items() if isinstance(v, list) and len(v) > 1}
    return {}


def template_config(bench: Benchmark, formulation: str) -> dict[str, Any]:
    """The template YAML, parsed by lm-eval's own loader."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(bench.folder / bench.template(formulation))
