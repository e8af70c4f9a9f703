"""The mini-world's two multimodal models, from one base and one vision tower, trained alike.

LLaVA-style (llava-hf ``LlavaForConditionalGeneration``): stage 1 trains the projector on
captions; stage 2 trains projector + the whole LLM on Q/A (the forgetting recipe). IAA: stage 1
trains its projector on the same captions; stage 2 trains projector, insertion layers and the
MM embedding/norm/head with the base frozen. Same examples, same order (same seed), same steps
and batch size. Optional text replay mixes corpus rows into the LLaVA-style stage 2.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iaa_eval.miniworld import mmdata, pretrain
from iaa_eval.models.templates import build_prompt, training_text

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """Tokenised training turns: per example its image row, prompt ids (one ``<image>``) and target ids."""

    image_rows: torch.Tensor
    prompts: list[list[int]]
    targets: list[list[int]]


def encode_examples(tokenizer: Any, examples: Sequence[mmdata.MMExample], image_index: dict[Path, int]) -> Encoded:
    """Prompts through the shared conversation template (as the evaluation builds them)."""
    prompts, targets, cache = [], [], {}
    for ex in examples:
        if ex.prompt not in cache:
            cache[ex.prompt] = tokenizer(build_prompt(tokenizer, ex.prompt, "<image>"))["input_ids"]
        prompt, target = training_text("", ex.answer, tokenizer.eos_token)
        prompts.append(cache[ex.prompt])
        targets.append(tokenizer(target, add_special_tokens=False)["input_ids"])
    return Encoded(torch.tensor([image_index[ex.image] for ex in examples]), prompts, targets)


def collate(enc: Encoded, idx: torch.Tensor, image_id: int, expand: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids/mask/labels; the one ``<image>`` id becomes ``expand`` copies (llava-hf)
    or stays one id that the caller swaps for the IAA placeholder (``expand == 1``)."""
    rows = []
    for i in idx.tolist():
        prompt = [t for tok in enc.prompts[i] for t in ([tok] * expand if tok == image_id else [tok])]
        rows.append((prompt + enc.targets[i], [IGNORE] * len(prompt) + enc.targets[i]))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, : len(row_ids)] = torch.tensor(row_ids)
        labels[r, : len(row_labels)] = torch.tensor(row_labels)
        mask[r, : len(row_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_llava(base: Any, tower: Any, tokenizer: Any, seed: int) -> Any:
    """A llava-hf model holding copies of ``base`` and ``tower`` and a fresh 2-layer GELU projector."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=tower.config, text_config=base.config, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
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

    from iaa_eval.miniworld.build import image_processor

    return LlavaProcessor(
        image_processor=image_processor(), tokenizer=tokenizer, patch_size=tower.config.patch_size,
        vision_feature_select_strategy="default", image_token="<image>", num_additional_image_tokens=1,
    )


def train_stage(
    forward: Any, params: list[torch.nn.Parameter], enc: Encoded, schedule: pretrain.Schedule, seed: int, desc: str,
    replay: tuple[Any, torch.Tensor, float] | None = None,
) -> list[float]:
    """One stage: ``forward(idx) -> loss`` over the encoded examples; ``replay = (lm_loss, rows,
    ratio)`` swaps that share of each batch for corpus rows (text-only LM loss)."""
    n_text = round(replay[2] * schedule.batch_size) if replay else 0
    gen = torch.Generator().manual_seed(seed + 1)

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        loss = forward(idx[: len(idx) - n_text])
        if n_text:
            lm_loss, rows, _ = replay
            text_idx = torch.randint(len(rows), (n_text,), generator=gen)
            loss = loss * (1 - n_text / len(idx)) + lm_loss(rows[text_idx]) * (n_text / len(idx))
        return loss

    return pretrain.run_steps(params, loss_fn, len(enc.prompts), schedule, seed, desc)


def train_llava(model: Any, stages: dict[str, Encoded], pixels: torch.Tensor, recipe: Any, seed: int,
                replay_rows: torch.Tensor | None, pad_id: int) -> dict[str, list[float]]:
    """Stage 1 projector only; stage 2 projector + LLM (vision tower frozen throughout)."""
    config = model.config
    expand = config.image_seq_length
    device = model.device

    def forward(enc: Encoded) -> Any:
        def run(idx: torch.Tensor) -> torch.Tensor:
            batch = {k: v.to(device) for k, v in collate(enc, idx, config.image_token_id, expand, pad_id).items()}
            return model(**batch, pixel_values=pixels[enc.image_rows[idx]].to(device)).loss
        return run

    def lm_loss(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.to(device)
        return model(input_ids=rows, labels=rows).loss

    model.requires_grad_(False)
    model.train()
    projector = list(model.model.multi_modal_projector.parameters())
    for p in projector:
        p.requires_grad_(True)
    losses = {"stage1": train_stage(forward(stages["stage1"]), projector, stages["stage1"], recipe.stage1, seed,
                                    "llava stage 1")}
    llm = list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
    for p in llm:
        p.requires_grad_(True)
    replay = (lm_loss, replay_rows, recipe.replay_ratio) if recipe.replay_ratio > 0 and replay_rows is not None else None
    losses["stage2"] = train_stage(forward(stages["stage2"]), projector + llm, stages["stage2"], recipe.stage2, seed,
                                   "llava stage 2", replay)
    model.requires_grad_(False)
    model.eval()
    return losses


def train_iaa(model: Any, stages: dict[str, Encoded], pixels: torch.Tensor, recipe: Any, seed: int,
              image_id: int, pad_id: int) -> dict[str, list[float]]:
    """Stage 1 projector only; stage 2 the IAA trainable groups (base LM and tower stay frozen)."""
    from iaa_eval.models.iaa.configuration import IMAGE_PLACEHOLDER_ID

    device = model.device

    def forward(enc: Encoded) -> Any:
        def run(idx: torch.Tensor) -> torch.Tensor:
            batch = collate(enc, idx, image_id, 1, pad_id)
            batch["input_ids"][batch["input_ids"] == image_id] = IMAGE_PLACEHOLDER_ID
            batch = {k: v.to(device) for k, v in batch.items()}
            return model(**batch, pixel_values=pixels[enc.image_rows[idx]].to(device), workflow="mm").loss
        return run

    groups = model.trainable_groups("mm")
    model.requires_grad_(False)
    model.train()
    for p in groups["projector"]:
        p.requires_grad_(True)
    losses = {"stage1": train_stage(forward(stages["stage1"]), groups["projector"], stages["stage1"], recipe.stage1,
                                    seed, "iaa stage 1")}
    params = [p for group in groups.values() for p in group]
    for p in params:
        p.requires_grad_(True)
    losses["stage2"] = train_stage(forward(stages["stage2"]), params, stages["stage2"], recipe.stage2, seed,
                                   "iaa stage 2")
    model.requires_grad_(False)
    model.eval()
    return losses


def build_multimodal(out_dir: Path, base: Any, tokenizer: Any, tower: Any, recipe: Any, seed: int,
                     manifest: Any) -> dict[str, Any]:
    """Train and save ``llava/`` and ``iaa/`` from ``base`` + ``tower``; returns the two models."""
    from iaa_eval.miniworld import world
    from iaa_eval.miniworld.build import image_processor, pixel_table, save_fp16

    records = mmdata.load_split("train")
    pixels = pixel_table(image_processor(), records)  # (N, 3, 64, 64), frozen tower: computed once
    index = {r.path: i for i, r in enumerate(records)}
    examples = mmdata.training_examples(seed)
    stages = {name: encode_examples(tokenizer, exs, index) for name, exs in examples.items()}
    manifest.data["mm_train_examples"] = {name: len(enc.prompts) for name, enc in stages.items()}
    image_id = tokenizer.convert_tokens_to_ids("<image>")

    replay_rows = pretrain.pack(tokenizer, world.corpus(world.make_world(seed), recipe.corpus_repeats), recipe.seq_len)
    llava = make_llava(base, tower, tokenizer, seed)
    losses = train_llava(llava, stages, pixels, recipe, seed, replay_rows, tokenizer.pad_token_id)
    manifest.losses.update({f"llava_{k}": pretrain.loss_curve(v) for k, v in losses.items()})
    save_fp16(llava, out_dir / "llava")
    llava_processor(tokenizer, tower).save_pretrained(out_dir / "llava")

    from iaa_eval.models.iaa.modeling import IAAForCausalLM

    iaa = IAAForCausalLM.from_base(base, tower, positions=list(recipe.insert_after), image_token_id=image_id)
    losses = train_iaa(iaa, stages, pixels, recipe, seed, image_id, tokenizer.pad_token_id)
    manifest.losses.update({f"iaa_{k}": pretrain.loss_curve(v) for k, v in losses.items()})
    copy.deepcopy(iaa).to(torch.float16).save_pretrained(out_dir / "iaa", official=True)
    tokenizer.save_pretrained(out_dir / "iaa")
    image_processor().save_pretrained(out_dir / "iaa")
    return {"llava": llava, "iaa": iaa}

