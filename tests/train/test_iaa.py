"""IAA training: base weights byte-identical, text logits unchanged, multimodal loss falls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from iaa_eval.errors import UsageError
from iaa_eval.train import Example, TrainConfig, train_iaa_stage
from iaa_eval.train.iaa import encode_examples
from tests.iaa_helpers import random_image, solid_image, tiny_iaa

COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "white": (250, 250, 250)}


def colour_examples() -> list[Example]:
    return [Example(solid_image(rgb), "What colour is the shape?", name) for name, rgb in COLOURS.items()]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def fixed_loss(model, tokenizer, processor, examples) -> float:
    batch = encode_examples(model, tokenizer, processor, examples)
    with torch.no_grad():
        return model(workflow="mm", **batch).loss.item()


def test_stage2_leaves_base_untouched_and_lowers_mm_loss() -> None:
    tokenizer, base, clip, processor, model = tiny_iaa(seed=3)
    examples = colour_examples()
    ids = torch.randint(3, len(tokenizer), (2, 11), generator=torch.Generator().manual_seed(4))
    text_before = model(ids).logits
    base_before, vision_before = snapshot(base), snapshot(clip)
    loss_before = fixed_loss(model, tokenizer, processor, examples)
    history = train_iaa_stage(model, tokenizer, processor, examples, stage=2,
                              config=TrainConfig(steps=12, lr=5e-3, batch_size=4, seed=0, progress=False))
    assert len(history) == 12
    assert fixed_loss(model, tokenizer, processor, examples) < loss_before * 0.7
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, base_before[name]), name
        assert not base.get_parameter(name).requires_grad if name in dict(base.named_parameters()) else True
    assert all(torch.equal(v, vision_before[k]) for k, v in clip.state_dict().items())
    assert torch.equal(model(ids).logits, text_before)
    assert torch.equal(base(ids).logits, text_before)


def test_stage1_trains_the_projector_only() -> None:
    tokenizer, base, clip, processor, model = tiny_iaa(seed=5)
    before = snapshot(model)
    train_iaa_stage(model, tokenizer, processor, colour_examples(), stage=1,
                    config=TrainConfig(steps=3, lr=1e-2, batch_size=2, seed=1, progress=False))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.mm_projector.") for k in changed)


def test_labels_cover_the_answer_only() -> None:
    tokenizer, _, _, processor, model = tiny_iaa(seed=6)
    batch = encode_examples(model, tokenizer, processor, [Example(solid_image((1, 2, 3)), "Colour?", "red")])
    labelled = batch["labels"][batch["labels"] != -100].tolist()
    assert tokenizer.decode(labelled) == " red" + tokenizer.eos_token
    assert (batch["input_ids"] == -200).sum() == 1 and batch["pixel_values"].shape == (1, 3, 32, 32)


def test_an_image_path_encodes_like_the_decoded_image(tmp_path: Path) -> None:
    tokenizer, _, _, processor, model = tiny_iaa(seed=8)
    image = random_image(9)
    image.save(tmp_path / "x.png")  # lossless: the file decodes to the same pixels
    from_path = encode_examples(model, tokenizer, processor, [Example(tmp_path / "x.png", "Colour?", "red")])
    in_memory = encode_examples(model, tokenizer, processor, [Example(image, "Colour?", "red")])
    assert from_path.keys() == in_memory.keys() and all(torch.equal(from_path[k], in_memory[k]) for k in in_memory)


def test_bad_stage_is_an_error() -> None:
    tokenizer, _, _, processor, model = tiny_iaa(seed=7)
    with pytest.raises(UsageError, match="stage=3: expected 1"):
        train_iaa_stage(model, tokenizer, processor, colour_examples(), stage=3, config=TrainConfig(steps=1))


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_micro_batches_learn_what_the_whole_batch_learns(micro: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers of different lengths, so that only token-weighted accumulation equals the batch. Plain
    SGD stands in for AdamW, whose normalised steps would blow float noise in near-zero gradients up."""
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr))
    answers = ["red", "a long blue answer with many words", "green", "white and also rather pale", "no", "maybe so"]
    examples = [Example(random_image(i, (24, 20)), f"Question {i}?", a) for i, a in enumerate(answers)]

    def trained(micro_batch_size: int | None) -> tuple[list[float], dict[str, torch.Tensor]]:
        tokenizer, _, _, processor, model = tiny_iaa(seed=9)
        config = TrainConfig(steps=3, lr=0.5, batch_size=6, seed=2, micro_batch_size=micro_batch_size,
                             progress=False)
        history = train_iaa_stage(model, tokenizer, processor, examples, stage=2, config=config)
        return history, snapshot(model)

    whole_history, whole = trained(None)
    parts_history, parts = trained(micro)
    assert parts_history == pytest.approx(whole_history, rel=1e-5)
    for name, tensor in whole.items():
        torch.testing.assert_close(parts[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


def test_micro_batch_size_must_fit_the_batch() -> None:
    with pytest.raises(UsageError, match="micro_batch_size=5: expected 1 to batch_size=4"):
        TrainConfig(batch_size=4, micro_batch_size=5)
    assert TrainConfig(batch_size=5, micro_batch_size=2).parts() == [slice(0, 2), slice(2, 4), slice(4, 6)]


def test_bfloat16_training_keeps_the_model_in_bfloat16_and_the_base_frozen() -> None:
    tokenizer, base, _, processor, model = tiny_iaa(seed=13)
    model.to(torch.bfloat16)
    base_before, before = snapshot(base), snapshot(model)
    train_iaa_stage(model, tokenizer, processor, colour_examples(), stage=2,
                    config=TrainConfig(steps=3, lr=1e-2, batch_size=4, seed=0, progress=False))
    after = snapshot(model)
    assert all(t.dtype == torch.bfloat16 for t in after.values() if t.is_floating_point())
    assert any(not torch.equal(after[k], v) for k, v in before.items() if "condition" in k)
    assert all(torch.equal(v, base_before[k]) for k, v in snapshot(base).items())
    assert all(p.grad is None for p in model.parameters())  # gradients went to the float32 masters
