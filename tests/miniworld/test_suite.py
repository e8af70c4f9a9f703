"""The embedded default, end to end: the shipped mini-world trio through `iaa-eval run --suite
forgetting`, checked against its reference results and gated (the project's CI is the gate's
first user)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iaa_eval.miniworld.reference import load_reference, summarise
from iaa_eval.resources import GATE_THRESHOLDS, MINIWORLD_ASSETS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (MINIWORLD_ASSETS / "manifest.json").exists(), reason="no shipped mini-world")


def _flat(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf of a summary with its path (``scores.iaa.mme.perception``,
    ``text_forgetting[2].delta``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flat(item, f"{path}[{index}]")
    else:
        yield path, value


def _same(a: Any, b: Any) -> bool:
    both_floats = isinstance(a, float) and isinstance(b, float)
    return a == b or (both_floats and math.isnan(a) and math.isnan(b))


def _rows(table: list[dict], model: str) -> dict[str, dict]:
    return {row["task"]: row for row in table if row["model"] == model}


def test_reference_shows_forgetting_and_its_absence() -> None:
    ref = load_reference()
    assert ref["scores"]["base"]["mmlu"]["acc"] >= 0.80  # the base knows its world (chance: 0.25)
    llava, iaa = _rows(ref["text_forgetting"], "llava"), _rows(ref["text_forgetting"], "iaa")
    assert llava["mmlu"]["delta"] < 0 and llava["mmlu"]["ci_high"] < 0 and llava["mmlu"]["mcnemar_p"] < 0.01
    for task in ("mmlu", "ceval"):
        assert iaa[task]["delta"] == 0 and iaa[task]["right_to_wrong"] == iaa[task]["wrong_to_right"] == 0
    gains = {(r["model"], r["task"]): r for r in ref["multimodal_gain"]}
    assert abs(gains["iaa", "vqav2"]["score"] - gains["llava", "vqav2"]["score"]) < 0.05
    assert gains["iaa", "vqav2"]["score"] - gains["iaa", "vqav2"]["blind_score"] > 0.5


def test_a_fresh_run_reproduces_the_reference_and_passes_the_gate(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "iaa_eval"]
    run = subprocess.run([*cli, "run", "--suite", "forgetting", "--output-path", str(tmp_path), "--run-id", "ci"],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    # exact, item by item: every score, delta, CI bound, flip count, p-value and gain of the
    # reference (a fresh run reproduces it bit for bit; a tolerance would hide ~10 MMLU items)
    fresh, ref = dict(_flat(summarise(tmp_path / "ci"))), dict(_flat(load_reference()))
    differ = {k: (fresh.get(k, "absent"), ref.get(k, "absent")) for k in fresh.keys() | ref.keys()
              if not _same(fresh.get(k, "absent"), ref.get(k, "absent"))}
    assert not differ, f"fresh run vs reference (fresh, reference): {dict(sorted(differ.items()))}"
    gate = subprocess.run([*cli, "gate", str(tmp_path / "ci"), "--thresholds", GATE_THRESHOLDS],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr
