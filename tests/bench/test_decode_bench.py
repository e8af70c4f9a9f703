"""Smoke test of the decode benchmark in its --tiny CPU mode (the same code as on the GPU, less
the compile, which ``generate`` applies on CUDA only)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "decode_gpu.py"


def test_tiny_mode_runs_every_case_with_equal_answers(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    report = runpy.run_path(str(SCRIPT))["main"](["--tiny", "--device", "cpu", "--new-tokens", "4",
                                                  "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    cases = report["cases"]
    assert [(c["case"], c["batch"]) for c in cases][:2] == [("llava image", 1), ("iaa image", 1)]
    assert len(cases) == 8 and not any("error" in c or "skipped" in c for c in cases)
    for case in cases:
        assert case["answers"]["identical"] and case["static"]["repeatable"]
        assert not case["static"]["compiled"] and case["static"]["cache_len"] % 256 == 0
        assert case["dynamic"]["ms_per_token_mean"] > 0 and case["static"]["prefill_ms"] > 0


def test_a_divergence_is_located_and_weighed_by_the_eager_logits() -> None:
    bench = runpy.run_path(str(SCRIPT))
    model = bench["build_llava"]("tiny", "cpu", torch.float32)
    case = bench["Case"]("llava", model, torch.tensor([[5, 6, 7, 8]]), {})
    eager, static = torch.tensor([[9, 10, 11]]), torch.tensor([[9, 12, 11]])
    out = bench["agreement"](case, eager, static)
    assert out["identical_fraction"] == pytest.approx(2 / 3) and not out["identical"]
    where = out["first_divergence"]
    assert (where["row"], where["position"], where["static_token"]) == (0, 1, 12)
    logits = model(input_ids=torch.tensor([[5, 6, 7, 8, 9]])).logits[0, -1]
    assert abs(where["eager_logit_margin"] - (logits[10] - logits[12]).item()) < 1e-5


def test_the_deadline_skips_what_would_not_fit() -> None:
    report = runpy.run_path(str(SCRIPT))["main"](["--tiny", "--device", "cpu", "--deadline", "1",
                                                  "--only", "llava image,llama text@3"])
    assert [(c["case"], c["batch"]) for c in report["cases"]] == [
        ("llava image", 1), ("llava image", 3), ("llama text", 3)]
    assert all(c["skipped"].startswith("deadline") for c in report["cases"])
