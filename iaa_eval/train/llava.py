"""LLaVA-style training stages on a ``LlavaForConditionalGeneration`` (llava-hf layout).

Stage 1 trains the projector only; stage 2 unfreezes the language model (and its head) with the
projector, the vision tower staying frozen. This is the recipe whose text forgetting the harness
measures. Optional *text replay* mixes plain-text examples (loss on every token) into each batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LlavaForConditionalGeneration

from iaa_eval.errors import UsageError
from iaa_eval.models.generation import left_pad, left_padded
from iaa_eval.models.templates import training_text
from iaa_eval.models.vlm_processor import render_prompt
from iaa_eval.train.examples import Example, example_image
from iaa_eval.train.loop import (
    IGNORE_INDEX,
    TrainConfig,
    batch_indices,
    causal_lm_loss,
    run_training,
    target_tokens,
)


def stage_parameters(model: LlavaForConditionalGeneration, stage: int) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze: stage 1 the projector; stage 2 projector + LLM + head."""
    if stage not in (1, 2):
        raise UsageError(f"stage={stage}: expected 1 (projector) or 2 (projector + language model)")
    model.requires_grad_(False)
    modules = [model.model.multi_modal_projector]
    if stage == 2:
        modules += [model.model.language_model, model.lm_head]
    for module in modules:
        module.requires_grad_(True)
    return [p for module in modules for p in module.parameters()]


def encode_batch(processor: Any, examples: Sequence[Example],
                 replay: Sequence[str]) -> dict[str, torch.Tensor]:
    """Left-padded ids/mask/labels (answer-only for examples, every token after the first for replay
    text) + pixels."""
    tokenizer = processor.tokenizer
    ids, labels, images = [], [], []
    for ex in examples:
        # the prompt the llava kind evaluates with
        prompt = render_prompt(processor, ex.prompt, ex.image is not None, system=True)
        prompt, target = training_text(prompt, ex.answer, tokenizer.eos_token)
        if ex.image is not None:
            enc = processor(images=[example_image(ex).convert("RGB")], text=[prompt],
                            return_tensors="pt")
            images.append(enc["pixel_values"])
        else:
            enc = processor(text=[prompt], return_tensors="pt")
        prompt_ids = enc["input_ids"][0].tolist()
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        ids.append(prompt_ids + target_ids)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
    for text in replay:
        text_ids = tokenizer(text + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids.append(text_ids)
        # every token a target but the first: nothing precedes it
        # (left padding would put a pad there)
        labels.append([IGNORE_INDEX, *text_ids[1:]])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = {
        **left_padded(ids, pad),
        "labels": left_pad(labels, IGNORE_INDEX),
    }
    if images:
        batch["pixel_values"] = torch.cat(images)
    return batch


def train_llava_stage(
    model: LlavaForConditionalGeneration,
    processor: Any,
    examples: Sequence[Example],
    stage: int = 2,
    config: TrainConfig | None = None,
    text_replay: Sequence[str] = (),
    replay_ratio: float = 0.0,
) -> list[float]:
    """Train one LLaVA-style stage in place; returns the per-step loss history.

    Args:
        model: a llava-hf ``LlavaForConditionalGeneration``.
        processor: its ``LlavaProcessor`` (tokenizer + image processor + image token).
        examples: the same examples the IAA model trains on.
        stage: 1 = projector only; 2 = projector + language model + head (vision frozen).
        config: steps, lr, batch size, seed (give IAA the same for a fair comparison).
        text_replay: plain-text passages mixed in against forgetting.
        replay_ratio: fraction of each batch taken from ``text_replay`` (0 = none).
    """
    config = config or TrainConfig()
    if not 0.0 <= replay_ratio < 1.0 or (replay_ratio > 0 and not text_replay):
        raise UsageError(f"replay_ratio={replay_ratio}: expected 0 <= ratio < 1, with text_replay "
                         "given when > 0")
    n_replay = round(config.batch_size * replay_ratio)
    params = stage_parameters(model, stage)
    plan = batch_indices(len(examples), config.batch_size - n_replay, config.steps, config.seed)
    rng = random.Random(config.seed + 1)
    replay_plan = ([[rng.randrange(len(text_replay)) for _ in range(n_replay)] for _ in plan]
                   if n_replay else None)
    model.train()

    def batch_loss(step: int, part: slice) -> tuple[torch.Tensor, int]:
        # a step's rows: its examples, then its replay passages; ``part`` slices that row order
        n_examples = len(plan[step])
        replay_part = slice(max(0, part.start - n_examples), max(0, part.stop - n_examples))
        replay = [text_replay[i] for i in replay_plan[step][replay_part]] if replay_plan else []
        batch = encode_batch(processor, [examples[i] for i in plan[step][part]], replay)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        # left padding
        batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        return causal_lm_loss(model(**batch).logits, labels), target_tokens(labels)

    try:
        return run_training(params, batch_loss, config, f"LLaVA stage {stage}")
    finally:
        model.eval()
