"""bench/suite_gpu.py at tiny shapes on CPU: its data in the original layouts reads back through
the task loaders, its saved trio loads through the adapters, and its full-size arithmetic."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.bench.conftest import load_bench
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_bench("suite_gpu")


def test_synthesised_data_reads_back_and_the_trio_loads(bench, tmp_path: Path) -> None:
    from iaa_eval.models import load_model
    from iaa_eval.models.base import ModelSpec
    from iaa_eval.tasks import mmbench, mme, vqav2
    from iaa_eval.tasks.multimodal import Problems

    seed = random.randrange(1000)
    print(f"seed {seed}")  # noqa: T201
    args = bench.parse(["--tiny", "--source", str(shared_path("data")), "--seed", str(seed)])
    work = bench.synthesise(args, tmp_path / "data", bench.TEXT_TASKS + bench.MM_TASKS)
    sizes = work["sizes"]
    assert sizes["mmlu"] == sizes["ceval"] == 6  # 3 subjects x 2
    assert work["full_sizes"]["mmlu"] > sizes["mmlu"]
    problems = Problems("raise")
    assert len(mme.load_local(tmp_path / "data" / "mme", problems)) == sizes["mme"] >= 3
    passes = mmbench.load("en", tmp_path / "data" / "mmbench_en", {}, problems)
    assert (
        len(passes) == sizes["mmbench_en"]
        and len({p.meta["index"] % 1_000_000 for p in passes}) == 2
    )
    assert len(vqav2.load(tmp_path / "data" / "vqav2", {}, problems)) == sizes["vqav2"] == 4
    assert all(r["prompt"] for task in bench.MM_TASKS for r in work["requests"][task])
    import yaml

    suite = bench.suite_file(tmp_path, bench.MM_TASKS)  # what `ours` runs: the shipped suite's
    assert yaml.safe_load(suite.read_text())["real_tasks"] == list(bench.MM_TASKS)

    tokenizer = bench.build_tokenizer(bench.corpus(tmp_path / "data"), 600)
    trio = bench.build_trio(tokenizer, tiny=True, device="cpu", seed=seed)
    folders, seconds = bench.save_trio(trio, tokenizer, [tmp_path])
    assert set(seconds) == {"base", "llava", "iaa"}
    loaded = {
        name: load_model(
            ModelSpec(name=name, kind={"base": "hf"}.get(name, name), path=str(folders[name]))
        )
        for name in folders
    }
    assert loaded["iaa"].fingerprint("text") == loaded["base"].fingerprint(
        "text"
    )  # IAA shares the base's text
    assert loaded["llava"].fingerprint("text") != loaded["base"].fingerprint(
        "text"
    )  # LLaVA's LM is its own


def test_full_size_account_counts_the_auto_probe_once(bench) -> None:
    rng = random.Random()
    probe, rate, questions, full = (
        rng.uniform(10, 60),
        rng.uniform(10, 40),
        rng.randrange(50, 300),
        14079,
    )
    anchors = {
        "mmlu": [
            {"batch": 32, "items_per_s": rate},
            {
                "batch": "auto",
                "picked": [32],
                "questions": questions,
                "wall_s": probe + questions / rate,
                "items_per_s": questions / (probe + questions / rate),
            },
        ],
        "mme": [{"batch": 1, "items_per_s": 2.0}, {"batch": 8, "items_per_s": 10.0}],
    }
    ours = {
        "tasks": {
            "base/mmlu": {"wall_s": 5.0, "requests": 500},
            "iaa/mmlu": {"wall_s": 0.0, "requests": 500},
        },
        "model_load_s": {"base": 3.0, "iaa": 2.0},
        "wall_s": 20.0,
        "results_wall_s": 19.0,
    }
    report = {"ours": ours, "anchors": anchors, "full_sizes": {"mmlu": full, "mme": 100}}
    account = bench.whole_suite([report], {"iaa/mme": 4.0})
    assert account["anchors"]["mmlu"]["default_s"] == pytest.approx(2 * (probe + full / rate))
    assert (
        account["anchors"]["mme"]["best_batch"] == "8"
        and account["anchors"]["mme"]["default_s"] == 100.0
    )
    assert account["ours_task_s"]["iaa/mme"] == 25.0 and account["ours_task_s"]["iaa/mmlu"] == 0.0
    assert account["ours_total_s"] == pytest.approx(5.0 * full / 500 + 25.0 + 5.0 + 1.0)


def test_timeline_reads_loads_task_spans_and_host_waits(bench) -> None:
    """Lines as `iaa-eval run` prints them (copied from a mini-world run)."""
    lines = [
        "INFO loading llava (llava:/tmp/llava)",
        "INFO llava/mmlu: acc=0.8649 n=1014 (0/4056 requests cached) in 3.7s",
        "INFO mme: 600 samples, 0 skipped, 2.1s (0.4s of it waiting for host work: tokenizing, "
        "image preprocessing), vision features: {'hits': 300, 'misses': 300}",
        "INFO llava/mme: perception=0.0000 n=600 (0/600 requests cached) in 2.1s",
    ]
    loads, done, waits = bench.timeline([(10.0 + i, line) for i, line in enumerate(lines)])
    assert loads == {"llava": 10.0}
    assert done == {("llava", "mmlu"): (11.0 - 3.7, 11.0), ("llava", "mme"): (13.0 - 2.1, 13.0)}
    assert waits == {("llava", "mme"): 0.4}
