"""Crash and resume: a real run killed (SIGKILL) or interrupted (SIGINT) mid-task, then rerun.

The rerun must give exactly the uninterrupted run's results (metrics and every per-sample record,
log-likelihoods included, bit for bit), say how many cached requests it reused, and the cache
must be intact: ``PRAGMA integrity_check`` is ok and every row parses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iaa_eval.cli import main
from tests.tasks.text_helpers import write_mmlu

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

REPO = Path(__file__).resolve().parents[2]
SUBJECTS = {f"subject_{i}": 150 for i in range(4)}  # 600 questions, 2400 requests: ~10 cache commits
TOTAL_REQUESTS = 4 * sum(SUBJECTS.values())


def _argv(model: Path, data: Path, out: Path, run_id: str) -> list[str]:
    return ["run", "--model", f"base=hf:{model}", "--tasks", "mmlu", "--data-dir", str(data), "--output-path",
            str(out), "--run-id", run_id, "--batch-size", "4", "--log-samples", "--threads", "1"]


def _rows(cache: Path) -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def _interrupt(argv: list[str], run_dir: Path, sig: int, tmp: Path) -> tuple[int, str, int]:
    """Start the CLI in a subprocess, send ``sig`` once some requests are cached; returns
    (exit code, stderr, cached rows when stopped)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    err = tmp / f"stderr-{sig}.txt"
    with err.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "iaa_eval", *argv], stdout=subprocess.DEVNULL, stderr=handle,
                                env=env, cwd=tmp)
        deadline = time.monotonic() + 120
        while _rows(run_dir / "cache.sqlite") == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    rows = _rows(run_dir / "cache.sqlite")
    assert 0 < rows < TOTAL_REQUESTS, f"stopped with {rows}/{TOTAL_REQUESTS} requests cached: not mid-run"
    assert not (run_dir / "results.json").exists(), "the task finished before it was stopped"
    return code, err.read_text(), rows


def _check_cache(cache: Path) -> None:
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for (value,) in db.execute("SELECT value FROM requests"):
            logprob, greedy = json.loads(value)  # every row parses into (log-likelihood, is_greedy)
            assert isinstance(logprob, float) and isinstance(greedy, bool)


def _outcome(run_dir: Path) -> tuple[dict, str]:
    """What must not depend on interruptions: the task results (minus timings and cache counts) and
    the per-sample records, byte for byte."""
    entry = json.loads((run_dir / "results.json").read_text())["results"]["base"]["mmlu"]
    for volatile in ("wall_s", "cached_requests"):
        entry.pop(volatile)
    return entry, (run_dir / "samples" / "base" / "mmlu.jsonl").read_text()


def _resume(argv: list[str], run_dir: Path, rows: int, caplog: pytest.LogCaptureFixture) -> None:
    _check_cache(run_dir / "cache.sqlite")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="iaa_eval"):
        assert main(argv) == 0
    assert f"reused {rows} cached requests from an earlier attempt" in caplog.text
    assert f"({rows}/{TOTAL_REQUESTS} requests cached)" in caplog.text
    assert json.loads((run_dir / "results.json").read_text())["results"]["base"]["mmlu"]["cached_requests"] == rows
    _check_cache(run_dir / "cache.sqlite")


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> tuple[Path, Path, tuple[dict, str]]:
    """(data dir, model dir, the uninterrupted run's outcome)."""
    root = tmp_path_factory.mktemp("resume")
    data = write_mmlu(root / "mmlu", SUBJECTS, dev=5)
    import torch

    threads = torch.get_num_threads()
    assert main(_argv(tiny_llama_dir, data, root / "runs", "reference")) == 0
    torch.set_num_threads(threads)
    return data, tiny_llama_dir, _outcome(root / "runs" / "reference")


def test_sigkill_then_rerun_equals_an_uninterrupted_run(
    setting: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, model, reference = setting
    argv = _argv(model, data, tmp_path / "runs", "killed")
    run_dir = tmp_path / "runs" / "killed"
    code, _, rows = _interrupt(argv, run_dir, signal.SIGKILL, tmp_path)
    assert code == -signal.SIGKILL
    _resume(argv, run_dir, rows, caplog)
    assert _outcome(run_dir) == reference


def test_sigint_is_one_clean_line_exit_130_and_nothing_lost(
    setting: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, model, reference = setting
    argv = _argv(model, data, tmp_path / "runs", "interrupted")
    run_dir = tmp_path / "runs" / "interrupted"
    code, stderr, rows = _interrupt(argv, run_dir, signal.SIGINT, tmp_path)
    assert code == 130
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"iaa-eval: error: interrupted: finished requests are kept in {re.escape(str(run_dir / 'cache.sqlite'))}; "
        r"rerun the same command to resume", last), last
    _resume(argv, run_dir, rows, caplog)
    assert _outcome(run_dir) == reference
