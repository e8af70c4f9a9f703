"""bench/host_overlap_gpu.py in its --tiny CPU mode: every combination runs, the prepare thread
changes no answer, the profile names our stages, and a deadline keeps what ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.conftest import load_bench


@pytest.mark.parametrize("family", ["llava", "iaa"])
def test_tiny_mode_runs_every_combination_with_the_same_answers(family: str, tmp_path: Path) -> None:
    module = load_bench("host_overlap_gpu")
    report = module.main(["--tiny", "--family", family, "--batches", "auto", "2", "--profile",
                          "--out", str(tmp_path / "r.json")])
    assert (tmp_path / "r.json").is_file() and report["requests"] == {"vqav2": 6, "mme": 6}
    for name, runs in report["results"].items():
        assert [(r["batch"], r["overlap"], r["switch_interval_s"]) for r in runs] == [
            ("auto", False, 0.005), (2, False, 0.005), ("auto", True, 0.005),
            ("auto", True, 0.0005), (2, True, 0.005), (2, True, 0.0005)]
        assert all(r["answers_equal_inline"] for r in runs if r["overlap"])
        assert [r["rows"] for r in runs if r["batch"] == 2] == [2, 2, 2]
        assert all(0 <= r["host_wait_s"] and 0 < r["host_work_s"] for r in runs)
        stages = report["profiles"][name]["stages"]
        assert stages["iaa_eval.generate"]["calls"] >= 1 and "iaa_eval.encode_images" in stages
    assert report["not_run_past_deadline"] == []


def test_deadline_keeps_what_ran(tmp_path: Path) -> None:
    module = load_bench("host_overlap_gpu")
    report = module.main(["--tiny", "--batches", "2", "--switch-intervals", "0.005",
                          "--deadline", "0"])
    assert report["results"] == {"vqav2": [], "mme": []} and len(report["not_run_past_deadline"]) == 4
