"""The quick mini-world build (what CI runs): the recipe trains, the trio loads in its real formats."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("easy_vqa")
pytest.importorskip("iaa_eval.models.iaa.modeling")

from iaa_eval.miniworld import build  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("miniworld")
    return out, build.build(out, seed=0, device="cpu", quick=True)


def test_every_loss_falls(built):
    _, manifest = built
    assert {"base", "vision", "llava_stage1", "llava_stage2", "iaa_stage1", "iaa_stage2"} <= set(manifest.losses)
    for name, curve in manifest.losses.items():
        assert curve[-1] < curve[0], (name, curve)


def test_manifest_hashes_every_file_and_info_verifies(built):
    out, manifest = built
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["files"] == manifest.files and manifest.total_bytes > 0
    assert on_disk["provenance"] == "one run of `iaa-eval miniworld build`"  # an assembled trio says otherwise
    assert "base/model.safetensors" in manifest.files and "llava/model.safetensors" in manifest.files
    assert build.info(out)["verified"]
    config = out / "base" / "config.json"
    original = config.read_bytes()
    config.write_text("{}")
    try:
        assert build.info(out)["mismatched"] == ["base/config.json"]
    finally:
        config.write_bytes(original)


def test_weights_are_fp16_and_small(built):
    out, _ = built
    from safetensors import safe_open

    total = 0
    for path in out.rglob("*.safetensors"):
        total += path.stat().st_size
        with safe_open(str(path), "pt") as fh:
            assert {fh.get_tensor(k).dtype for k in fh.keys()} == {__import__("torch").float16}
    assert total <= 15_000_000


def test_llava_loads_with_the_llava_adapter(built):
    out, _ = built
    from PIL import Image

    from iaa_eval.models import load_model
    from iaa_eval.models.base import MMRequest, ModelSpec

    model = load_model(ModelSpec("llava", "llava", str(out / "llava")))
    image = Image.open(next((out / "data" / "mme" / "color").glob("*.png")))
    answers = model.generate([MMRequest("Is there a red shape in the image? Please answer yes or no.", image)])
    assert isinstance(answers[0], str)
    assert model.text_view().model.config.vocab_size == len(model.tokenizer)


def test_base_is_deterministic_per_seed(tmp_path):
    import torch

    from iaa_eval.miniworld.pretrain import Schedule

    recipe = build.Recipe(lm=Schedule(steps=3, batch_size=4, lr=1e-3), corpus_repeats=1)
    weights = []
    for run in ("a", "b"):
        manifest = build.Manifest(seed=1, device="cpu", quick=True, recipe={})
        model, _ = build.build_base(tmp_path / run, recipe, 1, "cpu", manifest)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_iaa_text_answers_are_the_base_answers_item_for_item(built):
    out, _ = built
    from iaa_eval.miniworld import measure

    results = measure.text_results(measure._adapters(out), seed=0)
    assert results["mmlu"]["n"] >= 600
    assert results["mmlu"]["iaa_identical"] and results["ceval"]["iaa_identical"]
