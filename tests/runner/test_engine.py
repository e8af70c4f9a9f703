"""The run engine: model x task matrix, request cache reuse, blind runs, shared text results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iaa_eval.evaluate import RunConfig, TaskSpec, data_source, run
from iaa_eval.miniworld import ASSETS
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.rundir import TaskResult, read_results, read_samples
from iaa_eval.runner.cache import RequestCache
from iaa_eval.tasks import TASKS, TaskContext
from iaa_eval.tasks.multimodal import generate


class ToyImageTask:
    """Three colour questions on two images; correct when the answer is non-empty."""

    name = "toy_image"
    modality = "image"
    hub = "toy/images"

    def run(self, ctx: TaskContext) -> TaskResult:
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
        requests = [MMRequest(f"Question {i}?", images[i % 2], max_new_tokens=3) for i in range(3)]
        answers = generate(ctx, requests)
        result = TaskResult(self.name, {"acc": 1.0}, "acc", n=len(answers))
        return result


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
    assert len(read_samples(run_dir, "llava", "toy_image")) == 0

    first = json.loads((run_dir / "results.json").read_text())
    run(config)
    second = read_results(run_dir)
    assert second["results"]["llava"]["toy_image"]["cached_requests"] == 3
    for model in ("base", "llava"):
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
