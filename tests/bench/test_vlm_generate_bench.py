"""bench/vlm_generate_gpu.py at tiny shapes on CPU (float32): every code path of the GPU call,
its report's structure, ours answering exactly as plain ``generate`` does, and the real shapes'
parameter counts (counted on the meta device)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.bench.conftest import load_bench
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_bench("vlm_generate_gpu")


def test_tiny_run_reports_both_families_and_ours_agrees_with_plain_generate(
    bench, tmp_path: Path
) -> None:
    seed = random.randrange(1000)
    print(f"seed {seed}")  # noqa: T201
    out = tmp_path / "report.json"
    # real MME questions where this machine has them, made-up ones otherwise
    report = bench.main(
        ["--tiny", "--seed", str(seed), "--source", str(SHARED_DATA), "--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["work"]["extrapolated_to"] == 2374
    assert report["work"]["requests"] == 2 * report["work"]["images"] == 6
    real = {"qwen2_5_vl": 8.29e9, "llava_next": 8.36e9}  # the model cards' sizes
    assert set(report["models"]) == set(real)
    for name, model in report["models"].items():
        assert abs(model["parameters_real_shape"] - real[name]) < 0.01e9, name
        assert model["tokens"]["image_tokens_min"] > 0
        ours = model["ours"]
        assert ours["requests"] == 6 and ours["requests_per_s"] > 0
        assert ours["feature_cache"] == {"hits": 3, "misses": 3}  # two questions per image
        assert ours["shared_prefix_batches"] <= ours["shared_prefix_rows"]
        assert [p["batch"] for p in model["plain"]] == [1, 2]
        assert all(p["requests"] == 4 and "error" not in p for p in model["plain"])
        assert "pixels" in model["ours_variants"]
        # float32 on CPU: the adapter's batching, feature cache and shared prefix change nothing
        for key, agreed in model["agreement"].items():
            assert agreed["compared"] == 4 and agreed["fraction_identical"] == 1.0, (
                name,
                key,
                agreed["differences"],
            )
        assert set(model["summary"]) >= {
            "ours_requests_per_s",
            "plain_best_batch",
            "speedup_vs_batch_1",
            "agreement_vs_batch_1",
        }
    # the family that allows a shared image prefix was also run without it
    assert "answers" in report["models"]["llava_next"]["ours_variants"]["no_shared_prefix"]
    assert "skipped" in report["models"]["qwen2_5_vl"]["ours_variants"]["no_shared_prefix"]


def test_agreement_names_the_first_diverging_token(bench) -> None:
    from tests.conftest import build_tokenizer

    tokenizer = build_tokenizer()
    result = bench.agreement(["yes it is", "no"], ["yes it is", "yes"], ["q1", "q2"], tokenizer)
    assert result["compared"] == 2 and result["identical"] == 1
    (diff,) = result["differences"]
    assert diff["index"] == 1 and diff["first_diverging_token"]["position"] == 0
    assert diff["first_diverging_token"]["ours"] != diff["first_diverging_token"]["plain"]
