"""The bad-input catalogue (``cases.py``): every broken input gives its documented exit code and a
one-line error naming the file and row/field, or, with ``--on-error skip``, a counted skip; an
input that only looks broken is read as its samples file shows."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from iaa_eval.cli import main
from tests.bad_inputs.cases import CASES, Case, Models, mmlu, render_doc, run, vqa

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

DOC = Path(__file__).resolve().parents[2] / "docs" / "bad_inputs.md"


@pytest.fixture(scope="module")
def models(tiny_llama_dir: Path, tiny_llava_dir: Path) -> Models:
    return Models(tiny_llama_dir, tiny_llava_dir)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own flag errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (case.env or {}).items():
        monkeypatch.setenv(name, value)
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("running as root, whom a read-only mode does not stop; run-dir-is-a-file checks the same path")
    argv = case.build(models, tmp_path)
    with case.during(tmp_path) if case.during else contextlib.nullcontext():
        code, out, err = _cli(argv, capsys)
    expected = case.message.replace("{d}", str(tmp_path))
    assert code == case.exit_code, err
    assert "Traceback" not in err and "Traceback" not in out
    if case.keeps is not None:
        results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
        assert case.keeps in results["results"]["base"], results["results"]
    if not expected:
        assert not err.strip(), err
        return
    if case.samples is not None:
        samples = (tmp_path / "runs" / "r" / case.samples).read_text(encoding="utf-8")
        assert expected in samples, f"expected {expected!r} in {case.samples}:\n{samples[:2000]}"
        return
    if case.skipped is None:
        said = [line for line in (err + out).splitlines() if expected in line]
        assert said, f"expected {expected!r} in:\n{err}{out}"
        return
    results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    (entry,) = [task for tasks in results["results"].values() for task in tasks.values()]
    assert entry["skipped"] == case.skipped and entry["n"] > 0
    assert expected in entry["skip_reasons"][0]


def test_a_failing_task_keeps_the_finished_ones(models: Models, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """mmlu finishes, then vqav2 hits a bad row: exit 2, and mmlu's results and samples are on disk."""
    def mismatch(_: dict, annotations: dict) -> None:
        annotations["annotations"][0]["question_id"] = 999

    argv = run(f"base=hf:{models.llama}", "mmlu,vqav2", None, tmp_path, "--log-samples",
               "--data-dir", f"mmlu={mmlu(tmp_path)}", "--data-dir", f"vqav2={vqa(tmp_path, mismatch)}")
    code, _, err = _cli(argv, capsys)
    assert code == 2 and "row without answer" in err
    results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    assert list(results["results"]["base"]) == ["mmlu"] and results["results"]["base"]["mmlu"]["n"] == 2
    assert (tmp_path / "runs" / "r" / "samples" / "base" / "mmlu.jsonl").read_text().count("\n") == 2


def test_catalogue_is_large_and_documented() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert DOC.read_text(encoding="utf-8") == render_doc(), (
        "docs/bad_inputs.md is stale: python -m tests.bad_inputs.cases > docs/bad_inputs.md"
    )
