"""Smoke test of the vision-cache benchmark in its --tiny CPU mode."""

from __future__ import annotations

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "vision_cache_gpu.py"


def test_tiny_mode_encodes_each_image_once_and_answers_agree() -> None:
    report = runpy.run_path(str(SCRIPT))["main"](["--tiny", "--images", "3", "--batch", "2"])
    assert report["requests"] == 6 and report["cache_misses"] == 3 and report["cache_hits"] == 3
    assert report["vision_stage_speedup"] == 2.0 and report["answers_agree"] == 1.0


def test_tiny_iaa_mode_shares_prefixes_and_answers_agree() -> None:
    report = runpy.run_path(str(SCRIPT))["main"](["--tiny", "--family", "iaa", "--images", "3", "--batch", "2"])
    assert report["requests"] == 6 and report["answers_agree"] == 1.0 and report["shared_prefix_speedup"] > 0
