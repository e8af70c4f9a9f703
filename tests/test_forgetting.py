"""The forgetting analysis on fixture runs whose numbers are known from their samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iaa_eval.errors import UsageError
from iaa_eval.forgetting import analyse, compare_runs, export
from tests.runfixture import PARAMS, TEXT_SUBJECTS, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "run-a", seed=1)


@pytest.fixture(scope="module")
def analysis(run_dir: Path):  # noqa: ANN201
    return analyse(run_dir, resamples=1000)


def _correct(run_dir: Path, model: str, task: str) -> dict[str, bool]:
    lines = (run_dir / "samples" / model / f"{task}.jsonl").read_text().splitlines()
    return {r["doc_id"]: r["correct"] for r in map(json.loads, lines)}


def test_scores_match_results_json(run_dir: Path, analysis) -> None:
    results = json.loads((run_dir / "results.json").read_text())["results"]
    for row in analysis.scores.itertuples():
        entry = results[row.model][row.task]
        assert row.score == entry["metrics"][entry["primary"]]
        assert row.item_low <= row.item_mean <= row.item_high
    by_task = analysis.scores.set_index(["model", "task"])
    assert by_task.loc[("base", "mmlu"), "item_metric"]  # acc is the per-item mean
    assert not by_task.loc[("base", "mme"), "item_metric"]  # perception is a sum of subtask scores
    assert set(analysis.meta["text_tasks"]) == {"mmlu", "ceval"}
    assert analysis.meta["sources"]["mmlu"] == "miniworld"


def test_text_deltas_flips_and_mcnemar_from_samples(run_dir: Path, analysis) -> None:
    text = analysis.text.set_index(["model", "task"])
    for task in ("mmlu", "ceval"):
        base, llava = _correct(run_dir, "base", task), _correct(run_dir, "llava", task)
        r2w = sum(base[d] and not llava[d] for d in base)
        w2r = sum(llava[d] and not base[d] for d in base)
        row = text.loc[("llava", task)]
        assert (row.right_to_wrong, row.wrong_to_right) == (r2w, w2r)
        assert row.delta == pytest.approx((w2r - r2w) / len(base))
        assert row.delta == pytest.approx(row.delta_score)
        assert row.ci_low <= row.delta <= row.ci_high < 0  # the fixture's forgetting is clear
        assert row.mcnemar_p < 0.05
        assert row.retention == pytest.approx(row.score / row.base_score)
        iaa = text.loc[("iaa", task)]
        assert (iaa.delta, iaa.ci_low, iaa.ci_high, iaa.right_to_wrong, iaa.mcnemar_p) == (0, 0, 0, 0, 1.0)
        assert iaa.shared_with == "base"


def test_subjects_cover_every_subject_with_bh(analysis) -> None:
    subjects = analysis.subjects
    assert len(subjects) == 2 * sum(len(s) for s in TEXT_SUBJECTS.values())
    assert (subjects["p_bh"] >= subjects["mcnemar_p"] - 1e-12).all()
    mmlu = subjects[(subjects.model == "llava") & (subjects.task == "mmlu")]
    assert mmlu["n_paired"].sum() == analysis.text.set_index(["model", "task"]).loc[("llava", "mmlu"), "n_paired"]


def test_gain_over_blind_base(analysis) -> None:
    gain = analysis.gain.set_index(["model", "task"])
    assert set(gain.index.get_level_values("model")) == {"llava", "iaa"}
    for (_, task), row in gain.iterrows():
        assert row.gain == pytest.approx(row.score - row.blind_score)
        assert row.blind_is_blind
        assert row.item_gain_low <= row.item_gain <= row.item_gain_high
        if task == "mme":
            assert np.isnan(row.gain_low)  # no item-level CI for a sum of subtask scores
        else:
            assert row.gain_low <= row.gain <= row.gain_high


def test_retention_and_deployment(analysis) -> None:
    retention = analysis.retention.set_index("model")
    llava_text = analysis.text[analysis.text.model == "llava"]
    assert retention.loc["llava", "retention"] == pytest.approx(llava_text["retention"].mean())
    assert retention.loc["llava", "text_delta_low"] <= retention.loc["llava", "text_delta"] <= retention.loc["llava", "text_delta_high"]
    assert retention.loc["iaa", "flips"] == 0 and retention.loc["base", "retention"] == 1.0
    deploy = analysis.deployment.set_index("option")
    assert deploy.loc["base + llava", "params"] == PARAMS["base"]["total"] + PARAMS["llava"]["total"]
    assert deploy.loc["base + llava", "bytes"] == PARAMS["base"]["bytes"] + PARAMS["llava"]["bytes"]
    assert deploy.loc["iaa alone", "params"] == PARAMS["iaa"]["total"]
    assert deploy.loc["iaa alone", "text_retention"] == 1.0
    assert deploy.loc["llava alone", "text_retention"] == pytest.approx(retention.loc["llava", "retention"])


def test_analysis_is_reproducible_and_checks_resamples(run_dir: Path, analysis) -> None:
    again = analyse(run_dir, resamples=1000)
    for name, frame in analysis.tables().items():
        pd.testing.assert_frame_equal(frame, again.tables()[name], obj=name)
    with pytest.raises(UsageError, match="at least 1000"):
        analyse(run_dir, resamples=10)


def test_without_samples_deltas_have_no_ci(tmp_path: Path) -> None:
    result = analyse(make_run(tmp_path / "r", with_samples=False), resamples=1000)
    row = result.text.set_index(["model", "task"]).loc[("llava", "mmlu")]
    assert row.delta == row.delta_score and np.isnan(row.get("ci_low", np.nan))
    assert result.subjects.empty


def test_iaa_flips_are_counted(tmp_path: Path) -> None:
    result = analyse(make_run(tmp_path / "r", iaa_flips=3), resamples=1000)
    iaa = result.text[(result.text.model == "iaa") & (result.text.task == "mmlu")].iloc[0]
    assert iaa.right_to_wrong + iaa.wrong_to_right == 3
    assert (result.deployment["option"] == "base + iaa").any()  # its text weights changed


def test_export_csv_and_json(tmp_path: Path, analysis) -> None:
    paths = export(analysis, "csv", tmp_path / "csv")
    assert sorted(p.name for p in paths) == sorted(f"{n}.csv" for n in analysis.tables())
    text = pd.read_csv(tmp_path / "csv" / "text.csv")
    assert text["right_to_wrong"].tolist() == analysis.text["right_to_wrong"].tolist()
    (path,) = export(analysis, "json", tmp_path / "json")
    data = json.loads(path.read_text())  # strict JSON: NaN became null
    assert data["meta"]["base"] == "base"
    assert data["gain"][0]["gain_low"] is None  # mme
    with pytest.raises(UsageError, match="'xml'"):
        export(analysis, "xml", tmp_path)


def test_compare_runs(tmp_path: Path, run_dir: Path) -> None:
    same = compare_runs(run_dir, run_dir)
    assert (same["delta"] == 0).all() and not same["regressed"].any()
    worse = make_run(tmp_path / "worse", seed=1, mm_shift=-0.45)
    table = compare_runs(run_dir, worse).set_index(["model", "task"])
    assert table.loc[("iaa", "mmbench_en"), "regressed"]
    assert not table.loc[("iaa", "mmlu"), "regressed"]
