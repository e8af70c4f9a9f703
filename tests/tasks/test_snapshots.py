"""Prompt snapshots: the exact text the tiny llava is given for the first items of each multimodal task.

A failure here means a prompt changed (instruction, option layout, template). If the change is
intended, regenerate and review the diff:

    IAA_EVAL_UPDATE_SNAPSHOTS=1 PYTHONPATH=. python -m pytest -q tests/tasks/test_snapshots.py
    git diff tests/snapshots/
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from iaa_eval.models.base import MMRequest
from iaa_eval.tasks import mmbench, mme, vqav2
from iaa_eval.tasks.multimodal import Problems
from tests.tasks.conftest import check_snapshot, write_mmbench, write_mme, write_vqav2


def _items(task: str, root: Path) -> list:
    problems = Problems("raise")
    if task == "mme":
        return mme.load_local(write_mme(root), problems)[:3]
    if task.startswith("mmbench"):
        lang = task.rsplit("_", 1)[1]
        return mmbench.load(lang, write_mmbench(root / "dev.tsv", lang), {}, problems)[:4]
    return vqav2.load(write_vqav2(root), {}, problems)[:3]


@pytest.mark.parametrize("task", ["mme", "mmbench_en", "mmbench_cn", "vqav2"])
def test_prompt_snapshot(tiny_llava, tmp_path: Path, task: str) -> None:
    picture = Image.new("RGB", (8, 8))
    items = _items(task, tmp_path)
    rendered = [{"doc_id": it.doc_id, "prompt": tiny_llava.render_prompt(MMRequest(it.prompt, picture))}
                for it in items]
    rendered.append({"doc_id": f"{items[0].doc_id} (blind)", "prompt": tiny_llava.render_prompt(MMRequest(items[0].prompt))})
    check_snapshot(task, rendered)
