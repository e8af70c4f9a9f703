"""MMLU / C-Eval end to end: identical per-item predictions to lm-eval's HFLM, results, the cache."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from iaa_eval.errors import DataError
from iaa_eval.models import load_model
from iaa_eval.models.base import ModelSpec, TextView
from iaa_eval.models.loglik.scorer import FastScorer
from iaa_eval.runner.cache import RequestCache
from iaa_eval.runner.requests import RequestPath
from iaa_eval.tasks import TASKS, TaskContext, TaskOptions
from iaa_eval.tasks.lm_bridge import TextViewLM
from iaa_eval.tasks.text import evaluate_text, lean_prompt_building, to_result
from iaa_eval.tasks.text_configs import CEVAL, MMLU, TASKS_DIR, Benchmark
from tests.conftest import shared_path
from tests.tasks.text_helpers import copy_subjects, hflm, tiny_model, write_ceval, write_mmlu


def _records(lm: object, bench: Benchmark, options: TaskOptions) -> dict[str, tuple[str, list[float]]]:
    result = to_result(bench.name, evaluate_text(lm, bench, options), options, lm, 0.0)
    return {s.doc_id: (s.response, s.extra["loglikelihoods"]) for s in result.samples}


def _assert_same(bench: Benchmark, data: Path, options: TaskOptions, reuse: bool) -> FastScorer:
    """Our scorer and HFLM on one fresh random tiny Llama: same choice per item, same values."""
    model, tokenizer = tiny_model(random.randrange(1 << 30))
    reference = _records(hflm(model, tokenizer, batch_size=8), bench, options)
    lm = TextViewLM(TextView(model, tokenizer, "fp"), prefix_reuse=reuse, progress=False)
    ours = _records(lm, bench, options)
    assert ours.keys() == reference.keys() and len(ours) > 0
    assert {k: v[0] for k, v in ours.items()} == {k: v[0] for k, v in reference.items()}
    worst = max(abs(a - b) for k in ours for a, b in zip(ours[k][1], reference[k][1], strict=True))
    assert worst < 1e-4, worst
    return lm.scorer


@pytest.mark.parametrize("formulation", ["letter", "cloze"])
@pytest.mark.parametrize("reuse", [True, False], ids=["prefix-reuse", "no-reuse"])
def test_predictions_identical_to_hflm(tmp_path: Path, formulation: str, reuse: bool) -> None:
    data = write_mmlu(tmp_path, {"anatomy": 4, "virology": 3, "world_religions": 3}, seed=random.randrange(1000))
    options = TaskOptions(data_dir=data, num_fewshot=5, formulation=formulation)
    scorer = _assert_same(MMLU, data, options, reuse)
    if formulation == "letter":  # 10 questions, one row each: packed several to a forward
        assert scorer.forwards < 10
        if reuse:  # each subject's 5-shot prefix ran once: one segment per subject
            assert sum(segments for _, _, segments in scorer.shapes) == 3, scorer.shapes


def test_zero_shot_and_ceval_identical_to_hflm(tmp_path: Path) -> None:
    data = write_mmlu(tmp_path / "mmlu", {"anatomy": 3, "virology": 3})
    _assert_same(MMLU, data, TaskOptions(data_dir=data, num_fewshot=0), reuse=True)
    data = write_ceval(tmp_path / "ceval", {"accountant": 3, "law": 2})
    _assert_same(CEVAL, data, TaskOptions(data_dir=data, num_fewshot=2, formulation="cloze"), reuse=True)


def test_real_mmlu_prompts_identical_to_hflm(tmp_path: Path) -> None:
    source = shared_path("data", "mmlu", "original_layout", "data")
    data = copy_subjects(source, tmp_path, ["abstract_algebra", "anatomy"], ("dev", "test"))
    _assert_same(MMLU, data, TaskOptions(data_dir=data, num_fewshot=5, limit=3), reuse=True)
    _assert_same(MMLU, data, TaskOptions(data_dir=data, num_fewshot=5, limit=1, formulation="cloze"), reuse=True)


def _context(tiny_llama_dir: Path, cache: RequestCache, **options: object) -> TaskContext:
    model = load_model(ModelSpec("base", "hf", str(tiny_llama_dir), batch_size="auto"))
    return TaskContext(model=model, options=TaskOptions(**options), request_path=RequestPath(cache))


def test_mmlu_task_result_and_cached_rerun(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_mmlu(tmp_path / "data", {"anatomy": 3, "virology": 2})
    cache = RequestCache(tmp_path / "cache.sqlite")
    task = TASKS.get("mmlu")
    assert task.modality == "text"
    result = task.run(_context(tiny_llama_dir, cache, data_dir=tmp_path / "data", num_fewshot=1, formulation="cloze"))
    assert result.primary == "acc" and result.n == 5 and set(result.groups) == {"anatomy", "virology"}
    assert result.groups["virology"]["n"] == 2
    correct = sum(s.correct for s in result.samples)
    assert result.metrics["acc"] == pytest.approx(correct / 5)
    macro = (result.groups["anatomy"]["acc"] + result.groups["virology"]["acc"]) / 2
    assert result.metrics["acc_macro"] == pytest.approx(macro)
    assert [s.doc_id for s in result.samples] == ["anatomy/0", "anatomy/1", "anatomy/2", "virology/0", "virology/1"]
    sample = result.samples[0]
    assert sample.correct == (sample.response == sample.target)
    config = result.task_config
    assert (config["num_fewshot"], config["formulation"], config["dataset"]) == (1, "cloze", str(data))
    assert config["example_prompt"].startswith("The following are questions (with answers) about anatomy.")
    assert result.requests == 20 and result.cached_requests == 0
    again = task.run(_context(tiny_llama_dir, cache, data_dir=tmp_path / "data", num_fewshot=1, formulation="cloze"))
    assert (again.requests, again.cached_requests) == (20, 20)
    assert [s.response for s in again.samples] == [s.response for s in result.samples]
    cache.close()


def test_ceval_defaults_skips_and_errors(tmp_path: Path, tiny_llama_dir: Path) -> None:
    data = write_ceval(tmp_path / "ceval", {"accountant": 3})
    with (data / "val" / "accountant_val.csv").open("a", encoding="utf-8") as handle:
        handle.write("9,q,a,b,c,d,X\n")
    cache = RequestCache(tmp_path / "cache.sqlite")
    with pytest.raises(DataError, match=r"accountant_val.csv:5: answer 'X' is not one of A, B, C, D"):
        TASKS.get("ceval").run(_context(tiny_llama_dir, cache, data_dir=data))
    result = TASKS.get("ceval").run(_context(tiny_llama_dir, cache, data_dir=data, on_error="skip"))
    assert (result.n, result.skipped, result.task_config["num_fewshot"]) == (3, 1, 5)
    assert result.task_config["formulation"] == "letter" and "答案：" in result.task_config["example_prompt"]
    (tmp_path / "empty" / "dev").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(DataError, match="the task would be empty"):
        TASKS.get("ceval").run(_context(tiny_llama_dir, cache, data_dir=tmp_path / "empty"))
    cache.close()


def test_hub_without_network_names_data_dir(monkeypatch: pytest.MonkeyPatch, tiny_llama_dir: Path, tmp_path: Path) -> None:
    import datasets

    def offline(*_: object, **__: object) -> None:
        raise ConnectionError("Couldn't reach 'cais/mmlu' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"cannot load cais/mmlu from the Hugging Face hub .* pass --data-dir"):
        TASKS.get("mmlu").run(_context(tiny_llama_dir, RequestCache(tmp_path / "c.sqlite")))


def test_prompt_building_draws_no_bar_per_subject(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_mmlu(tmp_path, {"anatomy": 2, "virology": 2, "world_religions": 2})
    model, tokenizer = tiny_model(random.randrange(1 << 30))
    lm = TextViewLM(TextView(model, tokenizer, "fp"), progress=False)
    evaluate_text(lm, MMLU, TaskOptions(data_dir=data, num_fewshot=1))
    assert "it/s]" not in capsys.readouterr().err  # lm-eval's per-subject bars stayed silent
    from lm_eval.api import task as lm_task
    from tqdm import tqdm

    assert lm_task.tqdm is tqdm  # and lm-eval's own bar is back for everyone else


def test_lean_prompt_building_renders_like_lm_eval_and_compiles_each_template_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from lm_eval import utils as lm_utils

    fields = ("doc_to_text", "doc_to_choice", "doc_to_target")
    configs = [yaml.safe_load((TASKS_DIR / name).read_text()) for name in
               ("mmlu/_cloze_template_yaml", "mmlu/_letter_template_yaml", "ceval/_cloze_template_yaml",
                "ceval/_letter_template_yaml")]
    templates = sorted({c[f] for c in configs for f in fields if isinstance(c[f], str)})
    rng = random.Random(7)
    words = ["tunnel", "铁路", "  spaced  ", "a{b}", "x\ny", "%s", "ünï"]
    docs = [{"question": " ".join(rng.choices(words, k=4)), "choices": rng.sample(words, 4), "subject": "s",
             **{k: rng.choice(words) for k in "ABCD"}, "answer": rng.choice("ABCD") if i % 2 else rng.randrange(4)}
            for i in range(40)]
    renderable = [(t, d) for t in templates for d in docs if "index(answer)" not in t or isinstance(d["answer"], str)]
    expected = [lm_utils.apply_template(t, d) for t, d in renderable]
    compiled: list[str] = []
    real = lm_utils.env.from_string
    monkeypatch.setattr(lm_utils.env, "from_string", lambda source: compiled.append(source) or real(source))
    original = lm_utils.apply_template
    with lean_prompt_building():
        assert [lm_utils.apply_template(t, d) for t, d in renderable] == expected
    assert sorted(compiled) == templates
    assert lm_utils.apply_template is original
