"""Prompt snapshots for the text tasks: the exact context and continuations lm-eval builds for the
first questions of MMLU and C-Eval, in both formulations, on fixed fixture files.

A failure means a prompt changed (template, few-shot layout, description, answer delimiter).
If the change is intended, regenerate and review the diff:

    IAA_EVAL_UPDATE_SNAPSHOTS=1 PYTHONPATH=. python -m pytest -q tests/tasks/test_text_snapshots.py
    git diff tests/snapshots/
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iaa_eval.tasks.text import load_tasks
from iaa_eval.tasks.text_configs import CEVAL, MMLU
from tests.tasks.conftest import check_snapshot
from tests.tasks.text_helpers import write_ceval, write_mmlu

CASES = [("mmlu", "letter", 5), ("mmlu", "cloze", 0), ("ceval", "letter", 5), ("ceval", "cloze", 0)]


@pytest.mark.parametrize(("bench", "formulation", "shots"), CASES)
def test_text_prompt_snapshot(tmp_path: Path, bench: str, formulation: str, shots: int) -> None:
    spec = MMLU if bench == "mmlu" else CEVAL
    root = (write_mmlu if bench == "mmlu" else write_ceval)(tmp_path, {"high_school_physics": 3}, seed=7)
    loaded, _, _ = load_tasks(spec, formulation, root, "raise")
    task = next(iter(loaded["tasks"].values()))
    task.set_config(key="num_fewshot", value=shots)
    task.set_fewshot_seed(seed=1234)
    task.build_all_requests(limit=2)
    rendered: dict[str, dict[str, object]] = {}
    for inst in task.instances:
        entry = rendered.setdefault(str(inst.doc_id), {"context": inst.args[0], "continuations": []})
        entry["continuations"].append(inst.args[1])  # type: ignore[union-attr]
    check_snapshot(f"text_{bench}_{formulation}_{shots}shot", rendered)
