"""Data parallel: two torchrun ranks (gloo, CPU) give exactly a single process's results; only
rank 0 writes files."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iaa_eval.cli import main
from iaa_eval.evaluate import RunConfig, TaskSpec, run
from iaa_eval.models.base import ModelSpec
from iaa_eval.runner.distributed import Shards
from iaa_eval.tasks import TaskOptions
from tests.tasks.conftest import write_mme
from tests.tasks.text_helpers import write_mmlu

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

REPO = Path(__file__).resolve().parents[2]


def _argv(model: Path, mmlu: Path, mme: Path, out: Path, run_id: str) -> list[str]:
    # batch size 1: every request is computed alone, so how requests are dealt to ranks cannot
    # change a single bit of the numbers compared below
    return ["run", "--model", f"llava=llava:{model}", "--tasks", "mmlu,mme", "--data-dir", f"mmlu={mmlu}",
            "--data-dir", f"mme={mme}", "--batch-size", "1", "--log-samples", "--output-path", str(out),
            "--run-id", run_id, "--threads", "1"]


def _outcome(run_dir: Path) -> dict[str, Any]:
    """Per task: everything but timings and the per-process vision-feature counters, plus samples."""
    results = json.loads((run_dir / "results.json").read_text())["results"]["llava"]
    out = {}
    for task, entry in results.items():
        entry.pop("wall_s")
        entry["task_config"].pop("feature_cache", None)
        out[task] = (entry, (run_dir / "samples" / "llava" / f"{task}.jsonl").read_text())
    return out


def _rows(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "cache.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def test_two_gloo_ranks_equal_one_process(tmp_path: Path, tiny_llava_dir: Path) -> None:
    mmlu = write_mmlu(tmp_path / "mmlu", {"algebra": 6, "biology": 5})  # odd totals: uneven shards
    mme = write_mme(tmp_path / "mme")
    assert main(_argv(tiny_llava_dir, mmlu, mme, tmp_path / "runs", "single")) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    done = subprocess.run([*torchrun, "-m", "iaa_eval", *_argv(tiny_llava_dir, mmlu, mme, tmp_path / "runs", "dp")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results: ") == 1  # rank 0 alone reports (and writes)
    shares = re.findall(r"rank (\d) of 2 holds (\d+) of (\d+) requests", done.stderr)
    held = {rank: sum(int(n) for r, n, _ in shares if r == rank) for rank in "01"}
    asked = {rank: sum(int(t) for r, _, t in shares if r == rank) for rank in "01"}
    assert asked["0"] == asked["1"] == held["0"] + held["1"] == 44 + 12 and min(held.values()) > 0
    single, dp = tmp_path / "runs" / "single", tmp_path / "runs" / "dp"
    assert _outcome(dp) == _outcome(single)
    assert _rows(dp) == _rows(single) == 44 + 12  # 11 questions x 4 options + 12 MME questions
    assert sorted(p.name for p in dp.rglob("*") if p.is_file() and "cache.sqlite" not in p.name) == [
        "mme.jsonl", "mmlu.jsonl", "results.json"]


@dataclass(frozen=True)
class _Rank1(Shards):
    """Rank 1 of 2 without a process group: computes every item itself (as if gathered)."""

    rank: int = 1
    world_size: int = 2

    def map(self, items: Sequence[Any], compute: Callable[[list[Any]], list[Any]]) -> list[Any]:
        return compute(list(items))

    def barrier(self) -> None:
        return None


def test_a_non_writer_rank_writes_nothing(tmp_path: Path, tiny_llava_dir: Path) -> None:
    options = {"mmlu": TaskOptions(data_dir=write_mmlu(tmp_path / "mmlu", {"algebra": 2}), limit=1),
               "mme": TaskOptions(data_dir=write_mme(tmp_path / "mme"), limit=1)}
    config = RunConfig((ModelSpec("llava", "llava", str(tiny_llava_dir), batch_size=1),),
                       tuple(TaskSpec(name, o) for name, o in options.items()), tmp_path / "run")
    run_dir = run(config, _Rank1())
    assert not (run_dir / "results.json").exists() and not (run_dir / "samples").exists()
    assert _rows(run_dir) == 0


def test_device_map_under_several_ranks_is_refused(tmp_path: Path, tiny_llama_dir: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]
    argv = ["run", "--model", f"base=hf:{tiny_llama_dir}", "--tasks", "mmlu",
            "--device-map", "auto", "--output-path", str(tmp_path / "runs"), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    done = subprocess.run([*torchrun, "-m", "iaa_eval", *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode != 0
    refusal = "iaa-eval: error: --device-map with 2 data-parallel processes (WORLD_SIZE=2): "
    assert done.stderr.count(refusal) == 2, done.stderr[-3000:]  # one line from each rank
    assert not (tmp_path / "runs").exists()
