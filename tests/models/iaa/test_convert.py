"""Checkpoint layouts: official-layout and our-layout round trips, and every loading error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from iaa_eval.errors import ModelError
from iaa_eval.models.iaa import IAAForCausalLM
from iaa_eval.models.iaa.configuration import IAA14_POSITIONS
from tests.iaa_helpers import tiny_iaa

PIXELS = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
IDS_MM = torch.tensor([[5, 9, 33, -200, 7, 80, 12]])
IDS = torch.tensor([[5, 9, 33, 7, 80, 12], [40, 41, 42, 43, 44, 45]])


def logits(model: IAAForCausalLM) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = {"text": model(IDS).logits}
        out.update({w: model(IDS_MM, pixel_values=PIXELS, workflow=w).logits for w in model.config.workflows})
    return out


def keys_of(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())


@pytest.fixture(scope="module")
def official_model() -> IAAForCausalLM:
    """A 32-layer tiny Llama with IAA-14 insertions and both branches (the official shape)."""
    return tiny_iaa(seed=21, layers=32, positions=IAA14_POSITIONS)[4]


@pytest.mark.parametrize("vision_inside", [True, False])
def test_official_layout_round_trip(official_model: IAAForCausalLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    vision_inside: bool) -> None:
    official_model.save_pretrained(tmp_path / "ckpt", official=True, vision_inside=vision_inside)
    raw = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert raw["model_type"] == "IAA" and raw["mm_vision_tower"] == "vision_tower"
    assert "insert_after_layers" not in raw and raw["num_hidden_layers"] == 32
    keys = keys_of(tmp_path / "ckpt" / "model.safetensors")
    assert {"model.condition_layers.13.mlp.down_proj.weight", "lm_head_condtion.weight",
            "lm_head_condtion_grounding.weight", "model.mm_projector_G.2.weight",
            "model.embed_tokens_condition.weight", "model.norm_condition.weight"} <= keys
    vision_key = "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding"
    assert (vision_key in keys) == vision_inside
    monkeypatch.chdir(tmp_path.parent)  # the relative mm_vision_tower must resolve against the checkpoint
    loaded = IAAForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.insert_after_layers == official_model.config.insert_after_layers
    assert loaded.config.workflows == ["mm", "g"]
    for name, value in logits(official_model).items():
        assert torch.equal(logits(loaded)[name], value), name


def test_our_layout_round_trip_and_dtype(tmp_path: Path) -> None:
    model = tiny_iaa(seed=22)[4]
    model.save_pretrained(tmp_path)
    loaded = IAAForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.insert_after_layers == [0, 2] and loaded.config.image_token_id == model.config.image_token_id
    assert not any(p.requires_grad for p in loaded.base_lm.parameters())
    for name, value in logits(model).items():
        assert torch.equal(logits(loaded)[name], value), name
    half = IAAForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.model.condition_layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


def test_bin_weights_load_weights_only(tmp_path: Path) -> None:
    model = tiny_iaa(seed=23)[4]
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    assert torch.equal(logits(IAAForCausalLM.from_pretrained(tmp_path))["mm"], logits(model)["mm"])


def edit_weights(folder: Path, change: callable) -> None:
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("model.condition_layers.1.mlp.up_proj.weight"),
         r"do not match IAAForCausalLM: 1 weights missing from the checkpoint "
         r"\(they would be random\): "
         r"model.condition_layers.1.mlp.up_proj.weight; expected"),
        (lambda t: t.update({"model.extra.weight": torch.zeros(2)}),
         r"1 weights in the checkpoint but not used by the model: model.extra.weight; expected"),
        (lambda t: t.update({"model.mm_projector.0.weight": torch.zeros(32, 48)}),
         r"model.mm_projector.0.weight has shape \(32, 48\), the config implies \(32, 32\) \(projector/LM hidden"),
        (lambda t: t.update({"lm_head_condtion.weight": torch.zeros(5, 32)}), r"lm_head_condtion.weight has shape"),
    ],
)
def test_checkpoint_mismatches_are_listed(tmp_path: Path, change: callable, message: str) -> None:
    tiny_iaa(seed=24)[4].save_pretrained(tmp_path)
    edit_weights(tmp_path, change)
    with pytest.raises(ModelError, match=message):
        IAAForCausalLM.from_pretrained(tmp_path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json"):
        IAAForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelError, match="model_type='llama' is not an IAA checkpoint"):
        IAAForCausalLM.from_pretrained(tmp_path)


def test_official_without_vision_tower_folder(official_model: IAAForCausalLM, tmp_path: Path) -> None:
    official_model.save_pretrained(tmp_path, official=True, vision_inside=False)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="mm_vision_tower='openai/clip-vit-large-patch14-336' is not a directory"):
        IAAForCausalLM.from_pretrained(tmp_path)


def test_official_layout_with_custom_positions_round_trips(tmp_path: Path) -> None:
    model = tiny_iaa(seed=25)[4]
    model.save_pretrained(tmp_path, official=True, vision_inside=False)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["insert_after_layers"] == [0, 2] and raw["image_token_id"] == model.config.image_token_id
    loaded = IAAForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.insert_after_layers == [0, 2] and loaded.config.image_token_id == model.config.image_token_id
    for name, value in logits(model).items():
        assert torch.equal(logits(loaded)[name], value), name


def test_official_layout_needs_a_llama_base(tmp_path: Path) -> None:
    from transformers import CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM

    from tests.conftest import tiny_clip_config

    qwen = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    model = IAAForCausalLM.from_base(qwen, CLIPVisionModel(tiny_clip_config()), positions=[1])
    with pytest.raises(ModelError, match="official layout holds a Llama base, not 'qwen2'"):
        model.save_pretrained(tmp_path, official=True)


def test_a_whole_clip_serves_as_vision_tower_and_a_missing_weight_is_refused(
    tmp_path: Path,
) -> None:
    """A whole CLIP checkpoint's text tower and projections are not the tower's; its own weights
    must all be there."""
    from transformers import CLIPConfig, CLIPModel

    from iaa_eval.models.iaa.convert import load_vision_tower
    from tests.conftest import tiny_clip_config

    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                vocab_size=100, bos_token_id=0, eos_token_id=1)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=tiny_clip_config().to_dict(),
                                projection_dim=16))
    clip.save_pretrained(tmp_path)
    tower = load_vision_tower(str(tmp_path), "--vision")
    inside = clip.vision_model.state_dict()
    for name, weight in tower.state_dict().items():
        assert torch.equal(weight, inside[name.removeprefix("vision_model.")])
    edit_weights(tmp_path, lambda t: t.pop("vision_model.post_layernorm.weight"))
    with pytest.raises(ModelError, match=r"1 weights missing .*post_layernorm.weight; expected"):
        load_vision_tower(str(tmp_path), "--vision")
