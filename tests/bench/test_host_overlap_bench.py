"""bench/host_overlap_gpu.py in its --tiny CPU mode: every combination runs, and the prepare
thread changes no answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "host_overlap_gpu.py"


@pytest.mark.parametrize("family", ["llava", "iaa"])
def test_tiny_mode_runs_every_combination_with_the_same_answers(family: str, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("host_overlap_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--tiny", "--family", family, "--batches", "auto", "2",
                          "--out", str(tmp_path / "r.json")])
    assert (tmp_path / "r.json").is_file() and report["requests"] == {"vqav2": 6, "mme": 6}
    for runs in report["results"].values():
        assert [(r["batch"], r["overlap"]) for r in runs] == [("auto", True), ("auto", False),
                                                               (2, True), (2, False)]
        assert all(r["answers_equal_inline"] for r in runs[::2])
        assert [r["rows"] for r in runs][2:] == [2, 2]
