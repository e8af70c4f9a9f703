"""The mini-world's two multimodal models, from one base and one vision tower, trained alike.

LLaVA-style (llava-hf ``LlavaForConditionalGeneration``): stage 1 trains the projector on
captions; stage 2 trains projector + the whole LLM on Q/A (the forgetting recipe). IAA: stage 1
trains its projector on the same captions; stage 2 trains projector, insertion layers and the
MM embedding/norm/head with the base frozen. Both go through :mod:`iaa_eval.train` with the same
examples, the same :class:`~iaa_eval.train.TrainConfig` (steps, batch size, lr, seed: hence the
same batch order). Optional text replay mixes corpus documents into the LLaVA-style stage 2.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from iaa_eval.miniworld import mmdata, pretrain, world
from iaa_eval.train import Example, TrainConfig, train_iaa_stage, train_llava_stage

log = logging.getLogger(__name__)


def to_examples(examples: Sequence[mmdata.MMExample]) -> list[Example]:
    """Training examples with their images loaded once (easy-vqa images are 64x64 PNGs)."""
    from PIL import Image

    images: dict[Path, Any] = {}
    for ex in examples:
        if ex.image not in images:
            with Image.open(ex.image) as img:
                images[ex.image] = img.convert("RGB")
    return [Example(images[ex.image], ex.prompt, ex.answer) for ex in examples]


def stage_config(schedule: pretrain.Schedule, seed: int) -> TrainConfig:
    """The shared stage budget; the seed fixes the batch order for both model families."""
    return TrainConfig(steps=schedule.steps, lr=schedule.lr, batch_size=schedule.batch_size,
                       seed=seed, weight_decay=schedule.weight_decay)


def make_llava(base: Any, tower: Any, tokenizer: Any, seed: int) -> Any:
    """A llava-hf model holding copies of ``base`` and ``tower`` and a fresh 2-layer GELU
    projector."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=tower.config, text_config=base.config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=(tower.config.image_size // tower.config.patch_size) ** 2,
    )
    pretrain.seed_everything(seed)
    model = LlavaForConditionalGeneration(config).to(base.device)
    model.model.language_model.load_state_dict(base.model.state_dict())
    model.lm_head.load_state_dict(base.lm_head.state_dict())
    model.model.vision_tower.load_state_dict(tower.state_dict())
    return model


def llava_processor(tokenizer: Any, tower: Any) -> Any:
    """``LlavaProcessor``: the CLIP image processor at 64 px and the ``<image>`` token expanded to
    one token per patch (CLS dropped: ``default`` strategy)."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=pretrain.image_processor(), tokenizer=tokenizer,
        patch_size=tower.config.patch_size, vision_feature_select_strategy="default",
        image_token="<image>", num_additional_image_tokens=1,
    )


def build_multimodal(out_dir: Path, base: Any, tokenizer: Any, tower: Any, recipe: Any, seed: int,
                     manifest: Any) -> dict[str, Any]:
    """Train and save ``llava/`` and ``iaa/`` from ``base`` + ``tower``; returns the two models."""
    examples = {name: to_examples(exs)
                for name, exs in mmdata.training_examples(seed, recipe.mix).items()}
    manifest.data["mm_train_examples"] = {name: len(exs) for name, exs in examples.items()}
    return {"llava": train_llava(out_dir, base, tokenizer, tower, examples, recipe, seed, manifest),
            "iaa": train_iaa(out_dir, base, tokenizer, tower, examples, recipe, seed, manifest)}


def train_llava(out_dir: Path, base: Any, tokenizer: Any, tower: Any,
                examples: dict[str, list[Example]], recipe: Any, seed: int, manifest: Any) -> Any:
    """Stage 1 (projector) and stage 2 (projector + LLM) of the LLaVA-style model, saved to
    ``llava/``."""
    llava = make_llava(base, tower, tokenizer, seed)
    processor = llava_processor(tokenizer, tower)
    replay = (world.corpus(world.make_world(seed), recipe.corpus_repeats)
              if recipe.replay_ratio > 0 else ())
    for stage, (name, schedule) in _budgets(recipe).items():
        losses = train_llava_stage(llava, processor, examples[name], stage=stage,
                                   config=stage_config(schedule, seed),
                                   text_replay=replay if stage == 2 else (),
                                   replay_ratio=recipe.replay_ratio if stage == 2 else 0.0)
        manifest.losses[f"llava_{name}"] = pretrain.loss_curve(losses)
    pretrain.save_fp16(llava, out_dir / "llava")
    processor.save_pretrained(out_dir / "llava")
    return llava


def train_iaa(out_dir: Path, base: Any, tokenizer: Any, tower: Any,
              examples: dict[str, list[Example]], recipe: Any, seed: int, manifest: Any) -> Any:
    """Stage 1 (projector) and stage 2 (adapters, base frozen) of the IAA model, saved to
    ``iaa/``."""
    from iaa_eval.models.iaa.convert import save_iaa
    from iaa_eval.models.iaa.modeling import IAAForCausalLM

    image_id = tokenizer.convert_tokens_to_ids("<image>")
    iaa = IAAForCausalLM.from_base(copy.deepcopy(base), copy.deepcopy(tower),
                                   positions=list(recipe.insert_after), image_token_id=image_id)
    for stage, (name, schedule) in _budgets(recipe).items():
        if stage == 2:  # stage 1 (projector only) is the same job for both families
            schedule = replace(schedule, lr=recipe.iaa_stage2_lr)
        losses = train_iaa_stage(iaa, tokenizer, pretrain.image_processor(), examples[name],
                                 stage=stage, config=stage_config(schedule, seed))
        manifest.losses[f"iaa_{name}"] = pretrain.loss_curve(losses)
    save_iaa(copy.deepcopy(iaa).to(torch.float16), out_dir / "iaa", official=True,
             tokenizer=tokenizer, image_processor=pretrain.image_processor())
    return iaa


def _budgets(recipe: Any) -> dict[int, tuple[str, pretrain.Schedule]]:
    return {1: ("stage1", recipe.stage1), 2: ("stage2", recipe.stage2)}
