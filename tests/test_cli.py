"""The command line: one-line errors with non-zero exits, and a torch-free `iaa-eval tasks`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iaa_eval.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--model", "base=nope:x", "--tasks", "mmlu"], "unknown model kind 'nope'"),
        (["run", "--model", "base=hf", "--tasks", "mmlu"], "expected NAME=KIND:PATH"),
        (["run", "--model", "base=hf:./does-not-exist", "--tasks", "mmlu"], "no such directory"),
        (["run", "--model", "base=hf:x", "--tasks", "mmluu"], "Did you mean: mmlu"),
        (["run", "--model", "base=hf:x", "--tasks", "mmlu", "--suite", "text"], "exactly one of --tasks and --suite"),
        (["run", "--suite", "nope"], "no such suite"),
        (["run", "--suite", "text"], "has no default models"),
        (["run", "--model", "a=hf:x", "--model", "a=hf:y", "--tasks", "mmlu"], "duplicate model names"),
        (["run", "--model", "a=hf:x", "--tasks", "mmlu", "--data-dir", "/nonexistent/dir"], "no such directory"),
    ],
)
def test_bad_input_is_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("limit", ["0", "-3", "x"])
def test_limit_must_be_positive(limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "a=hf:x", "--tasks", "mmlu", "--limit", limit])
    assert exc.value.code == 2
    assert "--limit" in capsys.readouterr().err


def test_tasks_lists_names_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from iaa_eval.cli import main; rc = main(['tasks']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    assert "mmlu" in out.stdout and "suite forgetting" in out.stdout
