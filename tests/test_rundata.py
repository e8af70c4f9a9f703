"""Reading a run: base detection, data sources, pairing, schema checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.rundata import RunData, pair, task_source
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
    assert task_source({"data_dir": "miniworld:data/mmlu"}) == "miniworld"
    assert task_source({"data_dir": None}) == "hub"
    assert task_source({"data_dir": "/data/MMLU"}) == "local"
    assert task_source({"data_source": "hub", "data_dir": "/x/miniworld/y"}) == "hub"


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


def test_source_falls_back_to_the_run_config(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "r")
    data = json.loads((run_dir / "results.json").read_text())
    for tasks in data["results"].values():
        for entry in tasks.values():
            entry["task_config"].pop("data_dir")
    (run_dir / "results.json").write_text(json.dumps(data))
    assert RunData(run_dir).source("mme") == "miniworld"  # from config.tasks[].options.data_dir
    data["config"]["tasks"] = []
    (run_dir / "results.json").write_text(json.dumps(data))
    assert RunData(run_dir).source("mme") == "hub"
