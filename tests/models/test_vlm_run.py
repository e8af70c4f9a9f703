"""``iaa-eval run --vlm DIR`` end to end on tiny checkpoints: text and image tasks, a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iaa_eval.cli import main
from tests.tasks.conftest import write_mmbench, write_mme, write_vqav2
from tests.tasks.text_helpers import write_mmlu
from tests.vlm_checkpoints import save_family

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava_next", "gemma3"])
def test_run_and_report_on_a_tiny_vlm(
    model_type: str, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """The README's families (Qwen2.5-VL, LLaVA-NeXT) and one with a sliding window (Gemma 3)."""
    folder = save_family(model_type, tmp_path / model_type)
    data = {
        "mmlu": write_mmlu(tmp_path / "mmlu", {"s": 2}),
        "mme": write_mme(tmp_path / "mme"),
        "mmbench_en": write_mmbench(tmp_path / "mmbench" / "dev_en.tsv", "en"),
        "vqav2": write_vqav2(tmp_path / "vqa", n=2),
    }
    argv = [
        "run",
        "--vlm",
        str(folder),
        "--base",
        str(tiny_llama_dir),
        "--tasks",
        ",".join(data),
        "--output-path",
        str(tmp_path / "runs"),
        "--run-id",
        "r",
        "--threads",
        "1",
        "--limit",
        "2",
    ]
    for task, path in data.items():
        argv += ["--data-dir", f"{task}={path}"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    assert set(results["results"]["vlm"]) == set(data)
    assert (
        results["results"]["vlm"]["mme"]["blind"] is False
        and results["results"]["base"]["mme"]["blind"] is True
    )
    params = results["models"]["vlm"]["parameters"]
    assert params["total"] > params["text"] > 0  # the text view: decoder and head only
    assert main(["report", str(tmp_path / "runs" / "r"), "--out", str(tmp_path / "reports")]) == 0
    assert list((tmp_path / "reports").rglob("*.html"))
