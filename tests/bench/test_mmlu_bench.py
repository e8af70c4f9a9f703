"""Smoke test of the GPU benchmark script in its --tiny CPU mode."""

from __future__ import annotations

from pathlib import Path

from tests.bench.conftest import load_bench


def test_tiny_mode_runs_and_agrees(tmp_path: Path) -> None:
    module = load_bench("mmlu_gpu")
    out = tmp_path / "tiny.json"
    report = module.main(["--tiny", "--out", str(out)])
    assert out.is_file() and report["workload"]["questions"] == 6 and report["workload"]["subjects"] == 3
    assert set(report["runs"]) == {"ours", "ours_no_reuse", "hflm_fixed"}
    for name in ("ours", "ours_no_reuse"):
        agreement = report["runs"][name]["agreement_with_hflm_fixed"]
        assert agreement["same"] == 1.0 and agreement["abs_ll_diff_max"] < 1e-4
    assert report["runs"]["ours"]["tokens_run"] < report["workload"]["context_tokens_total"]  # prefix reuse
    assert report["ratios"]["ours_vs_hflm_fixed"] > 0 and report["peak_matmul_tflops"] > 0
    host = report["runs"]["ours"]["host"]
    assert 0 < host["encode_s"] <= host["host_s"] and 0 < host["before_first_forward_s"]
    args = module.parse(["--data-dir", "x"])
    assert (args.per_subject, args.shots, args.hflm_batches, args.device) == (35, 5, [16, "auto"], "cuda")
    assert module.parse(["--hflm-batches", "16"]).hflm_batches == [16]
