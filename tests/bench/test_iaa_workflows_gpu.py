"""Smoke test of the GPU benchmark script in its --tiny CPU mode."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "iaa_workflows_gpu.py"


def test_tiny_mode_runs_and_reports_both_workflows(tmp_path: Path) -> None:
    main = runpy.run_path(str(SCRIPT))["main"]
    out = tmp_path / "r.json"
    report = main(["--tiny", "--device", "cpu", "--prompt-len", "8", "--decode-tokens", "2", "--warmup", "0",
                   "--iters", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["predicted_decoder_ratio"] == 46 / 32 and len(report["insert_after_layers"]) == 14
    assert set(report["workflows"]) == {"text", "mm"} and report["ratio_mm_over_text"]["decode_latency"] > 0
