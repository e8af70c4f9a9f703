"""The run engine: model x task matrix, request cache reuse, blind runs, shared text results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaa_eval.errors import OutputError, UsageError
from iaa_eval.evaluate import RunConfig, TaskSpec, data_source, run
from iaa_eval.miniworld import ASSETS
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.rundir import SampleRecord, TaskResult, read_results, read_samples
from iaa_eval.runner.cache import RequestCache
from iaa_eval.tasks import TASKS, TaskContext
from iaa_eval.tasks.multimodal import generate


class ToyImageTask:
    """Three colour questions on two images; an answer is right when it has an even number of
    characters (a metric the model's answers decide, so a rerun that answered otherwise shows)."""

    name = "toy_image"
    modality = "image"
    hub = "toy/images"

    def run(self, ctx: TaskContext) -> TaskResult:
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
        requests = [MMRequest(f"Question {i}?", images[i % 2], max_new_tokens=3) for i in range(3)]
        answers = generate(ctx, requests)
        samples = [SampleRecord(str(i), r.prompt, "even", a, len(a) % 2 == 0)
                   for i, (r, a) in enumerate(zip(requests, answers, strict=True))]
        acc = float(np.mean([s.correct for s in samples]))
        return TaskResult(self.name, {"acc": acc}, "acc", n=len(answers), samples=samples)


class ToyTextTask:
    """Counts how often it really ran (to prove result sharing)."""

    name = "toy_text"
    modality = "text"
    hub = "toy/text"
    calls = 0

    def run(self, ctx: TaskContext) -> TaskResult:
        ToyTextTask.calls += 1
        view = ctx.model.text_view()
        assert view.fingerprint
        return TaskResult(self.name, {"acc": 0.5}, "acc", n=2)


@pytest.fixture(autouse=True, scope="module")
def toy_tasks() -> None:
    TASKS.add("toy_image", ToyImageTask())
    TASKS.add("toy_text", ToyTextTask())


def test_run_writes_results_and_reruns_from_cache(tmp_path: Path, tiny_llama_dir: Path, tiny_llava_dir: Path) -> None:
    models = (
        ModelSpec("base", "hf", str(tiny_llama_dir)),
        ModelSpec("llava", "llava", str(tiny_llava_dir)),
        ModelSpec("twin", "hf", str(tiny_llama_dir)),
    )
    config = RunConfig(models, (TaskSpec("toy_text"), TaskSpec("toy_image")), tmp_path / "run")
    ToyTextTask.calls = 0
    run_dir = run(config)
    data = read_results(run_dir)
    assert set(data["results"]) == {"base", "llava", "twin"}
    assert data["results"]["base"]["toy_image"]["blind"] is True
    assert data["results"]["llava"]["toy_image"]["blind"] is False
    assert data["results"]["llava"]["toy_image"]["cached_requests"] == 0
    llava, base = data["results"]["llava"], data["results"]["base"]
    assert (llava["toy_image"]["modality"], base["toy_text"]["modality"]) == ("image", "text")
    assert llava["toy_image"]["source"] == "hub:toy/images"
    # the twin has the base's text fingerprint: its text result is shared, not recomputed
    assert ToyTextTask.calls == 2
    assert data["results"]["twin"]["toy_text"]["task_config"]["shared_with"] == "base"
    # blind questions of the twin are the base's: answered from the cache
    assert data["results"]["twin"]["toy_image"]["cached_requests"] == 3
    assert data["models"]["llava"]["parameters"]["total"] > data["models"]["llava"]["parameters"]["text"]
    answers = {m: [s.response for s in read_samples(run_dir, m, "toy_image")]
               for m in ("base", "llava")}
    for model, said in answers.items():  # the recorded metric is the one the answers give
        assert len(said) == 3
        expected = np.mean([len(a) % 2 == 0 for a in said])
        assert data["results"][model]["toy_image"]["metrics"]["acc"] == expected

    first = json.loads((run_dir / "results.json").read_text())
    run(config)
    second = read_results(run_dir)
    assert second["results"]["llava"]["toy_image"]["cached_requests"] == 3
    for model in ("base", "llava"):  # answered from the cache: the same answers, the same score
        assert [s.response for s in read_samples(run_dir, model, "toy_image")] == answers[model]
        assert second["results"][model]["toy_image"]["metrics"] == first["results"][model]["toy_image"]["metrics"]


def test_data_source_names_the_hub_the_miniworld_or_a_folder(tmp_path: Path) -> None:
    task = TASKS.get("toy_image")
    assert data_source(task, None) == "hub:toy/images"
    assert data_source(task, ASSETS / "data" / "mme") == "miniworld:data/mme"
    assert data_source(task, tmp_path) == f"local:{tmp_path.resolve()}"


def test_cache_round_trip_and_count(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put_many("fp", [("a", {"x": 1}), ("b", "yes"), ("c", [1.5, True])])
    assert cache.get_many("fp", ["a", "b", "c", "d"]) == {"a": {"x": 1}, "b": "yes", "c": [1.5, True]}
    assert cache.get_many("other", ["a"]) == {}
    assert cache.count() == 3 and cache.count("fp") == 3
    assert (cache.hits, cache.reused) == (3, 0)  # rows this attempt wrote are hits, not reuse
    cache.close()
    again = RequestCache(tmp_path / "c.sqlite")
    again.put_many("fp", [("d", 4)])
    assert again.get_many("fp", ["b", "d"]) == {"b": "yes", "d": 4}
    assert (again.hits, again.reused) == (2, 1)


def test_a_rerun_never_drops_earlier_results(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """Rerunning a run directory with more tasks resumes it; with fewer or other ones it is refused
    before any work, and results.json still holds the earlier tasks."""
    base = (ModelSpec("base", "hf", str(tiny_llama_dir)),)
    run(RunConfig(base, (TaskSpec("toy_text"),), tmp_path / "run"))
    run(RunConfig(base, (TaskSpec("toy_text"), TaskSpec("toy_image")), tmp_path / "run"))
    assert list(read_results(tmp_path / "run")["results"]["base"]) == ["toy_text", "toy_image"]
    with pytest.raises(UsageError, match=r"would drop from its results.json \(base/toy_text\)"):
        run(RunConfig(base, (TaskSpec("toy_image"),), tmp_path / "run"))
    with pytest.raises(UsageError, match=r"\(base/toy_text, base/toy_image\)"):
        other = (ModelSpec("other", "hf", str(tiny_llama_dir)),)
        run(RunConfig(other, (TaskSpec("toy_text"),), tmp_path / "run"))
    assert list(read_results(tmp_path / "run")["results"]["base"]) == ["toy_text", "toy_image"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", "", "a\nb"])
def test_names_that_would_leave_the_run_directory_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="model name"):
        ModelSpec(name, "hf", "x")
    with pytest.raises(UsageError, match="task alias"):
        TaskSpec("toy_text", alias=name)


def test_a_full_disk_under_the_cache_is_one_line_and_keeps_what_was_stored(tmp_path: Path) -> None:
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put_many("fp", [("a", "kept")])
    pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
    cache._db.execute(f"PRAGMA max_page_count = {pages}")  # sqlite's own 'database or disk is full'
    with pytest.raises(OutputError, match=r"cannot write .*c\.sqlite \(database or disk is full\)"):
        cache.put_many("fp", [(f"k{i}", "x" * 4096) for i in range(50)])
    assert cache.get_many("fp", ["a", "k0"]) == {"a": "kept"}
    cache.close()
