"""Reading a run: base detection, recorded modality and data source, pairing, schema checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.rundir import RunData, TaskResult, pair
from tests.runfixture import make_run


def test_base_detection_and_sources(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    data = json.loads((run / "results.json").read_text())
    data["models"]["other"] = {**data["models"]["base"]}
    data["models"]["base2"] = data["models"].pop("base")
    data["results"]["base2"] = data["results"].pop("base")
    (run / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="cannot tell the base model"):
        RunData(run).base_model()


def test_pairing_and_bad_results(tmp_path: Path) -> None:
    run = RunData(make_run(tmp_path / "r"))
    base, llava = run.items("base", "mmlu"), run.items("llava", "mmlu")
    short = llava.select(list(llava.doc_ids[5:]))
    a, b = pair(base, short)
    assert a.doc_ids == b.doc_ids == llava.doc_ids[5:]
    assert run.items("base", "nope") is None
    assert run.modality("mmlu") == "text" and run.modality("vqav2") == "image"
    assert run.contains_weights_of("iaa", "base") and not run.contains_weights_of("llava", "base")
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    del data["results"]["llava"]["mmlu"]["metrics"]["acc"]
    (tmp_path / "r" / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"results\.llava\.mmlu lacks 'metrics'"):
        RunData(tmp_path / "r")


def test_modality_and_source_are_read_as_recorded(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r")
    assert RunData(run_dir).source("mme") == "miniworld"
    assert RunData(make_run(tmp_path / "h", real=True)).source("mme") == "hub"
    data = json.loads((run_dir / "results.json").read_text())
    data["results"]["base"]["mmlu"]["source"] = "local:/data/MMLU"
    data["results"]["base"]["mme"]["modality"] = "text"  # the name says nothing: the record does
    (run_dir / "results.json").write_text(json.dumps(data))
    run = RunData(run_dir)
    assert (run.source("mmlu"), run.modality("mme")) == ("local", "text")
    del data["results"]["llava"]["vqav2"]["modality"]
    (run_dir / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"results\.llava\.vqav2\.modality"):
        RunData(run_dir)
    data["results"]["llava"]["vqav2"]["modality"] = "image"
    data["results"]["llava"]["vqav2"]["source"] = "/data/vqav2"
    (run_dir / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"results\.llava\.vqav2\.source"):
        RunData(run_dir)


def test_a_version_1_run_asks_for_a_rerun(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r")
    data = json.loads((run_dir / "results.json").read_text())
    data["schema_version"] = 1
    (run_dir / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"schema_version 1, expected 2 .*rerun its `iaa-eval run`"):
        RunData(run_dir)


def test_the_writer_refuses_a_result_without_modality_or_source() -> None:
    result = TaskResult("mme", {"acc": 1.0}, "acc", 1)
    with pytest.raises(ValueError, match="modality '' / source '' not set"):
        result.to_json()
    result.modality, result.source = "image", "hub:lmms-lab/MME"
    assert result.to_json()["source"] == "hub:lmms-lab/MME"
