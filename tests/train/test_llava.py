"""LLaVA-style training: stage 2 changes the language model (that is the forgetting we measure)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from iaa_eval.errors import UsageError
from iaa_eval.models import load_model
from iaa_eval.models.base import MMRequest, ModelSpec
from iaa_eval.train import Example, TrainConfig, train_llava_stage
from iaa_eval.train.llava import encode_batch
from tests.iaa_helpers import random_image, solid_image

COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20), "white": (250, 250, 250)}
EXAMPLES = [Example(solid_image(rgb), "What colour is the shape?", name) for name, rgb in COLOURS.items()]


def load(path: Path) -> tuple[LlavaForConditionalGeneration, object]:
    return LlavaForConditionalGeneration.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def batch_loss(model, processor) -> float:
    from iaa_eval.train.loop import causal_lm_loss

    batch = encode_batch(processor, EXAMPLES, [])
    labels = batch.pop("labels")
    with torch.no_grad():
        return causal_lm_loss(model(**batch).logits, labels).item()


def test_stage2_changes_the_llm_and_lowers_loss(tiny_llava_dir: Path) -> None:
    model, processor = load(tiny_llava_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss_before = batch_loss(model, processor)
    history = train_llava_stage(model, processor, EXAMPLES, stage=2,
                                config=TrainConfig(steps=12, lr=5e-3, batch_size=4, seed=0, progress=False))
    assert len(history) == 12 and batch_loss(model, processor) < loss_before * 0.7
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("model.language_model.layers.") for k in changed)
    assert "lm_head.weight" in changed and any("multi_modal_projector" in k for k in changed)
    assert not any(k.startswith("model.vision_tower.") for k in changed)


def test_stage1_changes_the_projector_only(tiny_llava_dir: Path) -> None:
    model, processor = load(tiny_llava_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_llava_stage(model, processor, EXAMPLES, stage=1,
                      config=TrainConfig(steps=2, lr=1e-2, batch_size=2, seed=0, progress=False))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)


def test_prompt_matches_the_llava_adapter(tiny_llava_dir: Path) -> None:
    adapter = load_model(ModelSpec("llava", "llava", str(tiny_llava_dir)))
    _, processor = load(tiny_llava_dir)
    request = MMRequest("What colour?", solid_image((1, 2, 3)))
    batch = encode_batch(processor, [Example(request.image, request.prompt, "red")], [])
    trained_on = processor.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0] == 1])
    enc = adapter._encode([adapter.render_prompt(request)], [request.image])
    prompt = processor.tokenizer.decode(enc["input_ids"][0])
    assert trained_on.startswith(prompt) and trained_on.removeprefix(prompt).strip().startswith("red")


def test_an_image_path_encodes_like_the_decoded_image(tiny_llava_dir: Path, tmp_path: Path) -> None:
    _, processor = load(tiny_llava_dir)
    image = random_image(11)
    image.save(tmp_path / "x.png")  # lossless: the file decodes to the same pixels
    from_path = encode_batch(processor, [Example(tmp_path / "x.png", "Colour?", "red")], [])
    in_memory = encode_batch(processor, [Example(image, "Colour?", "red")], [])
    assert from_path.keys() == in_memory.keys() and all(torch.equal(from_path[k], in_memory[k]) for k in in_memory)


def test_replay_rows_are_mixed_in_and_labelled_after_their_first_token(tiny_llava_dir: Path) -> None:
    _, processor = load(tiny_llava_dir)
    batch = encode_batch(processor, EXAMPLES[:1], ["The capital of Veloria is Brask."])
    assert batch["input_ids"].shape[0] == 2
    replay_labels = batch["labels"][1][batch["attention_mask"][1] == 1]
    assert replay_labels[0] == -100 and (replay_labels[1:] != -100).all()  # the first has no context
    with pytest.raises(UsageError, match="replay_ratio=0.5"):
        train_llava_stage(*load(tiny_llava_dir), EXAMPLES, config=TrainConfig(steps=1), replay_ratio=0.5)


@pytest.mark.parametrize("micro", [1, 4, 5])
def test_micro_batches_with_replay_learn_what_the_whole_batch_learns(tiny_llava_dir: Path, micro: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 6 = 4 examples + 2 replay passages; parts may hold examples and replay, or replay alone.
    Plain SGD stands in for AdamW (see the IAA test of the same name)."""
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr))
    examples = [Example(random_image(i, (20, 24)), f"Question {i}?", " ".join(["word"] * (1 + 3 * i)))
                for i in range(5)]
    replay = ["The capital of Veloria is Brask.", "Mount Orel is the highest peak of the Tamer range, far away."]

    def trained(micro_batch_size: int | None) -> tuple[list[float], dict[str, torch.Tensor]]:
        model, processor = load(tiny_llava_dir)
        config = TrainConfig(steps=2, lr=0.5, batch_size=6, seed=3, micro_batch_size=micro_batch_size, progress=False)
        history = train_llava_stage(model, processor, examples, stage=2, config=config, text_replay=replay,
                                    replay_ratio=0.34)
        return history, {k: v.detach().clone() for k, v in model.state_dict().items()}

    whole_history, whole = trained(None)
    parts_history, parts = trained(micro)
    assert parts_history == pytest.approx(whole_history, rel=1e-5)
    for name, tensor in whole.items():
        torch.testing.assert_close(parts[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
