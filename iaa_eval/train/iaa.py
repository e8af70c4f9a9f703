"""IAA training stages: the base LM never changes.

Stage 1 trains the projector only (caption-like data); stage 2 trains the workflow's insertion
layers, multimodal embedding, norm and head plus the projector. The base LM and the vision tower
stay frozen (``requires_grad=False``), so the text workflow is unchanged by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from iaa_eval.errors import UsageError
from iaa_eval.models.generation import left_pad, left_padded
from iaa_eval.models.iaa.modeling import IAAForCausalLM
from iaa_eval.models.iaa.preprocess import pixel_values, prompt_text, to_model_ids
from iaa_eval.models.templates import training_text
from iaa_eval.train.examples import Example, example_image
from iaa_eval.train.loop import (
    IGNORE_INDEX,
    TrainConfig,
    batch_indices,
    run_training,
    target_tokens,
)


def stage_parameters(model: IAAForCausalLM, stage: int,
                     workflow: str = "mm") -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what ``stage`` trains; returns those parameters."""
    if stage not in (1, 2):
        raise UsageError(f"stage={stage}: expected 1 (projector) or 2 (insertion layers + MM "
                         "modules + projector)")
    groups = model.trainable_groups(workflow)
    names = ["projector"] if stage == 1 else list(groups)
    model.requires_grad_(False)
    params = [p for name in names for p in groups[name]]
    for param in params:
        param.requires_grad_(True)
    return params


def encode_examples(
    model: IAAForCausalLM, tokenizer: Any, image_processor: Any, examples: Sequence[Example]
) -> dict[str, torch.Tensor | None]:
    """Left-padded ``input_ids`` (with -200), ``attention_mask``, answer-only ``labels``,
    ``pixel_values``."""
    token_id = model.config.image_token_id
    ids, labels = [], []
    for ex in examples:
        prompt, target = training_text(prompt_text(tokenizer, ex.prompt, token_id,
                                                   ex.image is not None),
                                       ex.answer, tokenizer.eos_token)
        prompt_ids = to_model_ids(tokenizer(prompt, add_special_tokens=False)["input_ids"],
                                  token_id, ex.image is not None)
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        ids.append(prompt_ids + target_ids)
        labels.append([IGNORE_INDEX] * len(prompt_ids) + target_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    images = [example_image(ex) for ex in examples if ex.image is not None]
    return {
        **left_padded(ids, pad),
        "labels": left_pad(labels, IGNORE_INDEX),
        "pixel_values": (pixel_values(images, image_processor, model.config.image_aspect_ratio)
                         if images else None),
    }


def train_iaa_stage(
    model: IAAForCausalLM,
    tokenizer: Any,
    image_processor: Any,
    examples: Sequence[Example],
    stage: int = 2,
    config: TrainConfig | None = None,
    workflow: str = "mm",
) -> list[float]:
    """Train one IAA stage in place on ``examples``; returns the per-step loss history.

    Args:
        model: an :class:`IAAForCausalLM` (e.g. from ``IAAForCausalLM.from_base``).
        tokenizer: the base LM's tokenizer (its image token is ``model.config.image_token_id``).
        image_processor: the vision tower's CLIP image processor.
        examples: training examples; ``image=None`` examples train on text alone.
        stage: 1 = projector only; 2 = insertion layers + MM embedding/norm/head + projector.
        config: steps, lr, batch size, seed.
        workflow: the branch to train (``mm``; ``g`` for a grounding branch).
    """
    config = config or TrainConfig()
    params = stage_parameters(model, stage, workflow)
    plan = batch_indices(len(examples), config.batch_size, config.steps, config.seed)
    model.train()
    device = model.device

    def batch_loss(step: int, part: slice) -> tuple[torch.Tensor, int]:
        batch = encode_examples(model, tokenizer, image_processor,
                                [examples[i] for i in plan[step][part]])
        batch = {k: (v.to(device) if v is not None else None) for k, v in batch.items()}
        return model(workflow=workflow, **batch).loss, target_tokens(batch["labels"])

    try:
        return run_training(params, batch_loss, config, f"IAA stage {stage}")
    finally:
        model.eval()
