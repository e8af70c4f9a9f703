"""The command line: one-line errors with non-zero exits, and a torch-free `iaa-eval tasks`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iaa_eval import cli
from iaa_eval.cli import main
from iaa_eval.exits import INTERNAL_ERROR


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
        (["run", "--model", "a=hf:x", "--tasks", " , "], "--tasks ' , ': no task names"),
        (["run", "--model", "a=hf:x", "--tasks", "mmlu", "--run-id", ".."],
         "--run-id '..' points at"),
        (["run", "--model", "a/b=hf:x", "--tasks", "mmlu"],
         "model name 'a/b' holds a path separator"),
        (["miniworld", "build"], "miniworld build: give --out FOLDER (the shipped trio"),
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


def test_a_reader_that_goes_away_is_no_error(tmp_path: Path) -> None:
    """`iaa-eval miniworld info | head`: a stdout without a reader ends the command quietly (exit
    141, as a process killed by SIGPIPE), with no traceback and no 'Exception ignored' at exit."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        out = subprocess.run([sys.executable, "-m", "iaa_eval", "miniworld", "info"],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             check=False)
    finally:
        os.close(write_end)
    assert out.returncode == 141 and out.stderr == "", out.stderr


def test_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM to a running command: exit 130 and one line, as Ctrl-C (no traceback)."""
    code = (
        "import os, signal, sys; from iaa_eval import cli\n"
        "def work(args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    raise AssertionError('SIGTERM did not stop the command')\n"
        "cli.COMMANDS['tasks'] = work\n"
        "sys.exit(cli.main(['tasks']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         check=False)
    assert out.returncode == 130, out.stderr
    assert out.stderr == "iaa-eval: interrupted; finished work is cached, rerun to resume\n"


def test_a_bug_is_one_line_without_debug(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An exception that is not a user error is still one line (exit 3); --debug shows the
    traceback."""
    def broken(_: object) -> int:
        raise KeyError("oops")

    monkeypatch.setitem(cli.COMMANDS, "tasks", broken)
    assert main(["tasks"]) == INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.startswith("iaa-eval: internal error: KeyError: 'oops' (a bug in iaa-eval")
    assert err.count("\n") == 1
    with pytest.raises(KeyError):
        main(["--debug", "tasks"])
