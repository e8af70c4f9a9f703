"""Every shipped text-task YAML loads through lm-eval and agrees with its generator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from lm_eval.config.task import TaskConfig
from lm_eval.tasks._yaml_loader import load_yaml

from iaa_eval.errors import UsageError
from iaa_eval.tasks.text_configs import (
    BENCHMARKS,
    CEVAL,
    MMLU,
    TASKS_DIR,
    description,
    group_config,
    subject_fields,
)

SHIPPED = sorted(p for b in BENCHMARKS.values() for p in b.folder.rglob("*.yaml"))
TEMPLATES = sorted(p for b in BENCHMARKS.values() for p in b.folder.rglob("*_template_yaml"))


def test_counts() -> None:
    # (57 MMLU + 52 C-Eval subjects) x (letter, cloze), plus one group per benchmark and formulation
    assert len(SHIPPED) == 2 * (57 + 52) + 4
    assert len(TEMPLATES) == 4
    assert TASKS_DIR == Path(__file__).resolve().parents[2] / "iaa_eval" / "data" / "tasks"


@pytest.mark.parametrize("path", SHIPPED + TEMPLATES, ids=lambda p: p.name)
def test_yaml_loads_and_matches_the_generator(path: Path) -> None:
    config = load_yaml(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    bench = BENCHMARKS[path.parent.name]
    if "group" in config:
        formulation = "cloze" if config["group"].endswith("_continuation") else "letter"
        assert raw == group_config(bench, formulation)
        return
    if "task" in raw:
        formulation = "cloze" if raw["task"].endswith("_continuation") else "letter"
        assert raw == subject_fields(bench, raw["dataset_name"], formulation)
    task = TaskConfig(**{"task": "probe", **config})
    assert task.output_type == "multiple_choice" and task.fewshot_split == "dev"
    assert [m["metric"] for m in task.metric_list] == ["acc"]


def test_descriptions_and_names() -> None:
    assert description(MMLU, "high_school_us_history", "letter") == (
        "The following are multiple choice questions (with answers) about high school us history.\n\n"
    )
    assert MMLU.task_name("anatomy", "cloze") == "mmlu_anatomy_continuation"
    assert CEVAL.task_name("law", "letter") == "ceval-valid_law"
    assert description(CEVAL, "accountant", "letter").startswith("以下是中国关于注册会计师的单项选择题")
    assert "关于geo of veloria的" in description(CEVAL, "geo_of_veloria", "letter", {})
    with pytest.raises(UsageError, match="formulation 'mc': expected one of letter, cloze"):
        MMLU.task_name("anatomy", "mc")


def test_task_manager_indexes_the_folder() -> None:
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(MMLU.folder), include_defaults=False)
    assert "mmlu" in manager.all_groups and "mmlu_continuation" in manager.all_groups
    assert len([t for t in manager.all_subtasks if t.startswith("mmlu_")]) == 2 * 57
