"""Model parallel (``--device-map``): where each module goes, and that a split model answers as
the unsplit one does.

CPU CI has no second device, so the split runs on accelerate's hooks with the GPUs of a computed
map replaced: GPU 0 by ``cpu``, GPU 1 by ``disk`` (offloaded: parameters on ``meta``, each block's
weights fetched by its hook at every forward, as a GPU fetches a block offloaded to the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate import dispatch_model
from accelerate.utils import compute_module_sizes

from iaa_eval.cli import main
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.models.hf_causal import HFCausalModel
from iaa_eval.models.iaa import placement as iaa_placement
from iaa_eval.models.iaa.adapter import IAAModel
from iaa_eval.models.iaa.modeling import IAAForCausalLM
from iaa_eval.models.iaa.placement import placement_groups
from iaa_eval.models.loglik.scorer import FastScorer
from iaa_eval.models.placement import group_device_map
from iaa_eval.models.vlm import VLMModel
from tests.conftest import save_tiny_llama
from tests.iaa_helpers import random_image, tiny_iaa
from tests.tasks.text_helpers import write_mmlu
from tests.vlm_checkpoints import save_family

pytestmark = pytest.mark.usefixtures("keep_torch_threads")
ON_CPU = {0: "cpu", 1: "disk"}  # what each (absent) GPU of a computed map becomes here


def _iaa_checkpoint(path: Path, seed: int) -> Path:
    tokenizer, _, _, processor, model = tiny_iaa(seed=seed, layers=4, positions=(0, 2))
    model.save_pretrained(path, tokenizer=tokenizer, image_processor=processor)
    return path


def _two_gpu_budget(model: IAAForCausalLM) -> dict[str, str]:
    """GPU 0 takes the vision tower and the embeddings (plus the room accelerate keeps there for
    the largest group), GPU 1 about half the rest, the CPU the remainder: three devices."""
    sizes = compute_module_sizes(model)
    groups = [sum(sizes[name] for name in group) for group in placement_groups(model)]
    first = groups[0] + groups[1] + max(groups)
    return {"0": f"{first / 1000 + 1}KB", "1": f"{sum(groups[2:]) / 2000}KB", "cpu": "1GB"}


def _text_scores(model: Any) -> list[tuple[float, bool]]:
    """Log-likelihoods of a few continuations through the one scoring engine, on the text view."""
    pairs = [([5, 9, 33], [7, 80]), ([5, 9, 33], [12]), ([4, 18], [6, 6, 2])]
    return FastScorer(model.text_view().model, 64, progress=False).score(pairs)


def _outputs(model: Any) -> tuple[list[str], list[tuple[float, bool]], torch.Tensor, dict[str, str]]:
    """Answers (with and without images), log-likelihoods, text logits, fingerprints."""
    requests = [MMRequest("What colour is it?", random_image(1), max_new_tokens=6),
                MMRequest("Why?", None, max_new_tokens=6),
                MMRequest("Which shape?", random_image(2, (20, 36)), max_new_tokens=6)]
    view = model.text_view()
    with torch.inference_mode():
        logits = view.model(torch.tensor([[5, 9, 33, 7, 80, 12]])).logits
    prints = {w: model.fingerprint(w) for w in ("text", "mm")}
    return model.generate(requests), _text_scores(model), logits, prints


@pytest.mark.parametrize("strategy", ["sequential", "balanced", "balanced_low_0"])
def test_iaa_map_keeps_insertion_layers_with_their_anchors(tmp_path: Path, strategy: str) -> None:
    model = IAAForCausalLM.from_pretrained(_iaa_checkpoint(tmp_path, seed=5))
    plan = group_device_map(model, placement_groups(model), strategy, _two_gpu_budget(model))

    assert len(set(plan.values())) > 1  # a real split
    assert all(any(k.startswith(f"{name}.") for name in plan) for k in model.state_dict())
    for suffix in ("", "_grounding"):
        for k, after in enumerate(model.config.insert_after_layers):
            assert plan[f"model.condition_layers{suffix}.{k}"] == plan[f"model.layers.{after}"]
        assert plan[f"model.embed_tokens_condition{suffix}"] == plan["model.embed_tokens"]
        assert plan[f"model.norm_condition{suffix}"] == plan["lm_head"] == plan["model.norm"]
        assert plan[f"lm_head_condtion{suffix}"] == plan["lm_head"]
    order = [0, 1, "cpu"]
    layers = [order.index(plan[f"model.layers.{i}"]) for i in range(4)]
    assert layers == sorted(layers)  # hidden states only move forward
    assert plan["model.embed_tokens"] == plan["model.vision_tower"] == 0


def test_groups_that_leave_a_weight_out_are_refused(tmp_path: Path) -> None:
    model = IAAForCausalLM.from_pretrained(_iaa_checkpoint(tmp_path, seed=5))
    groups = [g for g in placement_groups(model) if "model.layers.1" not in g]
    with pytest.raises(ValueError, match="unplaced: .*model.layers.1"):
        group_device_map(model, groups, "sequential", _two_gpu_budget(model))


def _dispatch_on_cpu(tmp_path: Path) -> Any:
    """``placement.dispatch`` with the map's GPUs replaced as :data:`ON_CPU` says."""

    def dispatch(model: torch.nn.Module, device_map: dict[str, Any]) -> torch.nn.Module:
        on_cpu = {name: ON_CPU.get(device, device) for name, device in device_map.items()}
        assert set(device_map.values()) == {0, 1, "cpu"}
        return dispatch_model(model, on_cpu, offload_dir=str(tmp_path / "offload"),
                              skip_keys=["cache"]).eval()

    return dispatch


