"""The gate's three exit codes, its strict thresholds loader and its breach table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.gate import GateThresholds, MultimodalRule, TextRule, load_thresholds, run_gate
from iaa_eval.resources import GATE_THRESHOLDS as GATE_YAML
from tests.runfixture import make_run


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("gate") / "good", seed=2)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    return path


def test_shipped_thresholds_parse() -> None:
    thresholds = load_thresholds(GATE_YAML)
    assert isinstance(thresholds, GateThresholds)
    assert TextRule(kind="iaa", max_flips=0) in thresholds.text
    assert all(isinstance(r, MultimodalRule) for r in thresholds.multimodal)
    assert thresholds.regression is not None and thresholds.regression.tolerance == 0.0


def test_exit_0_on_a_good_run(good_run: Path) -> None:
    outcome = run_gate(good_run, GATE_YAML, against=good_run)
    assert outcome.exit_code == 0, outcome.table()
    assert not outcome.failed and outcome.table().startswith("gate passed")
    rules = {r.rule for r in outcome.rows}
    assert {"text.iaa.max_flips", "text.llava.report", "regression"} <= rules
    assert all(r.status == "report" for r in outcome.rows if r.rule == "text.llava.report")


def test_exit_1_when_iaa_flips_one_item(tmp_path: Path) -> None:
    outcome = run_gate(make_run(tmp_path / "r", seed=2, iaa_flips=1), GATE_YAML)
    assert outcome.exit_code == 1
    failed = {(r.rule, r.model, r.task) for r in outcome.failed}
    assert failed == {("text.iaa.max_flips", "iaa", "mmlu"), ("text.iaa.max_flips", "iaa", "ceval")}
    table = outcome.table()
    assert "FAIL" in table and "text.iaa.max_flips" in table and "1 flips" in table and "<= 0" in table


def test_exit_1_on_floor_and_regression(tmp_path: Path, good_run: Path) -> None:
    worse = make_run(tmp_path / "worse", seed=2, mm_shift=-0.45)
    outcome = run_gate(worse, GATE_YAML, against=good_run)
    assert outcome.exit_code == 1
    failed = {(r.rule.split(".")[-1], r.model, r.task) for r in outcome.failed}
    assert ("min_gain", "llava", "mmbench_en") in failed
    assert ("regression", "iaa", "mmbench_en") in failed
    assert ("regression", "iaa", "mmlu") not in failed  # text did not change between the runs
    row = next(r for r in outcome.failed if r.rule == "regression" and r.task == "mme")
    assert row.value < 0 and "perception" in row.detail


def test_max_drop_rule(tmp_path: Path, good_run: Path) -> None:
    path = _write(tmp_path, "version: 1\ntext:\n  llava: {max_drop: 0.001}\n  iaa: {max_drop: 0.0, tasks: [mmlu]}\n")
    outcome = run_gate(good_run, path)
    assert outcome.exit_code == 1
    assert {(r.model, r.status) for r in outcome.rows} == {("llava", "fail"), ("iaa", "pass")}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("version: 1\ntext:\n  iaa: {max_flip: 0}\n", "text.iaa: unknown key 'max_flip'; allowed: max_flips"),
        ("version: 1\nthresholds: {}\n", "unknown key 'thresholds'"),
        ("version: 1\nmultimodal:\n  - {kind: iaa, task: mme, minimum: 3}\n", "multimodal[0]: unknown key 'minimum'"),
        ("version: 1\ntext:\n  iaa: {max_flips: zero}\n", "text.iaa.max_flips: expected an int"),
        ("version: 2\n", "version: expected 1, got 2"),
        ("version: 1\nmultimodal:\n  - {kind: iaa}\n", "multimodal[0]: "),
        ("version: 1\ntext: [1, 2]\n", "text: expected a mapping"),
        ("version: [1\n", "not valid YAML"),
        ("version: 1\nmultimodal:\n  - {kind: iaa, task: mmbench_cn, min: 0.5}\n", "unknown task 'mmbench_cn' for model 'iaa'"),
        ("version: 1\ntext:\n  iaa: {max_flips: 0, tasks: [mmlu_pro]}\n", "unknown task 'mmlu_pro'"),
        ("version: 1\nmultimodal:\n  - {kind: iaa, task: mme, metric: precision, min: 1}\n", "unknown metric 'precision'"),
        ("version: 1\ntext:\n  qwen: {max_flips: 0}\n", "no model of kind 'qwen'"),
        ("version: 1\ntext:\n  hf: {max_flips: 0}\n", "is the base model itself"),
        ("version: 1\nregression: {tolerance: 0, tasks: [gqa]}\n", "rule regression: unknown task 'gqa'"),
    ],
)
def test_exit_2_on_bad_thresholds(tmp_path: Path, good_run: Path, yaml_text: str, message: str) -> None:
    outcome = run_gate(good_run, _write(tmp_path, yaml_text), against=good_run)
    assert outcome.exit_code == 2
    assert message in outcome.errors[0]
    assert outcome.table().startswith("unusable input: ")
    if "unknown key" in message:
        assert str(tmp_path / "gate.yaml") in outcome.errors[0]  # the file is named


def test_exit_2_on_missing_files_and_schema_mismatch(tmp_path: Path, good_run: Path) -> None:
    assert "nope.yaml: cannot read" in run_gate(good_run, tmp_path / "nope.yaml").errors[0]
    missing = run_gate(tmp_path / "no-run", GATE_YAML)
    assert missing.exit_code == 2 and "no results.json" in missing.errors[0]
    run = make_run(tmp_path / "old-schema", seed=2)
    data = json.loads((run / "results.json").read_text())
    data["schema_version"] = 0
    (run / "results.json").write_text(json.dumps(data))
    outcome = run_gate(run, GATE_YAML)
    assert outcome.exit_code == 2 and "schema_version 0, expected 2" in outcome.errors[0]


def test_exit_2_when_samples_are_missing(tmp_path: Path) -> None:
    outcome = run_gate(make_run(tmp_path / "r", with_samples=False), GATE_YAML)
    assert outcome.exit_code == 2
    assert "samples/iaa/mmlu.jsonl is missing" in outcome.errors[0] and "--log-samples" in outcome.errors[0]


def test_loader_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="gate.yaml: unknown key 'typo'"):
        load_thresholds(_write(tmp_path, "version: 1\ntypo: 1\n"))