def test_iaa_split_over_hooks_answers_as_the_whole_model(
    tmp_path: Path, fresh_seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(_iaa_checkpoint(tmp_path / "iaa", seed=fresh_seed))
    whole = IAAModel(ModelSpec("iaa", "iaa", folder, batch_size=2))
    expected = _outputs(whole)
    on_cpu_alone = IAAModel(ModelSpec("iaa", "iaa", folder, batch_size=2, device_map="auto"))
    assert _outputs(on_cpu_alone)[:2] == expected[:2]  # the real dispatch, all on the CPU
    monkeypatch.setattr(iaa_placement, "dispatch", _dispatch_on_cpu(tmp_path))
    budget = _two_gpu_budget(whole.model)
    split = IAAModel(ModelSpec("iaa", "iaa", folder, batch_size=2, device_map="sequential",
                               max_memory=budget))

    offloaded = [n for n, p in split.model.named_parameters() if p.device.type == "meta"]
    assert any(".condition_layers" in n for n in offloaded)  # insertion layers went with anchors
    assert any(n.startswith("model.layers.") for n in offloaded)
    answers, scores, logits, prints = _outputs(split)
    assert answers == expected[0] and scores == expected[1] and prints == expected[3]
    assert torch.equal(logits, expected[2])


def test_hf_split_over_hooks_answers_as_the_whole_model(
    tmp_path: Path, fresh_seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(save_tiny_llama(tmp_path / "base", seed=fresh_seed))
    whole = HFCausalModel(ModelSpec("base", "hf", folder, batch_size=2))
    explicit = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                "model.layers.1": "disk", "model.norm": "disk", "lm_head": "cpu"}
    monkeypatch.setattr("iaa_eval.models.hf_causal.placement_kwargs", lambda spec: {
        "device_map": explicit, "offload_folder": str(tmp_path / "offload")})
    split = HFCausalModel(ModelSpec("base", "hf", folder, batch_size=2, device_map="sequential"))

    assert split.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"
    requests = [MMRequest("What is two plus two?", max_new_tokens=6),
                MMRequest("Why?", max_new_tokens=6)]

    def outcome(model: HFCausalModel) -> tuple[list[str], list[tuple[float, bool]], str]:
        return model.generate(requests), _text_scores(model), model.fingerprint("text")

    assert outcome(split) == outcome(whole)


def test_vlm_split_over_hooks_answers_as_the_whole_model(
    tmp_path: Path, fresh_seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(save_family("llava", tmp_path / "vlm", seed=fresh_seed % 1000))
    whole = VLMModel(ModelSpec("vlm", "vlm", folder, batch_size=2))
    lm = "model.language_model"
    explicit = {"model.vision_tower": "cpu", "model.multi_modal_projector": "disk",
                f"{lm}.embed_tokens": "cpu", f"{lm}.rotary_emb": "cpu", f"{lm}.layers.0": "disk",
                f"{lm}.layers.1": "cpu", f"{lm}.norm": "disk", "lm_head": "cpu"}
    monkeypatch.setattr("iaa_eval.models.vlm.placement_kwargs", lambda spec: {
        "device_map": explicit, "offload_folder": str(tmp_path / "offload")})
    split = VLMModel(ModelSpec("vlm", "vlm", folder, batch_size=2, device_map="sequential"))

    assert split.model.model.multi_modal_projector.linear_1.weight.device.type == "meta"
    got, expected = _outputs(split), _outputs(whole)
    assert got[0] == expected[0] and got[1] == expected[1] and got[3] == expected[3]
    assert torch.equal(got[2], expected[2])


def test_cli_records_the_placement_and_a_cpu_map_changes_nothing(tmp_path: Path) -> None:
    model = save_tiny_llama(tmp_path / "base", seed=3)
    mmlu = write_mmlu(tmp_path / "mmlu", {"algebra": 3})
    argv = ["run", "--model", f"base=hf:{model}", "--tasks", "mmlu", "--data-dir", str(mmlu),
            "--output-path", str(tmp_path / "runs"), "--threads", "1"]
    assert main([*argv, "--run-id", "whole"]) == 0
    placement = ["--device-map", "sequential", "--max-memory", "cpu=2GB"]
    assert main([*argv, "--run-id", "map", *placement]) == 0
    whole, split = (json.loads((tmp_path / "runs" / run / "results.json").read_text())
                    for run in ("whole", "map"))
    spec = split["config"]["models"][0]
    assert (spec["device_map"], spec["max_memory"]) == ("sequential", {"cpu": "2GB"})
    assert whole["config"]["models"][0]["device_map"] is None
    for result in (whole, split):
        result["results"]["base"]["mmlu"].pop("wall_s")
    assert split["results"] == whole["results"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a split between GPU 0 and the CPU")
def test_iaa_split_between_gpu_and_cpu_answers_as_on_the_gpu(
    tmp_path: Path, fresh_seed: int
) -> None:
    folder = str(_iaa_checkpoint(tmp_path / "iaa", seed=fresh_seed))
    whole = IAAModel(ModelSpec("iaa", "iaa", folder, device="cuda", dtype="float32"))
    total = compute_module_sizes(whole.model)[""]
    split = IAAModel(ModelSpec("iaa", "iaa", folder, dtype="float32", device_map="sequential",
                               max_memory={"0": f"{total // 2000}KB", "cpu": "1GB"}))
    assert {p.device.type for p in split.model.parameters()} == {"cuda", "meta"}
    got, expected = _outputs(split), _outputs(whole)
    assert got[0] == expected[0] and got[3] == expected[3]
    assert torch.allclose(got[2].cpu(), expected[2].cpu(), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a split between GPU 0 and the CPU")
def test_hf_split_between_gpu_and_cpu_answers_as_on_the_gpu(
    tmp_path: Path, fresh_seed: int
) -> None:
    folder = str(save_tiny_llama(tmp_path / "base", seed=fresh_seed))
    whole = HFCausalModel(ModelSpec("base", "hf", folder, device="cuda", dtype="float32"))
    total = compute_module_sizes(whole.model)[""]
    split = HFCausalModel(ModelSpec("base", "hf", folder, dtype="float32", device_map="sequential",
                                    max_memory={"0": f"{total // 2000}KB", "cpu": "1GB"}))
    assert {p.device.type for p in split.model.parameters()} == {"cuda", "meta"}
    requests = [MMRequest("What is two plus two?", max_new_tokens=6)]
    assert split.generate(requests) == whole.generate(requests)
    assert split.fingerprint("text") == whole.fingerprint("text")
    got, want = _text_scores(split), _text_scores(whole)
    assert [g for g, _ in got] == pytest.approx([w for w, _ in want], abs=1e-5)
